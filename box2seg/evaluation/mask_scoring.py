"""Scoring per-box masks from any source (filled boxes, ellipses, GrabCut, Box2Seg) the same way:
semantic mIoU of the label map they paint, and per-instance mask IoU against the true masks.

Semantic mIoU here uses the same definition as the (fixed) SemSegEvaluator: mean over the classes with at
least one ground-truth pixel of TP / (TP + FP + FN), ignore pixels excluded.
"""
import numpy as np

from ..compat import fixed_miou
from ..structures import box_areas, decode_segmentation, record_boxes
from .instance_iou import mask_ious, summarize_instance_ious

__all__ = ["paint_box_masks", "MaskScorer"]


def paint_box_masks(masks, classes, boxes, height, width):
    """Label map (0 background, class + 1) from per-box masks; boxes painted in descending area so the
    smaller box wins overlaps (the GrabCut label map's rule)."""
    labels = np.zeros((height, width), dtype=np.int64)
    if len(masks) == 0:
        return labels
    order = np.argsort(-box_areas(boxes), kind="stable")
    stacked = np.asarray(masks, dtype=bool)[order]
    # The last mask in painting order that covers a pixel wins: argmax over the reversed stack.
    covered = stacked.any(0)
    last = len(order) - 1 - np.argmax(stacked[::-1], axis=0)
    labels[covered] = np.asarray(classes)[order][last[covered]] + 1
    return labels


class MaskScorer:
    """Accumulates one method's per-box masks over a dataset.

    ``add(record, masks, gt_labels)``: ``masks`` (N, H, W) bool, one per annotation of ``record`` in order
    (crowd ones are not scored); ``gt_labels`` the true semantic map (0 bg, class + 1, ignore) or None.
    ``semantic_labels`` may replace the painted map (image-only prediction's argmax).
    """

    def __init__(self, num_classes, ignore_label):
        self.num_classes = num_classes
        self.ignore_label = ignore_label
        n = num_classes + 1
        self._conf = np.zeros((n + 1, n + 1), dtype=np.int64)  # [pred, gt], last row/col = ignore
        self._ious, self._areas, self._classes = [], [], []

    def add(self, record, masks, gt_labels=None, semantic_labels=None):
        annotations = record.get("annotations", [])
        height, width = record["height"], record["width"]
        masks = np.asarray(masks, dtype=bool)
        if len(masks) != len(annotations):
            raise ValueError(f"{record['file_name']}: {len(masks)} masks for {len(annotations)} annotations")
        scored = [i for i, a in enumerate(annotations) if not a.get("iscrowd", 0) and "segmentation" in a]
        if scored:
            gt = np.stack([decode_segmentation(annotations[i]["segmentation"], height, width) for i in scored])
            self._ious.extend(mask_ious(masks[scored], gt).tolist())
            self._areas.extend(gt.reshape(len(gt), -1).sum(1).tolist())
            self._classes.extend(int(annotations[i]["category_id"]) for i in scored)
        if gt_labels is None:
            return
        if semantic_labels is None:
            boxes, classes, crowd = record_boxes(record)
            semantic_labels = paint_box_masks(masks[~crowd], classes[~crowd], boxes[~crowd], height, width)
        n = self.num_classes + 1
        gt = np.asarray(gt_labels, dtype=np.int64).copy()
        gt[gt == self.ignore_label] = n
        pred = np.asarray(semantic_labels, dtype=np.int64)
        self._conf += np.bincount((n + 1) * pred.reshape(-1) + gt.reshape(-1), minlength=(n + 1) ** 2).reshape(
            n + 1, n + 1
        )

    def summary(self):
        """{"semantic_mIoU": .., "instance_mIoU": .., "instance_mIoU-small": .., counts,
        "instance_mIoU-by-class": {contiguous class id: mean IoU}}, IoUs in [0, 1]."""
        inst = summarize_instance_ious(self._ious, self._areas)
        out = {"semantic_mIoU": fixed_miou(self._conf) if self._conf.sum() else float("nan")}
        out.update({f"instance_{k}": v for k, v in inst.items()})
        ious, classes = np.asarray(self._ious, dtype=np.float64), np.asarray(self._classes, dtype=np.int64)
        out["instance_mIoU-by-class"] = {int(c): float(ious[classes == c].mean()) for c in np.unique(classes)}
        return out
