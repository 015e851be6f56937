"""Which pixels a box covers, and the boxes of a dataset record: the one home of box-to-pixel geometry.

Boxes are (N, 4) XYXY_ABS in pixel units; pixel (x, y) is the unit square [x, x + 1) x [y, y + 1) with
centre (x + 0.5, y + 0.5). Two rules decide which pixels a box covers, and each is used where it is on
purpose (a rule is passed by name, so every call site says which one it means):

* :data:`PIXEL_CENTRES`: the pixels whose centre lies in the closed box,
  ``ceil(x0 - 0.5) <= x <= floor(x1 - 0.5)``.
* :data:`PIXELS_TOUCHED`: every pixel the box overlaps, ``floor(x0) <= x < ceil(x1)``.

Every function takes a numpy array or a torch tensor and returns the same kind (a tensor on the boxes'
device). Edges are computed in float64 from the given coordinates, so they are exact for any float32 or
float64 box, and a coordinate on a pixel centre or edge falls on the documented side on every device.
A box with a NaN coordinate covers nothing; an inverted box (x1 < x0) covers nothing.
"""
import numpy as np
import torch

__all__ = [
    "PIXEL_CENTRES",
    "PIXELS_TOUCHED",
    "PIXEL_RULES",
    "pixel_extents",
    "box_pixel_masks",
    "box_union_mask",
    "ellipse_masks",
    "box_areas",
    "record_boxes",
    "annotation_boxes",
]

PIXEL_CENTRES = "centres"
"""Pixel centre in the closed box. Used by everything the model learns from or predicts inside a box
(box masks B(i, c) and sure background in ``modeling.targets``, ``box_conditioned`` masks, the filled-box
baseline): a box edge on a pixel boundary adds no pixel, so a box's mask area is its area to within half a
pixel per side, and the targets, the predictions and the baseline they are compared with agree."""

PIXELS_TOUCHED = "touched"
"""Every pixel the box overlaps. Used wherever a box bounds what its object may occupy (GrabCut's
rectangle and crop in ``data.grabcut``, crowd / dropped-box ignore regions in ``data.grabcut`` and
``data.mapper``, the box fallback of ``data.semseg_gt``, the ellipse fallback's frame): a partly covered
edge pixel may hold part of the object, so it must not become sure background, and a box of positive
area always covers at least one pixel."""

PIXEL_RULES = (PIXEL_CENTRES, PIXELS_TOUCHED)


def _check_rule(rule):
    if rule not in PIXEL_RULES:
        raise ValueError(f"pixel rule must be one of {PIXEL_RULES} (PIXEL_CENTRES, PIXELS_TOUCHED), got {rule!r}")


def pixel_extents(boxes, height, width, rule):
    """Integer pixel extents ``(x0, y0, x1, y1)``, end exclusive, of the pixels each box covers under
    ``rule``, clipped to the ``height`` x ``width`` image; an empty box has ``x1 == x0`` or ``y1 == y0``.

    Args:
        boxes: (N, 4) XYXY numpy array (or nested list) or torch tensor.
    Returns:
        (N, 4) int64 array, or a long tensor on the boxes' device.
    """
    _check_rule(rule)
    if isinstance(boxes, torch.Tensor):
        b = boxes.to(torch.float64).reshape(-1, 4)
        lo, hi = (torch.ceil(b[:, :2] - 0.5), torch.floor(b[:, 2:] - 0.5) + 1) if rule == PIXEL_CENTRES else (
            torch.floor(b[:, :2]), torch.ceil(b[:, 2:]))
        size = torch.tensor([width, height], dtype=torch.float64, device=b.device)
        lo = torch.minimum(torch.maximum(lo, torch.zeros_like(size)), size)
        hi = torch.minimum(torch.maximum(hi, lo), size)
        extents = torch.cat([lo, hi], 1)
        return torch.where(torch.isnan(b).any(1, keepdim=True), 0.0, extents).long()
    b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    lo, hi = (np.ceil(b[:, :2] - 0.5), np.floor(b[:, 2:] - 0.5) + 1) if rule == PIXEL_CENTRES else (
        np.floor(b[:, :2]), np.ceil(b[:, 2:]))
    size = np.array([width, height], dtype=np.float64)
    lo = np.minimum(np.maximum(lo, 0.0), size)
    hi = np.minimum(np.maximum(hi, lo), size)
    extents = np.concatenate([lo, hi], 1)
    return np.where(np.isnan(b).any(1, keepdims=True), 0.0, extents).astype(np.int64)


def box_pixel_masks(boxes, height, width, rule):
    """(N, H, W) bool: the pixels each box covers under ``rule``; one broadcast, no loop over boxes."""
    e = pixel_extents(boxes, height, width, rule)
    if isinstance(e, torch.Tensor):
        xs = torch.arange(width, device=e.device)[None]
        ys = torch.arange(height, device=e.device)[None]
    else:
        xs, ys = np.arange(width)[None], np.arange(height)[None]
    in_x = (xs >= e[:, 0:1]) & (xs < e[:, 2:3])  # (N, W)
    in_y = (ys >= e[:, 1:2]) & (ys < e[:, 3:4])  # (N, H)
    return in_y[:, :, None] & in_x[:, None, :]


def box_union_mask(boxes, height, width, rule, groups=None, num_groups=None):
    """Union of the pixels the boxes cover under ``rule``: (H, W) bool, or (G, H, W) with ``groups``.

    Every box adds +1 / -1 at the four corners of its pixel extent in a difference array, and two
    cumulative sums count the boxes covering each pixel: memory O(G x H x W) whatever the number of boxes,
    no loop over boxes, integer arithmetic (exact and deterministic on every device).

    Args:
        groups: optional (N,) int group index of each box, 0..G-1 (e.g. image * L + class).
        num_groups: G; default ``groups.max() + 1`` (0 without boxes).
    """
    e = pixel_extents(boxes, height, width, rule)
    torch_in = isinstance(e, torch.Tensor)
    if groups is None:
        g, count = None, 1
    else:
        g = groups.to(device=e.device, dtype=torch.long) if torch_in else np.asarray(groups, np.int64)
        g = g.reshape(-1)
        count = num_groups if num_groups is not None else (int(g.max()) + 1 if len(g) else 0)
    if g is None:
        g = torch.zeros(len(e), dtype=torch.long, device=e.device) if torch_in else np.zeros(len(e), np.int64)
    x0, y0, x1, y1 = e.unbind(1) if torch_in else e.T
    if torch_in:
        diff = torch.zeros(count, height + 1, width + 1, dtype=torch.int32, device=e.device)
        if len(e) and count:
            one = ((x1 > x0) & (y1 > y0)).to(torch.int32)  # empty boxes contribute nothing
            index = (g.repeat(4), torch.cat([y0, y0, y1, y1]), torch.cat([x0, x1, x0, x1]))
            diff.index_put_(index, torch.cat([one, -one, -one, one]), accumulate=True)
        diff.cumsum_(1)  # in place: stays int32
        diff.cumsum_(2)
    else:
        diff = np.zeros((count, height + 1, width + 1), np.int32)
        if len(e) and count:
            one = ((x1 > x0) & (y1 > y0)).astype(np.int32)
            index = (np.tile(g, 4), np.concatenate([y0, y0, y1, y1]), np.concatenate([x0, x1, x0, x1]))
            np.add.at(diff, index, np.concatenate([one, -one, -one, one]))
        np.cumsum(diff, 1, out=diff)
        np.cumsum(diff, 2, out=diff)
    covered = diff[:, :height, :width] > 0
    return covered[0] if groups is None else covered


def ellipse_masks(boxes, height, width):
    """(N, H, W) bool: pixel centres inside the ellipse inscribed in each box (the filled-ellipse baseline).

    (GrabCut's own fallback ellipse is cv2-drawn over the box's touched extent: ``data.grabcut.ellipse_mask``.)
    """
    if isinstance(boxes, torch.Tensor):
        b = boxes.to(torch.float64).reshape(-1, 4)[:, :, None, None]
        ys = torch.arange(height, dtype=torch.float64, device=b.device)[None, :, None] + 0.5
        xs = torch.arange(width, dtype=torch.float64, device=b.device)[None, None, :] + 0.5
        maximum = torch.clamp
    else:
        b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)[:, :, None, None]
        ys = np.arange(height, dtype=np.float64)[None, :, None] + 0.5
        xs = np.arange(width, dtype=np.float64)[None, None, :] + 0.5
        maximum = np.maximum
    cx, cy = (b[:, 0] + b[:, 2]) / 2, (b[:, 1] + b[:, 3]) / 2
    rx, ry = maximum((b[:, 2] - b[:, 0]) / 2, 1e-6), maximum((b[:, 3] - b[:, 1]) / 2, 1e-6)
    return ((xs - cx) / rx) ** 2 + ((ys - cy) / ry) ** 2 <= 1.0


def box_areas(boxes):
    """(N,) areas of XYXY boxes, 0 for inverted sides: float64 for numpy input; a tensor keeps its dtype
    (so an ordering by area, e.g. the smaller box wins, is the one its caller computed before)."""
    if isinstance(boxes, torch.Tensor):
        b = boxes.reshape(-1, 4)
        return (b[:, 2] - b[:, 0]).clamp(min=0) * (b[:, 3] - b[:, 1]).clamp(min=0)
    b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    return np.clip(b[:, 2] - b[:, 0], 0, None) * np.clip(b[:, 3] - b[:, 1], 0, None)


_XYXY_ABS, _XYWH_ABS = 0, 1  # detectron2's BoxMode values (an IntEnum); kept numeric: no detectron2 import


def annotation_boxes(annotations, file_name=None):
    """``(boxes (N, 4) float64 XYXY_ABS, classes (N,) int64, crowd (N,) bool)`` of a list of detectron2
    annotation dicts (``bbox``, ``bbox_mode`` default XYXY_ABS, ``category_id``, ``iscrowd`` default 0).
    XYWH_ABS boxes are converted; any other mode raises, naming ``file_name`` and the annotation."""
    boxes = np.zeros((len(annotations), 4), np.float64)
    for i, ann in enumerate(annotations):
        mode = int(ann.get("bbox_mode", _XYXY_ABS))
        if mode not in (_XYXY_ABS, _XYWH_ABS):
            raise ValueError(f"{file_name}: annotation {i} has bbox_mode {mode}; box2seg needs absolute boxes "
                             "(XYXY_ABS, as every box2seg loader produces, or XYWH_ABS)")
        boxes[i] = [float(v) for v in ann["bbox"]]
        if mode == _XYWH_ABS:
            boxes[i, 2:] += boxes[i, :2]
    classes = np.array([int(a["category_id"]) for a in annotations], np.int64)
    crowd = np.array([bool(a.get("iscrowd", 0)) for a in annotations], bool)
    return boxes, classes, crowd


def record_boxes(record):
    """``(boxes (N, 4) float64 XYXY_ABS, classes (N,) int64, crowd (N,) bool)`` of a detectron2 dataset
    dict, in annotation order (see :func:`annotation_boxes`; errors name the record's file)."""
    return annotation_boxes(record.get("annotations", []), record.get("file_name"))
