"""Box-conditioned masks: the y-branch's prediction turned into one mask per input box.

For a box of class c, its mask is the pixels inside it (``structures.PIXEL_CENTRES``, the rule of the
training targets) whose argmax over {background, the classes of the boxes covering the pixel} is c. The
argmax is restricted to the classes that are actually boxed there, so a confusion with an absent class
cannot erase an object. Where several boxes of the winning class cover a pixel, the smallest box owns it
(smaller objects are usually in front). Used by the demo, the instance IoU evaluator and the pseudo-mask
export.

``rule="foreground"`` (MODEL.BOX2SEG.TEST.BOX_RULE) is a variant for many classes and little data: a pixel
inside boxes is foreground when the total foreground probability 1 - y(bg) beats y(bg), and then goes to
the best-scoring covering class as above. With 80 COCO classes and 160 images the y-branch spreads a
pixel's foreground mass over look-alike classes, so y(c) alone rarely beats y(bg) (bench/RESULTS.md).
"""
import torch

from ..structures import PIXEL_CENTRES, annotation_boxes, box_areas, box_pixel_masks

__all__ = ["box_conditioned_masks", "annotation_box_masks", "fuse_grabcut", "never_empty_masks", "smallest_box_owner", "BOX_RULES"]

BOX_RULES = ("class", "foreground")


def box_conditioned_masks(scores, boxes, classes, rule="class"):
    """Per-box masks from class scores.

    Args:
        scores: (L+1, H, W) scores or probabilities, channel 0 = background, channel c+1 = class c
            (probabilities for ``rule="foreground"``).
        boxes: (N, 4) xyxy boxes in the same pixel frame as ``scores``.
        classes: (N,) contiguous class ids (0..L-1).
        rule: "class" (the box's class against background) or "foreground" (all foreground against
            background, then the best covering class); see the module docstring.
    Returns:
        (N, H, W) bool masks; a pixel belongs to at most one box.
    """
    if rule not in BOX_RULES:
        raise ValueError(f"box_conditioned_masks: rule must be one of {BOX_RULES}, got {rule!r}")
    num_boxes = boxes.shape[0]
    height, width = scores.shape[-2:]
    if num_boxes == 0:
        return torch.zeros((0, height, width), dtype=torch.bool, device=scores.device)
    boxes = boxes.to(scores.device, torch.float32)
    classes = classes.to(scores.device).long()
    inside = box_pixel_masks(boxes, height, width, PIXEL_CENTRES)  # (N, H, W): the targets' rule

    present, box_to_present = torch.unique(classes, return_inverse=True)  # K classes, compact index per box
    # covered[k]: pixel inside at least one box of present class k. One-hot (N, K) reduction over boxes.
    one_hot = torch.nn.functional.one_hot(box_to_present, present.numel()).to(torch.float32)
    covered = torch.einsum("nk,nhw->khw", one_hot, inside.to(torch.float32)) > 0

    class_scores = scores[present + 1].float().masked_fill(~covered, float("-inf"))  # (K, H, W)
    best_score, best_class = class_scores.max(dim=0)
    if rule == "class":
        foreground = best_score > scores[0].float()  # ties go to background
    else:
        foreground = (scores[1:].float().sum(0) > scores[0].float()) & covered.any(0)

    # Each box claims the pixels labelled with its class; among claimants the smallest box wins.
    claims = inside & foreground[None] & (best_class[None] == box_to_present[:, None, None])
    owner, _ = smallest_box_owner(claims, boxes)
    return claims & (torch.arange(num_boxes, device=scores.device)[:, None, None] == owner[None])


def smallest_box_owner(claims, boxes):
    """``(owner (H, W) long, claimed (H, W) bool)``: at each pixel the index of the smallest box among those
    claiming it (``claims`` (N, H, W) bool), the rule wherever boxes overlap (smaller objects are usually in
    front). Ties in area go to the lower index, so ownership is deterministic; ``owner`` is meaningless where
    ``claimed`` is False."""
    num_boxes = boxes.shape[0]
    rank = torch.empty(num_boxes, dtype=torch.long, device=claims.device)
    rank[torch.sort(box_areas(boxes), stable=True).indices] = torch.arange(num_boxes, device=claims.device)
    key = torch.where(claims, rank[:, None, None], torch.full_like(rank[:, None, None], num_boxes))
    best, owner = key.min(dim=0)
    return owner, best < num_boxes


def annotation_box_masks(scores, annotations, rule="class"):
    """(N, H, W) bool masks for a dataset record's N annotations (``bbox`` in ``bbox_mode``, contiguous
    ``category_id``), as the model's own box masks: crowd annotations get empty masks and take no part in
    the rule."""
    boxes, classes, crowd = (torch.from_numpy(v) for v in annotation_boxes(annotations))
    boxes = boxes.to(torch.float32)
    masks = torch.zeros((len(annotations),) + tuple(scores.shape[-2:]), dtype=torch.bool)
    masks[~crowd] = box_conditioned_masks(scores, boxes[~crowd], classes[~crowd], rule).cpu()
    return masks


def fuse_grabcut(probs, grabcut_masks, weight):
    """(N, H, W) float probabilities ``(1 - weight) p + weight g``: the model's pasted foreground probabilities
    (float in [0, 1] or uint8 x 255) averaged with each box's own GrabCut mask (bool). On unseen images the
    two disagree where the model is unsure; the average lets GrabCut's colour model decide there."""
    p = probs.float() / 255.0 if probs.dtype == torch.uint8 else probs.float()
    if grabcut_masks.shape != p.shape:
        raise ValueError(f"{tuple(grabcut_masks.shape)} GrabCut masks for {tuple(p.shape)} box probabilities")
    return (1 - weight) * p + weight * grabcut_masks.to(p.dtype)


def never_empty_masks(probs, inside, threshold, fallback_fill):
    """Per-box masks that are never empty: each box's pixels (``inside``) whose probability exceeds
    ``threshold``; a box left empty gets its ``fallback_fill`` share of most probable pixels (at least one),
    since every box frames an object. Vectorised over boxes.

    Args:
        probs: (N, H, W) probabilities, float in [0, 1] or uint8 x 255 (``structures.paste_chip_probs``).
        inside: (N, H, W) bool, the pixels of each box.
    Returns:
        masks (N, H, W) bool, scores (N,) float32 (mean probability over the mask), filled (N,) bool (the
        boxes the fallback filled).
    """
    p = probs.float() / 255.0 if probs.dtype == torch.uint8 else probs.float()
    p = torch.where(inside, p, torch.full_like(p, -1.0))
    masks = p > threshold
    area = inside.flatten(1).sum(1)
    filled = ~masks.flatten(1).any(1) & (area > 0)
    if bool(filled.any()):
        pf = p[filled].flatten(1)
        k = (fallback_fill * area[filled].double()).ceil().long().clamp(min=1)
        kth = pf.sort(dim=1, descending=True).values.gather(1, (k - 1)[:, None])
        masks[filled] = (p[filled] >= kth[:, :, None]) & inside[filled]
    count = masks.flatten(1).sum(1)
    scores = torch.where(masks, p, torch.zeros_like(p)).flatten(1).sum(1) / count.clamp(min=1)
    return masks, scores.float(), filled
