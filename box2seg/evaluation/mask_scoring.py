"""Scoring per-box masks from any source (filled boxes, ellipses, GrabCut, Box2Seg) the same way:
semantic mIoU of the label map they paint, and per-instance mask IoU against the true masks through the one
scorer (:mod:`box2seg.evaluation.box_scorer`): each box's own mask ("instance_mIoU", the headline) and the
pixels it keeps in the painted map, smaller box wins ("painted_mIoU").

Semantic mIoU here uses the same definition as the (fixed) SemSegEvaluator: mean over the classes with at
least one ground-truth pixel of TP / (TP + FP + FN), ignore pixels excluded.
"""
import numpy as np

from ..compat import fixed_miou
from ..structures import decode_segmentation, record_boxes
from .box_scorer import BoxScorer, paint_winners

__all__ = ["paint_box_masks", "MaskScorer"]


def paint_box_masks(masks, classes, boxes, height, width):
    """Label map (0 background, class + 1) from per-box masks; boxes painted in descending area so the
    smaller box wins overlaps (the GrabCut label map's rule)."""
    labels = np.zeros((height, width), dtype=np.int64)
    if len(masks) == 0:
        return labels
    winners = paint_winners(masks, boxes)
    covered = winners >= 0
    labels[covered] = np.asarray(classes)[winners[covered]] + 1
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
        self._boxes = BoxScorer()

    def add(self, record, masks, gt_labels=None, semantic_labels=None):
        annotations = record.get("annotations", [])
        height, width = record["height"], record["width"]
        masks = np.asarray(masks, dtype=bool)
        if len(masks) != len(annotations):
            raise ValueError(f"{record['file_name']}: {len(masks)} masks for {len(annotations)} annotations")
        boxes, classes, crowd = record_boxes(record)
        normal = np.flatnonzero(~crowd)  # every normal box takes part in painting
        scored = [j for j, i in enumerate(normal) if "segmentation" in annotations[i]]
        if scored:
            gt = np.stack([decode_segmentation(annotations[normal[j]]["segmentation"], height, width) for j in scored])
            self._boxes.add(masks[normal], boxes[normal], gt, scored, classes=classes[normal])
        if gt_labels is None:
            return
        if semantic_labels is None:
            semantic_labels = paint_box_masks(masks[~crowd], classes[~crowd], boxes[~crowd], height, width)
        n = self.num_classes + 1
        gt = np.asarray(gt_labels, dtype=np.int64).copy()
        gt[gt == self.ignore_label] = n
        pred = np.asarray(semantic_labels, dtype=np.int64)
        self._conf += np.bincount((n + 1) * pred.reshape(-1) + gt.reshape(-1), minlength=(n + 1) ** 2).reshape(
            n + 1, n + 1
        )

    def summary(self):
        """{"semantic_mIoU": .., "instance_mIoU": .., "instance_mIoU-small": .., counts, "painted_mIoU": ..,
        "painted_mIoU-small": .., "instance_mIoU-by-class": {class id: mean IoU}}, IoUs in [0, 1]."""
        out = {"semantic_mIoU": fixed_miou(self._conf) if self._conf.sum() else float("nan")}
        out.update({f"instance_{k}": v for k, v in self._boxes.summary("per_box").items()})
        out.update({f"painted_{k}": v for k, v in self._boxes.summary("painted").items() if k.startswith("mIoU")})
        out["instance_mIoU-by-class"] = self._boxes.by_class("per_box")
        return out
