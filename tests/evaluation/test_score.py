"""Scoring per-box masks (box2seg.evaluation.score): per-instance IoU by annotation id, semantic mIoU of
painted maps, refusal of other boxes. The command is in tests/commands/test_score.py."""
import copy

import box2seg  # noqa: F401  (first)
import numpy as np
import pycocotools.mask as mask_util
import pytest

from box2seg.evaluation.score import ScoreError, format_table, json_ready, score_coco

H, W = 40, 30


def _rle(mask):
    rle = mask_util.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [H, W], "counts": rle["counts"].decode()}


def _box_mask(x0, y0, x1, y1):
    m = np.zeros((H, W), bool)
    m[y0:y1, x0:x1] = True
    return m


def _uncompressed_rle(mask):
    flat = mask.flatten(order="F").astype(np.int64)
    starts = np.flatnonzero(np.diff(flat)) + 1
    runs = np.diff(np.concatenate([[0], starts, [flat.size]])).tolist()
    return {"size": [H, W], "counts": ([0] if flat[0] else []) + runs}


@pytest.fixture
def gt():
    return {
        "images": [{"id": 1, "file_name": "a.jpg", "height": H, "width": W},
                   {"id": "b", "file_name": "b.jpg", "height": H, "width": W}],
        "categories": [{"id": 7, "name": "seven"}, {"id": 3, "name": "three"}],
        "annotations": [
            {"id": 10, "image_id": 1, "category_id": 7, "bbox": [2, 2, 8, 8], "iscrowd": 0,
             "segmentation": [[2, 2, 10, 2, 10, 10, 2, 10]]},
            {"id": 11, "image_id": 1, "category_id": 3, "bbox": [4, 4, 3, 3], "iscrowd": 0,  # inside 10: wins
             "segmentation": _rle(_box_mask(4, 4, 7, 7))},
            {"id": 12, "image_id": 1, "category_id": 3, "bbox": [20, 10, 10, 10], "iscrowd": 1,
             "segmentation": _uncompressed_rle(_box_mask(20, 10, 30, 20))},
            {"id": 13, "image_id": 1, "category_id": 7, "bbox": [12, 0, 5, 5], "iscrowd": 0},  # no mask
            {"id": 14, "image_id": 1, "category_id": 7, "bbox": [1, 1, 0, 5], "iscrowd": 0},  # invalid box
            {"id": 20, "image_id": "b", "category_id": 3, "bbox": [0, 0, W, H], "iscrowd": 0,
             "segmentation": _rle(_box_mask(0, 0, W, H))},  # 1200 px: medium
        ],
    }


def test_file_against_itself_is_perfect(gt):
    r = score_coco(gt, copy.deepcopy(gt))
    assert r["instance"]["mIoU"] == 1.0 and r["instance"]["count"] == 3
    assert r["instance"]["count-small"] == 2 and r["instance"]["count-medium"] == 1
    assert r["instance"]["mIoU-small"] == r["instance"]["mIoU-medium"] == 1.0
    assert np.isnan(r["instance"]["mIoU-large"]) and r["instance"]["count-large"] == 0
    assert r["per_class"]["seven"]["mIoU"] == r["per_class"]["three"]["mIoU"] == 1.0
    assert r["per_class"]["seven"]["count"] == 1 and r["per_class"]["three"]["count"] == 2
    assert r["per_class"]["seven"]["semantic_IoU"] == r["per_class"]["three"]["semantic_IoU"] == 1.0
    assert r["semantic_mIoU"] == 1.0 and r["semantic_background_IoU"] == 1.0
    assert r["not_scored"] == {"crowd": 1, "gt_without_mask": 1, "invalid_box": 1}


def test_known_values(gt):
    pred = copy.deepcopy(gt)
    del pred["annotations"][4]  # the invalid box: no mask can exist for it, so it may be missing
    del pred["annotations"][2]  # crowd may be left out too
    big = pred["annotations"][3]
    big["segmentation"] = _rle(_box_mask(0, 0, W // 2, H))  # the left half of image b
    r = score_coco(gt, pred)
    assert r["instance"]["mIoU"] == pytest.approx((1 + 1 + 0.5) / 3)
    assert r["instance"]["mIoU-medium"] == pytest.approx(0.5)
    assert r["per_class"]["three"]["mIoU"] == pytest.approx(0.75)
    # Semantic: image b's right half is predicted background. The painted GT of image 1: 64 px class "seven"
    # minus the 9 of "three" inside it; the crowd and the unmasked box are ignore.
    bg_gt = H * W - 64 - 100 - 25  # image 1 background (crowd 100 px and unmasked box 25 px are ignore)
    half = H * W // 2
    three_tp, three_gt = 9 + half, 9 + 2 * half
    assert r["per_class"]["three"]["semantic_IoU"] == pytest.approx(three_tp / three_gt)
    assert r["semantic_background_IoU"] == pytest.approx(bg_gt / (bg_gt + half))
    assert r["semantic_mIoU"] == pytest.approx((1.0 + three_tp / three_gt + bg_gt / (bg_gt + half)) / 3)


def test_other_boxes_are_refused_with_counts_and_examples(gt):
    pred = copy.deepcopy(gt)
    pred["annotations"][0]["id"] = 99  # 10 missing, 99 extra
    pred["annotations"][1]["image_id"] = "b"
    pred["images"].append({"id": 5, "height": H, "width": W})
    with pytest.raises(ScoreError) as info:
        score_coco(gt, pred, "gt.json", "pred.json")
    message = str(info.value)
    for part in ("pred.json does not describe the boxes of gt.json", "2 vs 3 images",
                 "1 image ids only in the prediction (5)", "1 of 4 non-crowd GT annotation ids missing",
                 "(10)", "1 prediction annotation ids not in the GT (99)", "another image id than in the GT (11)"):
        assert part in message, (part, message)
    pred = copy.deepcopy(gt)
    del pred["annotations"][0]["segmentation"]
    with pytest.raises(ScoreError, match="annotation id 10 .* has no segmentation"):
        score_coco(gt, pred)
    pred = copy.deepcopy(gt)
    pred["annotations"][1]["segmentation"] = {"size": [H + 1, W], "counts": _rle(_box_mask(0, 0, 1, 1))["counts"]}
    with pytest.raises(ScoreError, match="annotation id 11"):
        score_coco(gt, pred)


def test_table_and_strict_json(gt):
    r = score_coco(gt, copy.deepcopy(gt), "gt.json", "gt.json")
    table = format_table(r)
    assert "instances (all)" in table and "semantic mIoU (classes with GT pixels): 100.0" in table
    assert "not scored: 1 crowd GT annotations, 1 GT annotations without a mask, 1 GT annotations" in table
    ready = json_ready(r)
    assert ready["instance"]["mIoU-large"] is None and ready["semantic_mIoU"] == 1.0


def test_painted_protocol_beside_each_box_own_mask(gt):
    pred = copy.deepcopy(gt)
    pred["annotations"][5]["segmentation"] = _rle(_box_mask(0, 0, W // 2, H))  # the left half of image b
    r = score_coco(gt, pred)
    # Own masks: 10 and 11 exact, 20 half. Painted: 11 (inside 10) wins its 9 px, 10 keeps 55 of its 64.
    assert r["instance"]["mIoU"] == pytest.approx((1 + 1 + 0.5) / 3)
    assert r["instance_painted"]["mIoU"] == pytest.approx((55 / 64 + 1 + 0.5) / 3)
    assert r["instance_painted"]["mIoU-medium"] == pytest.approx(0.5)
    assert "painted" in format_table(r)


def test_a_ground_truth_without_masks_is_refused(gt):
    for ann in gt["annotations"]:
        ann.pop("segmentation", None)
    with pytest.raises(ScoreError, match="gt.json: no ground-truth mask to score against"):
        score_coco(gt, copy.deepcopy(gt), "gt.json", "pred.json")
