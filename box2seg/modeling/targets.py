"""Box-derived training targets of Box2Seg (method section "Inputs per training image").

Computed on the model's device, per training sample *after* augmentation, from the sample's boxes and
its class map M (GrabCut's, or the true mask of an image with pixel labels: ``ImageTargets.supervision``):

* ``B(i, c)`` for c >= 1 ("box masks"): 1 where pixel i lies inside at least one non-crowd box of class c;
* ``B(i, 0)`` ("sure background"): 1 where pixel i lies outside every box, crowd boxes included;
* ``eta_c = sum_i [M(i) = c] / sum_i B(i, c)`` (filling rates).

Ignore pixels of M (padding, crowd regions, unknown) are cleared from every mask and excluded from every
sum. Only the classes present in a sample get a mask (compact class index: the present classes, sorted,
map to 0..K-1), so nothing here ever allocates an L x H x W tensor; L = 601 (Open Images) is fine.

Class conventions (team contract): ``classes`` are detectron2 contiguous foreground ids 0..L-1
(``gt_classes``); the semantic label / softmax channel of class c is c + 1; label 0 is background.

Rasterisation: the pixel-centre rule (``structures.PIXEL_CENTRES``): pixel (x, y) belongs to box
[x0, y0, x1, y1] (XYXY_ABS) iff its centre (x + 0.5, y + 0.5) lies in [x0, x1] x [y0, y1]. Box masks and
sure background are unions per (image, class) and per image, built by ``structures.box_union_mask``'s
difference array: memory O(groups x H x W) whatever the number of boxes, no Python loop over boxes or pixels.
"""
from dataclasses import dataclass
from typing import List, Optional, Sequence, Union

import torch

from ..structures import PIXEL_CENTRES, box_union_mask

__all__ = ["ImageTargets", "SUPERVISIONS", "unlabelled_classes", "build_targets"]

# What M is and how the loss uses it (data/pixel_labels.py): "boxes" = GrabCut's map, every enabled term;
# "mask" = the true mask, every enabled term; "mask_ce" = the true mask, only its cross-entropy (L_GC).
SUPERVISIONS = ("boxes", "mask", "mask_ce")


def unlabelled_classes(
    num_classes: int,
    verified_classes: Union[Sequence[int], torch.Tensor],
    box_classes: Union[Sequence[int], torch.Tensor] = (),
    device=None,
) -> torch.Tensor:
    """The set U of a non-exhaustively labelled image (Open Images): foreground classes neither verified
    by an image-level label nor carrying a box, so a sure-background pixel may still belong to them.
    (|U|,) int64 class ids 0..L-1 for :func:`box2seg.modeling.losses.background_loss`."""
    known = torch.zeros(num_classes, dtype=torch.bool, device=device)
    for name, ids in (("verified_classes", verified_classes), ("box classes", box_classes)):
        ids = torch.as_tensor(ids, dtype=torch.long, device=device).reshape(-1)
        if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= num_classes):
            raise ValueError(f"{name} hold ids outside 0..{num_classes - 1}: {ids.tolist()}")
        known[ids] = True
    return (~known).nonzero().squeeze(1)


@dataclass
class ImageTargets:
    """Targets of one training sample, all on the model's device, spatial size (H, W).

    classes:          (K,) int64, present foreground class ids 0..L-1 (sorted); softmax channel = id + 1.
    box_masks:        (K, H, W) bool, B(i, c) for those classes, ignore pixels cleared.
    box_area:         (K,) int64, sum_i B(i, c); a class with 0 is skipped by every loss.
    filling_rates:    (K,) float32, eta_c (0 where box_area is 0).
    sure_background:  (H, W) bool, B(i, 0), ignore pixels cleared.
    valid:            (H, W) bool, non-ignore pixels.
    labels:           (H, W) int64, GrabCut class map M (ignore pixels hold ``ignore_label``).
    unlabelled:       None (exhaustive box labels) or (|U|,) int64 class ids for the Open Images
                      background variant.
    filling_rate_included: None (all) or (K,) bool, classes the filling-rate hinge reads (chip mode leaves
                      out a class with a box the chip edge cuts).
    supervision:      one of ``SUPERVISIONS``: "boxes" (M from GrabCut), "mask" or "mask_ce" (M the true mask;
                      "mask_ce" gets only the cross-entropy on it).
    """

    classes: torch.Tensor
    box_masks: torch.Tensor
    box_area: torch.Tensor
    filling_rates: torch.Tensor
    sure_background: torch.Tensor
    valid: torch.Tensor
    labels: torch.Tensor
    unlabelled: Optional[torch.Tensor] = None
    filling_rate_included: Optional[torch.Tensor] = None
    supervision: str = "boxes"

    @property
    def inside_boxes(self) -> torch.Tensor:
        """(H, W) bool: non-ignore pixels inside at least one box (crowd boxes included)."""
        return self.valid & ~self.sure_background

    @property
    def image_size(self):
        return tuple(self.valid.shape)


def _as_tensor_boxes(b) -> torch.Tensor:
    return getattr(b, "tensor", b)  # accept detectron2 Boxes as well as plain tensors


def build_targets(
    gt_boxes: Sequence,
    gt_classes: Sequence[torch.Tensor],
    gt_is_crowd: Optional[Sequence[Optional[torch.Tensor]]],
    grabcut_labels: Union[torch.Tensor, Sequence[torch.Tensor]],
    num_classes: int,
    ignore_label: int,
    unlabelled: Optional[Sequence[Optional[torch.Tensor]]] = None,
    gt_cut: Optional[Sequence[Optional[torch.Tensor]]] = None,
    supervision: Optional[Sequence[str]] = None,
) -> List[ImageTargets]:
    """Targets for a batch, vectorised over images, boxes and pixels.

    Args:
        gt_boxes: per image an (N_b, 4) float XYXY_ABS tensor or a detectron2 ``Boxes``
            (``instances.gt_boxes``), in the augmented image's pixel frame.
        gt_classes: per image (N_b,) int class ids 0..L-1 (``instances.gt_classes``).
        gt_is_crowd: None, or per image (N_b,) bool/int or None (``instances.gt_is_crowd``).
        grabcut_labels: a padded (Bsz, H, W) int tensor (padding = ``ignore_label``; targets keep that
            size, matching a padded logits batch), or a list of (H_b, W_b) maps (targets get each image's
            own size). Its device is the device of every output.
        num_classes: L (number of foreground classes).
        ignore_label: ignore value of the GrabCut maps (255 or 65535).
        unlabelled: optional per image None or the class ids U of the Open Images background variant
            (see :func:`unlabelled_classes`).
        gt_cut: optional per image (N_b,) bool or None: boxes cut by a chip edge; a class with one is left
            out of the filling-rate hinge (``ImageTargets.filling_rate_included``).
        supervision: optional per image one of ``SUPERVISIONS`` (the mapper's "supervision"; default "boxes").
    Returns:
        list of Bsz :class:`ImageTargets`. Masks of all images are built in one (sum_b K_b, H, W) pass;
        each image's fields are views into it.
    """
    bsz = len(gt_boxes)
    if len(gt_classes) != bsz or (gt_is_crowd is not None and len(gt_is_crowd) != bsz):
        raise ValueError(
            f"build_targets: {bsz} gt_boxes entries but {len(gt_classes)} gt_classes"
            + ("" if gt_is_crowd is None else f" and {len(gt_is_crowd)} gt_is_crowd")
        )
    supervision = ["boxes"] * bsz if supervision is None else list(supervision)
    if len(supervision) != bsz or any(s not in SUPERVISIONS for s in supervision):
        raise ValueError(f"build_targets: supervision must be {bsz} values among {SUPERVISIONS}, got {supervision}")
    if isinstance(grabcut_labels, torch.Tensor):
        if grabcut_labels.dim() != 3 or grabcut_labels.shape[0] != bsz:
            raise ValueError(
                f"build_targets: grabcut_labels must be (Bsz={bsz}, H, W), got {tuple(grabcut_labels.shape)}"
            )
        labels = grabcut_labels.long()
        sizes = None
    else:
        if len(grabcut_labels) != bsz:
            raise ValueError(f"build_targets: {bsz} images but {len(grabcut_labels)} grabcut_labels")
        sizes = [tuple(m.shape) for m in grabcut_labels]
        for b, s in enumerate(sizes):
            if len(s) != 2:
                raise ValueError(f"build_targets: grabcut_labels of image {b} must be (H, W), got {s}")
        hmax = max((s[0] for s in sizes), default=0)
        wmax = max((s[1] for s in sizes), default=0)
        device = grabcut_labels[0].device if bsz else torch.device("cpu")
        labels = torch.full((bsz, hmax, wmax), ignore_label, dtype=torch.long, device=device)
        for b, m in enumerate(grabcut_labels):
            labels[b, : m.shape[0], : m.shape[1]] = m.to(device)
    device = labels.device
    _, height, width = labels.shape
    valid = labels != ignore_label
    bad = valid & ((labels < 0) | (labels > num_classes))
    if bool(bad.any()):
        b = int(bad.flatten(1).any(1).nonzero()[0, 0])
        v = int(labels[b][bad[b]][0])
        raise ValueError(
            f"build_targets: grabcut_labels of image {b} hold {v}, outside 0..{num_classes} "
            f"(background, class + 1) and not the ignore label {ignore_label}"
        )

    # Concatenate the boxes of all images, remembering their image; validate once for the whole batch.
    boxes_l, cls_l, crowd_l, img_l = [], [], [], []
    for b in range(bsz):
        bx = _as_tensor_boxes(gt_boxes[b]).to(device=device, dtype=torch.float64)
        cl = gt_classes[b].to(device).long().reshape(-1)
        cr = None if gt_is_crowd is None else gt_is_crowd[b]
        cr = torch.zeros_like(cl, dtype=torch.bool) if cr is None else cr.to(device).bool().reshape(-1)
        if bx.dim() != 2 or bx.shape[1] != 4 or cl.numel() != bx.shape[0] or cr.numel() != bx.shape[0]:
            raise ValueError(
                f"build_targets: image {b} has boxes of shape {tuple(bx.shape)} (expected (N, 4)), "
                f"{cl.numel()} classes, {cr.numel()} crowd flags"
            )
        boxes_l.append(bx)
        cls_l.append(cl)
        crowd_l.append(cr)
        img_l.append(torch.full_like(cl, b))
    boxes = torch.cat(boxes_l) if bsz else torch.zeros(0, 4, dtype=torch.float64, device=device)
    cls = torch.cat(cls_l) if bsz else torch.zeros(0, dtype=torch.long, device=device)
    crowd = torch.cat(crowd_l) if bsz else torch.zeros(0, dtype=torch.bool, device=device)
    img = torch.cat(img_l) if bsz else torch.zeros(0, dtype=torch.long, device=device)
    bad_box = ~torch.isfinite(boxes).all(1)
    bad_cls = (cls < 0) | (cls >= num_classes)
    if bool((bad_box | bad_cls).any()):
        n = int((bad_box | bad_cls).nonzero()[0, 0])
        b = int(img[n])
        k = n - int((img < b).sum())
        if bool(bad_box[n]):
            raise ValueError(f"build_targets: image {b} box {k} has a non-finite coordinate: {boxes[n].tolist()}")
        raise ValueError(f"build_targets: image {b} box {k} has class {int(cls[n])}, outside 0..{num_classes - 1}")

    # Compact (image, class) groups: key = image * L + class over non-crowd boxes, sorted by image then class.
    nc = ~crowd
    key = img[nc] * num_classes + cls[nc]
    ukeys = torch.unique(key)
    groups = ukeys.numel()
    grp_img = ukeys // num_classes
    grp_cls = ukeys % num_classes
    box_grp = torch.searchsorted(ukeys, key)
    masks = box_union_mask(boxes[nc], height, width, PIXEL_CENTRES, box_grp, groups)
    masks &= valid[grp_img]
    area = masks.flatten(1).sum(1)
    sure_bg = ~box_union_mask(boxes, height, width, PIXEL_CENTRES, img, bsz) & valid

    # GrabCut pixel counts per group: pixel key = image * L + (label - 1) for foreground pixels.
    fg = valid & (labels >= 1)
    pix_img = torch.arange(bsz, device=device).view(bsz, 1, 1).expand_as(labels)
    pix_key = pix_img[fg] * num_classes + labels[fg] - 1
    if groups:
        pos = torch.searchsorted(ukeys, pix_key).clamp(max=groups - 1)
        hit = ukeys[pos] == pix_key
        counts = torch.bincount(pos[hit], minlength=groups)
    else:
        counts = torch.zeros(0, dtype=torch.long, device=device)
    eta = torch.where(area > 0, counts.double() / area.clamp(min=1).double(), 0.0).float()
    included = None
    if gt_cut is not None:
        cut = torch.cat([torch.zeros(len(c), dtype=torch.bool, device=device) if g is None
                         else g.to(device).bool().reshape(-1) for g, c in zip(gt_cut, cls_l)])
        cut_per_group = torch.bincount(box_grp, weights=cut[nc].double(), minlength=groups)
        included = cut_per_group == 0

    per_image = torch.bincount(grp_img, minlength=bsz).tolist() if bsz else []
    out: List[ImageTargets] = []
    start = 0
    for b in range(bsz):
        sl = slice(start, start + per_image[b])
        start += per_image[b]
        h, w = (height, width) if sizes is None else sizes[b]
        u = None
        if unlabelled is not None and unlabelled[b] is not None:
            u = torch.as_tensor(unlabelled[b], dtype=torch.long, device=device).reshape(-1)
            if u.numel() and (int(u.min()) < 0 or int(u.max()) >= num_classes):
                raise ValueError(f"build_targets: unlabelled classes of image {b} outside 0..{num_classes - 1}")
        out.append(
            ImageTargets(
                classes=grp_cls[sl],
                box_masks=masks[sl, :h, :w],
                box_area=area[sl],
                filling_rates=eta[sl],
                sure_background=sure_bg[b, :h, :w],
                valid=valid[b, :h, :w],
                labels=labels[b, :h, :w],
                unlabelled=u,
                filling_rate_included=None if included is None else included[sl],
                supervision=supervision[b],
            )
        )
    return out
