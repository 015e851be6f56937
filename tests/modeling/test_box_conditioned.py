import box2seg  # noqa: F401
import torch

from box2seg.modeling.box_conditioned import box_conditioned_masks, boxes_inside


def _reference(scores, boxes, classes):
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
            if scores[best + 1, y, x] <= scores[0, y, x]:
                continue
            owners = [i for i in covering if int(classes[i]) == best]
            owner = min(owners, key=lambda i: (areas[i], i))
            masks[owner, y, x] = True
    return masks


def test_matches_pixel_reference_on_random_inputs():
    g = torch.Generator().manual_seed(0)
    for _ in range(5):
        scores = torch.rand((6, 17, 19), generator=g)
        xy0 = torch.rand((7, 2), generator=g) * 12
        wh = torch.rand((7, 2), generator=g) * 10 + 1
        boxes = torch.cat([xy0, xy0 + wh], 1)
        classes = torch.randint(0, 5, (7,), generator=g)
        assert torch.equal(box_conditioned_masks(scores, boxes, classes), _reference(scores, boxes, classes))


def test_absent_class_cannot_erase_a_box_and_smaller_box_wins():
    scores = torch.zeros((4, 10, 10))
    scores[0] = 0.2  # background
    scores[1] = 0.5  # class 0
    scores[3] = 0.9  # class 2, never boxed: ignored
    boxes = torch.tensor([[0.0, 0.0, 10.0, 10.0], [2.0, 2.0, 5.0, 5.0]])
    masks = box_conditioned_masks(scores, boxes, torch.tensor([0, 0]))
    assert masks[1].sum() == 9 and masks[0].sum() == 100 - 9
    assert not (masks[0] & masks[1]).any()


def test_no_boxes_and_inside():
    assert box_conditioned_masks(torch.rand(3, 4, 5), torch.zeros((0, 4)), torch.zeros(0)).shape == (0, 4, 5)
    inside = boxes_inside(torch.tensor([[1.0, 0.0, 3.0, 2.0]]), 3, 4)
    assert inside[0].nonzero().tolist() == [[0, 1], [0, 2], [1, 1], [1, 2]]
