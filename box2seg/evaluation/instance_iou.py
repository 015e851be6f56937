"""Mean per-instance mask IoU of box-conditioned masks against true masks (overall and by COCO size).

This is the measure that matters for the labelling use case: every input box gets a mask, and each is
compared with the true mask of the same annotation. Size buckets follow COCO, by ground-truth mask area:
small < 32^2 <= medium < 96^2 <= large.
"""
import itertools
import logging
from collections import OrderedDict

import numpy as np
from detectron2.data import DatasetCatalog
from detectron2.evaluation import DatasetEvaluator
from detectron2.utils import comm

from ..structures import decode_segmentation

logger = logging.getLogger(__name__)

SIZE_BUCKETS = (("small", 0, 32**2), ("medium", 32**2, 96**2), ("large", 96**2, float("inf")))


def mask_ious(pred_masks, gt_masks):
    """IoU of each predicted mask with the ground-truth mask at the same index; (N, H, W) each."""
    pred = pred_masks.reshape(len(pred_masks), -1)
    gt = gt_masks.reshape(len(gt_masks), -1)
    inter = np.logical_and(pred, gt).sum(1)
    union = np.logical_or(pred, gt).sum(1)
    return np.where(union > 0, inter / np.maximum(union, 1), 1.0)


def summarize_instance_ious(ious, gt_areas):
    """{"mIoU": ..., "mIoU-small": ..., "count-small": ...}: means in [0, 1], NaN for an empty bucket."""
    ious = np.asarray(ious, dtype=np.float64)
    gt_areas = np.asarray(gt_areas, dtype=np.float64)
    result = OrderedDict(mIoU=float(ious.mean()) if ious.size else float("nan"), count=int(ious.size))
    for name, low, high in SIZE_BUCKETS:
        keep = (gt_areas >= low) & (gt_areas < high)
        result[f"mIoU-{name}"] = float(ious[keep].mean()) if keep.any() else float("nan")
        result[f"count-{name}"] = int(keep.sum())
    return result


class BoxMaskIoUEvaluator(DatasetEvaluator):
    """Scores ``outputs[i]["box_masks"]`` ((N, H, W) bool, one per input annotation, in the record's
    annotation order) against the record's true masks. Crowd annotations and annotations without a
    true mask are not scored."""

    def __init__(self, dataset_name, distributed=True):
        self._dataset_name = dataset_name
        self._distributed = distributed
        self._records = {r["file_name"]: r for r in DatasetCatalog.get(dataset_name)}
        self.reset()

    def reset(self):
        self._ious = []
        self._areas = []

    def process(self, inputs, outputs):
        for inp, out in zip(inputs, outputs):
            if "box_masks" not in out:
                continue
            record = self._records[inp["file_name"]]
            annotations = record.get("annotations", [])
            pred = out["box_masks"].to("cpu").numpy().astype(bool)
            if len(pred) != len(annotations):
                raise ValueError(
                    f"{self._dataset_name}: image {record['file_name']} has {len(annotations)} annotations but "
                    f"the model returned {len(pred)} box masks; box masks must follow the annotation order"
                )
            scored = [i for i, a in enumerate(annotations) if not a.get("iscrowd", 0) and "segmentation" in a]
            if not scored:
                continue
            height, width = record["height"], record["width"]
            gt = np.stack([decode_segmentation(annotations[i]["segmentation"], height, width) for i in scored])
            self._ious.extend(mask_ious(pred[scored], gt).tolist())
            self._areas.extend(gt.reshape(len(gt), -1).sum(1).tolist())

    def evaluate(self):
        ious, areas = self._ious, self._areas
        if self._distributed:
            comm.synchronize()
            ious = list(itertools.chain(*comm.gather(ious)))
            areas = list(itertools.chain(*comm.gather(areas)))
            if not comm.is_main_process():
                return {}
        if not ious:
            logger.warning(f"{self._dataset_name}: no box masks to score (no true masks, or no box_masks output)")
            return {}
        summary = summarize_instance_ious(ious, areas)
        return OrderedDict(box_mask_iou={k: (100 * v if k.startswith("mIoU") else v) for k, v in summary.items()})
