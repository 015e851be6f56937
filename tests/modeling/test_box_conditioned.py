import box2seg  # noqa: F401
import pytest
import torch

from box2seg.modeling.box_conditioned import box_conditioned_masks


def _reference(scores, boxes, classes, rule="class"):
    """Pixel-by-pixel statement of the rule, for comparison."""
    n, (h, w) = len(boxes), scores.shape[-2:]
    masks = torch.zeros((n, h, w), dtype=torch.bool)
    areas = [(b[2] - b[0]) * (b[3] - b[1]) for b in boxes.tolist()]
    for y in range(h):
        for x in range(w):
            covering = [i for i in range(n) if boxes[i, 0] <= x + 0.5 <= boxes[i, 2] and boxes[i, 1] <= y + 0.5 <= boxes[i, 3]]
            if not covering:
                continue
            cands = sorted({int(classes[i]) for i in covering})
            best = max(cands, key=lambda c: (scores[c + 1, y, x].item(), -cands.index(c)))
            fg = scores[best + 1, y, x] if rule == "class" else scores[1:, y, x].sum()
            if fg <= scores[0, y, x]:
                continue
            owners = [i for i in covering if int(classes[i]) == best]
            owner = min(owners, key=lambda i: (areas[i], i))
            masks[owner, y, x] = True
    return masks


@pytest.mark.parametrize("rule", ["class", "foreground"])
def test_matches_pixel_reference_on_random_inputs(rule):
    g = torch.Generator().manual_seed(0)
    for _ in range(5):
        scores = torch.rand((6, 17, 19), generator=g).softmax(0)
        xy0 = torch.rand((7, 2), generator=g) * 12
        wh = torch.rand((7, 2), generator=g) * 10 + 1
        boxes = torch.cat([xy0, xy0 + wh], 1)
        classes = torch.randint(0, 5, (7,), generator=g)
        assert torch.equal(box_conditioned_masks(scores, boxes, classes, rule),
                           _reference(scores, boxes, classes, rule))


def test_absent_class_cannot_erase_a_box_and_smaller_box_wins():
    scores = torch.zeros((4, 10, 10))
    scores[0] = 0.2  # background
    scores[1] = 0.5  # class 0
    scores[3] = 0.9  # class 2, never boxed: ignored
    boxes = torch.tensor([[0.0, 0.0, 10.0, 10.0], [2.0, 2.0, 5.0, 5.0]])
    masks = box_conditioned_masks(scores, boxes, torch.tensor([0, 0]))
    assert masks[1].sum() == 9 and masks[0].sum() == 100 - 9
    assert not (masks[0] & masks[1]).any()


def test_no_boxes():
    assert box_conditioned_masks(torch.rand(3, 4, 5), torch.zeros((0, 4)), torch.zeros(0)).shape == (0, 4, 5)


def test_foreground_rule_keeps_pixels_whose_mass_is_split_over_look_alike_classes():
    scores = torch.zeros((4, 1, 3))
    scores[:, 0, 0] = torch.tensor([0.35, 0.30, 0.35, 0.00])  # class 0 boxed, class 1 a look-alike
    scores[:, 0, 1] = torch.tensor([0.60, 0.20, 0.20, 0.00])  # background
    scores[:, 0, 2] = torch.tensor([0.10, 0.00, 0.00, 0.90])  # outside the box
    boxes, classes = torch.tensor([[0.0, 0.0, 2.0, 1.0]]), torch.tensor([0])
    assert box_conditioned_masks(scores, boxes, classes)[0, 0].tolist() == [False, False, False]
    assert box_conditioned_masks(scores, boxes, classes, "foreground")[0, 0].tolist() == [True, False, False]
    with pytest.raises(ValueError, match="rule"):
        box_conditioned_masks(scores, boxes, classes, "any")
