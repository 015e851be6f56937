"""The two box-to-pixel rules on hand-made boxes (image border, 1 px, fractional, on pixel centres and
edges), against a plain-Python pixel loop, numpy against torch, unions and groups, record boxes."""
import math

import numpy as np
import pytest
import torch

from box2seg.structures import (
    PIXEL_CENTRES,
    PIXELS_TOUCHED,
    annotation_boxes,
    box_areas,
    box_pixel_masks,
    box_union_mask,
    ellipse_masks,
    pixel_extents,
    record_boxes,
)


def _covers(box, x, y, rule):
    x0, y0, x1, y1 = (float(v) for v in box)
    if rule == PIXEL_CENTRES:
        return x0 <= x + 0.5 <= x1 and y0 <= y + 0.5 <= y1
    return math.floor(x0) <= x < math.ceil(x1) and math.floor(y0) <= y < math.ceil(y1)


def _reference(boxes, h, w, rule):
    return np.array([[[_covers(b, x, y, rule) for x in range(w)] for y in range(h)] for b in boxes], bool).reshape(
        len(boxes), h, w)


def _random_boxes(seed, n, h, w):
    rng = np.random.default_rng(seed)
    x0, y0 = rng.uniform(-3, w + 1, n), rng.uniform(-3, h + 1, n)
    boxes = np.stack([x0, y0, x0 + rng.uniform(0, 0.7 * w, n), y0 + rng.uniform(0, 0.7 * h, n)], 1)
    snap = rng.random((n, 4)) < 0.4  # onto pixel centres and edges: the inclusive-boundary cases
    return np.where(snap, np.round(boxes * 2) / 2, boxes)


def test_hand_made_boxes_under_both_rules():
    h, w = 6, 8
    boxes = np.array([
        [5.6, 3.2, 8.0, 6.0],  # at the bottom-right border
        [2.0, 2.0, 3.0, 3.0],  # exactly pixel (2, 2)
        [2.6, 1.6, 2.9, 1.9],  # inside one pixel, covering no centre
        [0.5, 0.5, 1.5, 1.5],  # edges on pixel centres (closed box): 2 x 2 centres
        [-4.0, -1.0, 1.0, 20.0],  # beyond the image
        [4.0, 4.0, 4.0, 4.0],  # degenerate
    ])
    centres = pixel_extents(boxes, h, w, PIXEL_CENTRES)
    touched = pixel_extents(boxes, h, w, PIXELS_TOUCHED)
    assert centres.dtype == np.int64 and touched.dtype == np.int64
    assert centres.tolist() == [[6, 3, 8, 6], [2, 2, 3, 3], [3, 2, 3, 2], [0, 0, 2, 2], [0, 0, 1, 6], [4, 4, 4, 4]]
    assert touched.tolist() == [[5, 3, 8, 6], [2, 2, 3, 3], [2, 1, 3, 2], [0, 0, 2, 2], [0, 0, 1, 6], [4, 4, 4, 4]]
    for rule in (PIXEL_CENTRES, PIXELS_TOUCHED):
        np.testing.assert_array_equal(box_pixel_masks(boxes, h, w, rule), _reference(boxes, h, w, rule))
    # the sub-pixel box covers no centre but touches one pixel: the two rules differ exactly there
    assert box_pixel_masks(boxes[2:3], h, w, PIXEL_CENTRES).sum() == 0
    assert box_pixel_masks(boxes[2:3], h, w, PIXELS_TOUCHED)[0].nonzero() == (np.array([1]), np.array([2]))


@pytest.mark.parametrize("rule", [PIXEL_CENTRES, PIXELS_TOUCHED])
@pytest.mark.parametrize("seed", range(3))
def test_random_boxes_match_the_pixel_loop_numpy_and_torch(rule, seed):
    h, w = 9 + seed, 13 - seed
    boxes = _random_boxes(seed, 12, h, w)
    ref = _reference(boxes, h, w, rule)
    np.testing.assert_array_equal(box_pixel_masks(boxes, h, w, rule), ref)
    for dtype in (torch.float32, torch.float64):
        t = torch.as_tensor(boxes, dtype=dtype)
        ref_t = _reference(t.double().numpy(), h, w, rule)  # float32 rounding moves the boxes themselves
        masks = box_pixel_masks(t, h, w, rule)
        assert isinstance(masks, torch.Tensor) and masks.dtype == torch.bool
        assert torch.equal(masks, torch.from_numpy(ref_t))
        ext = pixel_extents(t, h, w, rule)
        assert ext.dtype == torch.long
        assert ext.tolist() == pixel_extents(t.double().numpy(), h, w, rule).tolist()
    np.testing.assert_array_equal(box_union_mask(boxes, h, w, rule), ref.any(0))
    assert torch.equal(box_union_mask(torch.as_tensor(boxes), h, w, rule), torch.from_numpy(ref.any(0)))


def test_union_groups_numpy_and_torch():
    h, w = 7, 9
    boxes = _random_boxes(5, 10, h, w)
    groups = np.array([0, 2, 2, 0, 1, 2, 0, 0, 2, 2])
    ref = _reference(boxes, h, w, PIXEL_CENTRES)
    expected = np.stack([ref[groups == g].any(0) for g in range(4)])  # group 3 has no box
    got = box_union_mask(boxes, h, w, PIXEL_CENTRES, groups=groups, num_groups=4)
    np.testing.assert_array_equal(got, expected)
    got_t = box_union_mask(torch.as_tensor(boxes), h, w, PIXEL_CENTRES, torch.as_tensor(groups), 4)
    assert got_t.dtype == torch.bool and torch.equal(got_t, torch.from_numpy(expected))
    assert box_union_mask(boxes, h, w, PIXEL_CENTRES, groups=groups).shape == (3, h, w)
    assert box_union_mask(np.zeros((0, 4)), h, w, PIXELS_TOUCHED).shape == (h, w)
    assert not box_union_mask(torch.zeros(0, 4), h, w, PIXELS_TOUCHED).any()
    empty = box_union_mask(torch.zeros(0, 4), h, w, PIXELS_TOUCHED, torch.zeros(0, dtype=torch.long), 2)
    assert empty.shape == (2, h, w) and not empty.any()


def test_integer_extents_are_fixed_points_of_the_touched_rule():
    """Integer extents read back as boxes give themselves: a union of extents is the union of their boxes."""
    boxes = _random_boxes(1, 20, 10, 12)
    e = pixel_extents(boxes, 10, 12, PIXELS_TOUCHED)
    assert pixel_extents(e, 10, 12, PIXELS_TOUCHED).tolist() == e.tolist()


def test_nan_and_inverted_boxes_cover_nothing():
    boxes = np.array([[1.0, float("nan"), 3.0, 3.0], [3.0, 1.0, 1.0, 3.0]])
    for rule in (PIXEL_CENTRES, PIXELS_TOUCHED):
        assert not box_pixel_masks(boxes, 4, 4, rule).any()
        assert not box_pixel_masks(torch.as_tensor(boxes), 4, 4, rule).any()
    with pytest.raises(ValueError, match="pixel rule"):
        pixel_extents(boxes, 4, 4, "inside")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_cuda_matches_cpu():
    boxes = torch.as_tensor(_random_boxes(2, 50, 30, 40), dtype=torch.float32)
    groups = torch.arange(50) % 7
    for rule in (PIXEL_CENTRES, PIXELS_TOUCHED):
        assert torch.equal(box_pixel_masks(boxes.cuda(), 30, 40, rule).cpu(), box_pixel_masks(boxes, 30, 40, rule))
        assert torch.equal(box_union_mask(boxes.cuda(), 30, 40, rule, groups.cuda(), 7).cpu(),
                           box_union_mask(boxes, 30, 40, rule, groups, 7))


def test_ellipse_masks_numpy_and_torch():
    m = ellipse_masks([[0, 0, 40, 20]], 30, 50)[0]
    assert not m[:, 40:].any() and not m[20:].any()
    assert m.sum() == pytest.approx(np.pi * 20 * 10, rel=0.03)
    boxes = _random_boxes(3, 6, 20, 24)
    assert torch.equal(ellipse_masks(torch.as_tensor(boxes), 20, 24), torch.from_numpy(ellipse_masks(boxes, 20, 24)))


def test_box_areas():
    boxes = [[0, 0, 2, 3], [5, 5, 4, 9], [0.5, 0.5, 1.0, 1.5]]
    assert box_areas(boxes).tolist() == [6.0, 0.0, 0.5] and box_areas(boxes).dtype == np.float64
    t = box_areas(torch.tensor(boxes, dtype=torch.float32))
    assert t.dtype == torch.float32 and t.tolist() == [6.0, 0.0, 0.5]


def test_record_boxes():
    record = {"file_name": "a.jpg", "annotations": [
        {"bbox": [1, 2, 5, 7], "category_id": 3},
        {"bbox": [1.5, 2.0, 4.0, 3.0], "bbox_mode": 1, "category_id": 0, "iscrowd": 1},  # XYWH_ABS
    ]}
    boxes, classes, crowd = record_boxes(record)
    assert boxes.dtype == np.float64 and boxes.tolist() == [[1, 2, 5, 7], [1.5, 2.0, 5.5, 5.0]]
    assert classes.dtype == np.int64 and classes.tolist() == [3, 0]
    assert crowd.dtype == bool and crowd.tolist() == [False, True]
    boxes, classes, crowd = record_boxes({"file_name": "empty.jpg"})
    assert boxes.shape == (0, 4) and classes.shape == (0,) and crowd.shape == (0,)
    with pytest.raises(ValueError, match=r"b\.jpg: annotation 0 has bbox_mode 2"):
        record_boxes({"file_name": "b.jpg", "annotations": [{"bbox": [0, 0, 1, 1], "bbox_mode": 2, "category_id": 0}]})
    assert annotation_boxes(record["annotations"])[0].tolist() == [[1, 2, 5, 7], [1.5, 2.0, 5.5, 5.0]]
