"""The one scorer of per-box masks, whatever made them (filled boxes, ellipses, GrabCut, Box2Seg): ``box2seg
score``, the evaluator, the demo / benchmark table and bench/ all call it, so their figures compare.

- One box-pixel rule, :data:`BOX_PIXEL_RULE` = ``PIXEL_CENTRES``: a pixel belongs to a box when its centre lies
  in the closed box. It is the rule the model learns and predicts with (``modeling.targets``,
  ``box_conditioned``), so the filled-box and ellipse baselines are drawn exactly as the model sees boxes.
- IoU on COCO RLEs through pycocotools (``pycocotools.mask.iou``, iscrowd 0), each box's mask against the
  true mask of the same annotation; a box with an empty true mask and an empty prediction scores 1.
- Two protocols side by side:
  ``per_box`` (the headline): each box's own mask, overlaps with the other boxes allowed, for every method;
  ``painted``: all boxes of the image painted into one map in descending box area (the smaller box wins,
  ties: the later annotation wins), each box scored on the pixels it won - what a label map holds.
- Size buckets by the true mask's pixel area, as COCO: small < 32^2 <= medium < 96^2 <= large.
"""
from collections import OrderedDict

import numpy as np
import pycocotools.mask as mask_util
import torch

from ..structures import PIXEL_CENTRES, box_areas, box_pixel_masks, ellipse_masks

__all__ = ["BOX_PIXEL_RULE", "PROTOCOLS", "SIZE_BUCKETS", "BoxScorer", "baseline_masks", "mask_ious",
           "paint_winners", "painted_masks", "summarize_instance_ious"]

BOX_PIXEL_RULE = PIXEL_CENTRES
PROTOCOLS = ("per_box", "painted")
SIZE_BUCKETS = (("small", 0, 32**2), ("medium", 32**2, 96**2), ("large", 96**2, float("inf")))
BASELINES = {"box": "filled boxes", "ellipse": "filled ellipses"}


def _numpy_masks(masks):
    if isinstance(masks, torch.Tensor):
        masks = masks.cpu().numpy()
    return np.asarray(masks, dtype=bool)


def _rles(masks):
    return mask_util.encode(np.asfortranarray(masks.transpose(1, 2, 0).astype(np.uint8)))


def mask_ious(pred_masks, gt_masks):
    """(N,) IoU of each predicted mask with the true mask at the same index ((N, H, W) bool each), computed
    on RLEs by ``pycocotools.mask.iou`` (iscrowd 0); 1.0 where both masks are empty."""
    pred, gt = _numpy_masks(pred_masks), _numpy_masks(gt_masks)
    if pred.shape != gt.shape:
        raise ValueError(f"mask_ious: predicted masks {pred.shape} and true masks {gt.shape} differ in shape")
    if len(pred) == 0:
        return np.zeros(0, np.float64)
    pred_rles, gt_rles = _rles(pred), _rles(gt)
    ious = np.array([mask_util.iou([p], [g], [0])[0, 0] for p, g in zip(pred_rles, gt_rles)], np.float64)
    empty = (mask_util.area(pred_rles) == 0) & (mask_util.area(gt_rles) == 0)
    ious[empty] = 1.0
    return ious


def baseline_masks(method, boxes, height, width):
    """(N, H, W) bool masks of a box-only baseline, ``method`` "box" (filled boxes) or "ellipse" (the
    inscribed ellipse), both under :data:`BOX_PIXEL_RULE` (pixel centres)."""
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    if method == "box":
        return box_pixel_masks(boxes, height, width, BOX_PIXEL_RULE)
    if method == "ellipse":
        return ellipse_masks(boxes, height, width)
    raise ValueError(f"baseline method must be one of {tuple(BASELINES)}, got {method!r}")


def paint_winners(masks, boxes):
    """(H, W) int64: the index of the box that wins each pixel (-1: none) when the boxes' masks are painted in
    descending box area (stable: of equal areas the later box is painted last), so the smaller box wins."""
    masks = _numpy_masks(masks)
    winners = np.full(masks.shape[1:], -1, np.int64)
    if len(masks) == 0:
        return winners
    order = np.argsort(-box_areas(np.asarray(boxes, np.float64).reshape(-1, 4)), kind="stable")
    stacked = masks[order]
    covered = stacked.any(0)
    # The last mask in painting order that covers a pixel wins: argmax over the reversed stack.
    last = len(order) - 1 - np.argmax(stacked[::-1], axis=0)
    winners[covered] = order[last[covered]]
    return winners


def painted_masks(masks, boxes):
    """(N, H, W) bool: the pixels each box keeps once all boxes are painted (:func:`paint_winners`)."""
    masks = _numpy_masks(masks)
    winners = paint_winners(masks, boxes)
    return winners[None] == np.arange(len(masks))[:, None, None]


def summarize_instance_ious(ious, gt_areas):
    """{"mIoU": ..., "count": ..., "mIoU-small": ..., "count-small": ...}: means in [0, 1], NaN for an
    empty bucket."""
    ious = np.asarray(ious, dtype=np.float64)
    gt_areas = np.asarray(gt_areas, dtype=np.float64)
    result = OrderedDict(mIoU=float(ious.mean()) if ious.size else float("nan"), count=int(ious.size))
    for name, low, high in SIZE_BUCKETS:
        keep = (gt_areas >= low) & (gt_areas < high)
        result[f"mIoU-{name}"] = float(ious[keep].mean()) if keep.any() else float("nan")
        result[f"count-{name}"] = int(keep.sum())
    return result


class BoxScorer:
    """Accumulates one method's per-box masks over images, under both protocols.

    ``add(masks, boxes, gt_masks, scored)`` per image: ``masks`` (N, H, W) bool, one per box of the image
    that is painted (every non-crowd box, masked or not: they all take part in painting); ``boxes`` (N, 4)
    XYXY; ``gt_masks`` (M, H, W) the true masks of the boxes ``scored`` (M indices into the N). A method whose
    per-box masks are not available (a label map without the per-box masks it was painted from) passes its
    painted masks as ``masks`` too: both protocols then give its painted figure.
    """

    def __init__(self):
        self._ious = {p: [] for p in PROTOCOLS}
        self._areas, self._classes = [], []

    def add(self, masks, boxes, gt_masks, scored=None, classes=None, painted=None):
        masks = _numpy_masks(masks)
        boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
        if len(masks) != len(boxes):
            raise ValueError(f"BoxScorer.add: {len(masks)} masks for {len(boxes)} boxes")
        scored = np.arange(len(masks)) if scored is None else np.asarray(scored, np.int64).reshape(-1)
        gt = _numpy_masks(gt_masks).reshape(len(scored), *masks.shape[1:])
        if len(scored) == 0:
            return
        painted = painted_masks(masks, boxes) if painted is None else _numpy_masks(painted)
        self._ious["per_box"].extend(mask_ious(masks[scored], gt).tolist())
        self._ious["painted"].extend(mask_ious(painted[scored], gt).tolist())
        self._areas.extend(gt.reshape(len(gt), -1).sum(1).tolist())
        if classes is not None:
            self._classes.extend(int(c) for c in np.asarray(classes).reshape(-1)[scored])

    def merge(self, other):
        """Adds ``other``'s boxes (e.g. a worker process's images) to this scorer."""
        for p in PROTOCOLS:
            self._ious[p].extend(other._ious[p])
        self._areas.extend(other._areas)
        self._classes.extend(other._classes)
        return self

    def __len__(self):
        return len(self._areas)

    def ious(self, protocol="per_box"):
        return np.asarray(self._ious[protocol], np.float64)

    def summary(self, protocol="per_box"):
        """:func:`summarize_instance_ious` of one protocol."""
        return summarize_instance_ious(self._ious[protocol], self._areas)

    def by_class(self, protocol="per_box"):
        """{class id: mean IoU} over the classes given to :meth:`add`."""
        ious, classes = self.ious(protocol), np.asarray(self._classes, np.int64)
        return {int(c): float(ious[classes == c].mean()) for c in np.unique(classes)}

    def figures(self):
        """The bench schema: {"per_box", "small", "medium", "large", "painted"} (headline per box and its size
        buckets, then the painted mean), fractions, NaN where nothing was scored."""
        per_box, painted = self.summary("per_box"), self.summary("painted")
        out = OrderedDict(per_box=per_box["mIoU"])
        out.update((name, per_box[f"mIoU-{name}"]) for name, _, _ in SIZE_BUCKETS)
        out["painted"] = painted["mIoU"]
        return out
