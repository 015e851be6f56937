"""Chip mode's class shape prior: each class's map read in its own box's frame, zero at the start, learnt
from the chip losses, and given the box's class at inference."""
import box2seg  # noqa: F401

import pytest
import torch
from detectron2.modeling import build_model
from detectron2.utils.events import EventStorage

from box2seg.data.chip_mapper import ChipDatasetMapper, chip_items
from box2seg.modeling.shape_prior import ClassShapePrior
from box2seg.structures import PIXEL_CENTRES, box_pixel_masks

from .test_chip_mode import _records, _two_box_input, chip_cfg  # noqa: F401  (the chip-mode fixture)


def test_each_class_map_is_read_in_its_own_boxs_frame():
    prior = ClassShapePrior(num_classes=2, size=4, limit=2.0)
    with torch.no_grad():
        prior.maps[1, 0] = torch.arange(16, dtype=torch.float32).reshape(4, 4)
    boxes = torch.tensor([[8.0, 8.0, 24.0, 24.0], [0.0, 0.0, 32.0, 32.0]])
    out = prior(boxes, torch.tensor([0, 1]), 32)
    assert out.shape == (2, 32, 32)
    assert (out[0] == 0).all()  # class 0's map is still zero
    # The map spans u, v in [-2, 2]: a box filling the chip reads its centre portion, rows by v, columns by u.
    assert float(out[1, 15:17, 15:17].mean().detach()) == pytest.approx(7.5)  # the box centre: the grid's middle
    assert out[1, 16, 31] > out[1, 16, 0] and out[1, 31, 16] > out[1, 0, 16]
    # The same box in another place of another chip reads the same values at the same box-relative pixels.
    moved = prior(torch.tensor([[16.0, 16.0, 48.0, 48.0]]), torch.tensor([1]), 64)
    assert torch.allclose(moved[0, 16:48, 16:48], out[1], atol=1e-5)


def test_class_prior_trains_from_the_chip_losses_and_uses_the_box_class_at_inference(chip_cfg):  # noqa: F811
    records = _records(chip_cfg)
    cfg = chip_cfg.clone()
    cfg.defrost()
    cfg.MODEL.BOX2SEG.CHIPS.TARGET = "own"
    cfg.MODEL.BOX2SEG.CHIPS.CLASS_PRIOR_SIZE = 8
    cfg.MODEL.BOX2SEG.LOSS.TERMS = ["gc", "bg", "proj", "pair"]
    mapper = ChipDatasetMapper(cfg, records)
    items = chip_items(records)[:3]
    batch = [mapper(item) for item in items]
    assert [int(b["chip_class"]) for b in batch] == [records[r]["annotations"][a]["category_id"] for r, a in items]
    torch.manual_seed(0)
    model = build_model(cfg)
    assert model.class_prior.maps.shape == (cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES - 1, 1, 8, 8)
    with EventStorage(5):
        losses = model(batch)
    sum(losses.values()).backward()
    grad = model.class_prior.maps.grad.flatten(1).abs().sum(1)
    seen = {int(b["chip_class"]) for b in batch}
    assert all(grad[c] > 0 for c in seen) and all(grad[c] == 0 for c in range(len(grad)) if c not in seen)

    model.eval()
    inst, image = _two_box_input()
    with torch.no_grad():
        before = model.chip_box_probs({"image": image, "instances": inst})[0]
        model.class_prior.maps[int(inst.gt_classes[1])] = 20.0  # the second box's class: all foreground
        after = model.chip_box_probs({"image": image, "instances": inst})[0]
    assert torch.equal(after[0], before[0])  # the other class's box is unchanged
    inside = box_pixel_masks(inst.gt_boxes.tensor[1:], 64, 64, PIXEL_CENTRES)[0]
    assert (after[1][inside] >= 250).all() and (before[1][inside] < 250).any()
