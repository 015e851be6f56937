import box2seg  # noqa: F401
import numpy as np
import pytest

from box2seg.evaluation.mask_scoring import MaskScorer, paint_box_masks
from box2seg.structures import PIXEL_CENTRES, box_pixel_masks


def test_paint_smaller_box_wins_and_fills():
    boxes = [[0, 0, 8, 8], [2, 2, 4, 4]]
    masks = box_pixel_masks(boxes, 8, 8, PIXEL_CENTRES)
    labels = paint_box_masks(masks, [0, 1], boxes, 8, 8)
    assert (labels[2:4, 2:4] == 2).all() and (labels == 1).sum() == 64 - 4


def test_scorer_perfect_and_absent_class():
    gt_mask = np.zeros((10, 10), bool)
    gt_mask[2:6, 2:6] = True
    poly = [[2, 2, 6, 2, 6, 6, 2, 6]]
    record = {"file_name": "x", "height": 10, "width": 10,
              "annotations": [{"bbox": [2, 2, 6, 6], "category_id": 0, "iscrowd": 0, "segmentation": poly}]}
    gt_labels = gt_mask.astype(np.int64)
    scorer = MaskScorer(num_classes=2, ignore_label=255)
    scorer.add(record, gt_mask[None], gt_labels)
    s = scorer.summary()
    assert s["semantic_mIoU"] == pytest.approx(1.0) and s["instance_mIoU"] == pytest.approx(1.0)
    # A wrong semantic map painting class 2 (absent from GT) on background lowers only the bg IoU.
    wrong = gt_labels.copy()
    wrong[0, :] = 2
    scorer2 = MaskScorer(num_classes=2, ignore_label=255)
    scorer2.add(record, gt_mask[None], gt_labels, semantic_labels=wrong)
    assert scorer2.summary()["semantic_mIoU"] == pytest.approx((74 / 84 + 1.0) / 2)


def test_scorer_instance_iou_by_class():
    poly = [[2, 2, 6, 2, 6, 6, 2, 6]]  # a 4x4 square
    anns = [{"bbox": [2, 2, 6, 6], "category_id": c, "iscrowd": 0, "segmentation": poly} for c in (1, 1, 0)]
    record = {"file_name": "x", "height": 10, "width": 10, "annotations": anns}
    full, half, none = np.zeros((3, 10, 10), bool)
    full[2:6, 2:6] = True
    half[2:6, 2:4] = True
    scorer = MaskScorer(num_classes=2, ignore_label=255)
    scorer.add(record, np.stack([full, half, none]))
    by_class = scorer.summary()["instance_mIoU-by-class"]
    assert by_class == {1: pytest.approx(0.75), 0: pytest.approx(0.0)}


def test_scorer_per_box_and_painted_side_by_side():
    boxes = [[0, 0, 8, 8], [2, 2, 4, 4]]
    anns = [{"bbox": b, "category_id": c, "iscrowd": 0,
             "segmentation": [[b[0], b[1], b[2], b[1], b[2], b[3], b[0], b[3]]]} for b, c in zip(boxes, (0, 1))]
    record = {"file_name": "x", "height": 8, "width": 8, "annotations": anns}
    scorer = MaskScorer(num_classes=2, ignore_label=255)
    scorer.add(record, box_pixel_masks(boxes, 8, 8, PIXEL_CENTRES))
    s = scorer.summary()
    assert s["instance_mIoU"] == pytest.approx(1.0)
    assert s["painted_mIoU"] == pytest.approx((60 / 64 + 1.0) / 2)
