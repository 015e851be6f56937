"""The one scorer on hand-made cases: overlapping boxes under both protocols, a box at the image border,
a 1 px box, RLE IoU against the plain definition, size buckets."""
import numpy as np
import pytest

from box2seg.evaluation.box_scorer import (
    BOX_PIXEL_RULE,
    BoxScorer,
    baseline_masks,
    mask_ious,
    paint_winners,
    painted_masks,
)
from box2seg.structures import PIXEL_CENTRES


def _rect(h, w, x0, y0, x1, y1):
    m = np.zeros((h, w), bool)
    m[y0:y1, x0:x1] = True
    return m


def test_the_rule_is_pixel_centres():
    assert BOX_PIXEL_RULE == PIXEL_CENTRES


def test_rle_iou_matches_the_definition_and_empty_pairs_score_one():
    rng = np.random.default_rng(0)
    pred, gt = rng.random((5, 13, 17)) > 0.5, rng.random((5, 13, 17)) > 0.6
    expected = (pred & gt).sum((1, 2)) / (pred | gt).sum((1, 2))
    np.testing.assert_allclose(mask_ious(pred, gt), expected)
    empty = np.zeros((2, 4, 4), bool)
    one = empty.copy()
    one[1, 0, 0] = True
    assert mask_ious(empty, one).tolist() == [1.0, 0.0]
    assert mask_ious(np.zeros((0, 4, 4), bool), np.zeros((0, 4, 4), bool)).shape == (0,)
    with pytest.raises(ValueError, match="differ in shape"):
        mask_ious(empty, np.zeros((2, 4, 5), bool))


def test_overlapping_boxes_per_box_and_painted():
    h = w = 10
    boxes = np.array([[0, 0, 8, 8], [4, 4, 8, 8]], np.float64)  # the small box lies inside the large one
    gt = np.stack([_rect(h, w, 0, 0, 8, 8), _rect(h, w, 4, 4, 8, 8)])
    masks = baseline_masks("box", boxes, h, w)
    scorer = BoxScorer()
    scorer.add(masks, boxes, gt)
    # Per box: each filled box is its own true mask.
    assert scorer.ious("per_box").tolist() == [1.0, 1.0]
    # Painted: the smaller box wins its 16 px, the large one keeps 48 of its 64.
    assert scorer.ious("painted").tolist() == [48 / 64, 1.0]
    figures = scorer.figures()
    assert list(figures) == ["per_box", "small", "medium", "large", "painted"]
    assert figures["per_box"] == 1.0 and figures["painted"] == pytest.approx((0.75 + 1.0) / 2)
    assert figures["small"] == pytest.approx(1.0) and np.isnan(figures["large"])


def test_painting_order_smaller_box_wins_and_later_box_wins_ties():
    h = w = 6
    boxes = np.array([[0, 0, 4, 4], [2, 2, 6, 6], [1, 1, 3, 3]], np.float64)
    masks = baseline_masks("box", boxes, h, w)
    winners = paint_winners(masks, boxes)
    assert winners[2, 2] == 2  # the smallest box
    assert winners[3, 3] == 1  # equal areas 0 and 1: the later one is painted last
    assert winners[0, 0] == 0 and winners[5, 0] == -1
    painted = painted_masks(masks, boxes)
    assert not (painted.sum(0) > 1).any() and (painted.any(0) == masks.any(0)).all()


def test_box_at_the_image_border_is_clipped_by_pixel_centres():
    h = w = 10
    box = np.array([[-3.0, -3.0, 4.4, 4.6]])
    # Centres 0.5..3.5 lie in x <= 4.4 (4 columns), 0.5..4.5 in y <= 4.6 (5 rows).
    mask = baseline_masks("box", box, h, w)[0]
    assert mask.sum() == 20 and mask[:5, :4].all()
    scorer = BoxScorer()
    scorer.add(mask[None], box, _rect(h, w, 0, 0, 4, 5)[None])
    assert scorer.ious().tolist() == [1.0] and scorer.ious("painted").tolist() == [1.0]
    ellipse = baseline_masks("ellipse", box, h, w)[0]
    assert ellipse.any() and not ellipse[5:].any() and not ellipse[:, 4:].any()


def test_one_pixel_box():
    h = w = 8
    boxes = np.array([[2.0, 3.0, 3.0, 4.0], [2.6, 3.6, 2.9, 3.9]])  # one pixel; a sub-pixel box holding no centre
    gt = np.stack([_rect(h, w, 2, 3, 3, 4)] * 2)
    for method in ("box", "ellipse"):
        masks = baseline_masks(method, boxes, h, w)
        assert masks[0].sum() == 1 and masks[0][3, 2] and masks[1].sum() == 0
        scorer = BoxScorer()
        scorer.add(masks, boxes, gt)
        assert scorer.ious().tolist() == [1.0, 0.0]
        assert scorer.summary()["count-small"] == 2


def test_scored_subset_classes_merge_and_size_buckets():
    h, w = 120, 120
    boxes = np.array([[0, 0, 100, 100], [0, 0, 40, 40], [100, 100, 110, 110]], np.float64)
    masks = baseline_masks("box", boxes, h, w)
    gt = np.stack([_rect(h, w, 0, 0, 100, 100), _rect(h, w, 100, 100, 110, 110)])
    a, b = BoxScorer(), BoxScorer()
    a.add(masks, boxes, gt, scored=[0, 2], classes=[5, 6, 7])  # box 1 has no true mask: painted, not scored
    b.add(masks[2:], boxes[2:], gt[1:], classes=[7])
    merged = a.merge(b)
    assert len(merged) == 3
    s = merged.summary()
    assert (s["count-small"], s["count-medium"], s["count-large"]) == (2, 0, 1)
    assert merged.ious().tolist() == [1.0, 1.0, 1.0]
    assert merged.ious("painted")[0] == pytest.approx((100 * 100 - 40 * 40) / (100 * 100))
    assert merged.by_class() == {5: 1.0, 7: 1.0}
    with pytest.raises(ValueError, match="must be one of"):
        baseline_masks("circle", boxes, h, w)
