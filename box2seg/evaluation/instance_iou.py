"""Mean per-instance mask IoU of box-conditioned masks against true masks (overall and by COCO size),
through the one scorer (:mod:`box2seg.evaluation.box_scorer`): each box's own mask (the headline) and the
painted map (smaller box wins) side by side.

This is the measure that matters for the labelling use case: every input box gets a mask, and each is
compared with the true mask of the same annotation. Size buckets follow COCO, by ground-truth mask area:
small < 32^2 <= medium < 96^2 <= large.
"""
import logging
from collections import OrderedDict

import numpy as np
from detectron2.data import DatasetCatalog
from detectron2.evaluation import DatasetEvaluator
from detectron2.utils import comm

from ..structures import decode_segmentation, record_boxes
from .box_scorer import SIZE_BUCKETS, BoxScorer, mask_ious, summarize_instance_ious

__all__ = ["BoxMaskIoUEvaluator", "SIZE_BUCKETS", "mask_ious", "summarize_instance_ious"]

logger = logging.getLogger(__name__)


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
        self._scorer = BoxScorer()

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
            boxes, _, crowd = record_boxes(record)
            normal = np.flatnonzero(~crowd)  # every normal box takes part in painting
            scored = [j for j, i in enumerate(normal) if "segmentation" in annotations[i]]
            if not scored:
                continue
            height, width = record["height"], record["width"]
            gt = [decode_segmentation(annotations[normal[j]]["segmentation"], height, width) for j in scored]
            self._scorer.add(pred[normal], boxes[normal], np.stack(gt), scored)

    def evaluate(self):
        scorer = self._scorer
        if self._distributed:
            comm.synchronize()
            scorers = comm.gather(scorer)
            if not comm.is_main_process():
                return {}
            scorer = BoxScorer()
            for part in scorers:
                scorer.merge(part)
        if not len(scorer):
            logger.warning(f"{self._dataset_name}: no box masks to score (no true masks, or no box_masks output)")
            return {}
        summary = OrderedDict(scorer.summary("per_box"))
        summary.update((f"painted-{k}", v) for k, v in scorer.summary("painted").items() if k.startswith("mIoU"))
        return OrderedDict(box_mask_iou={k: (100 * v if "mIoU" in k else v) for k, v in summary.items()})
