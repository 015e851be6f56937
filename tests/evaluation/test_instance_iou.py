import box2seg  # noqa: F401
import numpy as np
import pycocotools.mask as mask_util
import pytest
import torch
from detectron2.data import DatasetCatalog

from box2seg.evaluation.instance_iou import BoxMaskIoUEvaluator, summarize_instance_ious


@pytest.fixture
def dataset():
    gt_small = np.zeros((100, 100), np.uint8)
    gt_small[0:10, 0:10] = 1
    gt_large = np.zeros((100, 100), np.uint8)
    gt_large[:, 50:] = 1
    rle = mask_util.encode(np.asfortranarray(gt_large))
    rle["counts"] = rle["counts"].decode()
    record = {
        "file_name": "a.jpg", "height": 100, "width": 100, "image_id": 1,
        "annotations": [
            {"bbox": [0, 0, 10, 10], "category_id": 0, "iscrowd": 0, "segmentation": [[0, 0, 10, 0, 10, 10, 0, 10]]},
            {"bbox": [0, 0, 100, 100], "category_id": 1, "iscrowd": 1, "segmentation": rle},
            {"bbox": [50, 0, 100, 100], "category_id": 1, "iscrowd": 0, "segmentation": rle},
        ],
    }
    DatasetCatalog.register("box2seg_test_iou", lambda: [record])
    yield "box2seg_test_iou", gt_small.astype(bool), gt_large.astype(bool)
    DatasetCatalog.remove("box2seg_test_iou")


def test_scores_each_box_against_its_own_mask(dataset):
    name, small, large = dataset
    half = large.copy()
    half[50:] = False  # half of the large object
    masks = torch.from_numpy(np.stack([small, np.ones_like(small), half]))
    evaluator = BoxMaskIoUEvaluator(name, distributed=False)
    evaluator.process([{"file_name": "a.jpg"}], [{"box_masks": masks}])
    result = evaluator.evaluate()["box_mask_iou"]
    assert result["count"] == 2  # the crowd annotation is not scored
    assert result["mIoU-small"] == pytest.approx(100.0)
    assert result["mIoU-medium"] == pytest.approx(50.0)  # 5000 px: COCO medium
    assert result["mIoU"] == pytest.approx(75.0)


def test_refuses_misaligned_masks(dataset):
    name, small, _ = dataset
    evaluator = BoxMaskIoUEvaluator(name, distributed=False)
    with pytest.raises(ValueError, match="3 annotations but the model returned 1"):
        evaluator.process([{"file_name": "a.jpg"}], [{"box_masks": torch.from_numpy(small[None])}])


def test_summary_buckets():
    s = summarize_instance_ious([1.0, 0.5, 0.0], [10, 2000, 10000])
    assert s["count-small"] == s["count-medium"] == s["count-large"] == 1
    assert s["mIoU"] == pytest.approx(0.5)


def test_reports_the_painted_protocol_beside_each_box_own_mask(dataset):
    name, small, large = dataset
    masks = torch.from_numpy(np.stack([small, np.ones_like(small), np.ones_like(small)]))
    evaluator = BoxMaskIoUEvaluator(name, distributed=False)
    evaluator.process([{"file_name": "a.jpg"}], [{"box_masks": masks}])
    result = evaluator.evaluate()["box_mask_iou"]
    # Own masks: the small box is exact, the whole-image mask of the large box covers twice its object.
    assert result["mIoU"] == pytest.approx((100 + 50) / 2)
    # Painted (the crowd box takes no part): the small box wins its 100 px, the large box keeps 9,900.
    assert result["painted-mIoU"] == pytest.approx((100 + 100 * 5000 / 9900) / 2)
    assert result["painted-mIoU-small"] == pytest.approx(100.0)
