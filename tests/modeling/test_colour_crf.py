"""The colour CRF of chip-mode inference (modeling/colour_crf.py, MODEL.BOX2SEG.CHIPS.CRF): a mask that bleeds
across a colour edge is pulled back onto it, isolated noise is smoothed away, weight 0 changes nothing; in the
model, the CRF moves each box's mask onto its object's colour edge."""
import box2seg  # noqa: F401

import pytest
import torch
from detectron2.modeling import build_model
from detectron2.structures import Boxes, Instances

from box2seg.engine import setup_cfg
from box2seg.modeling.checks import ConfigValueError
from box2seg.modeling.colour_crf import colour_crf

from .test_chip_mode import CHIPS, TINY

CRF = dict(weight=1.0, theta_colour=5.0, theta_space=3.0, window=7, steps=5)


def _two_colour_chip(size=32):
    """(1, 3, S, S) RGB: red left half, blue right half."""
    rgb = torch.zeros((1, 3, size, size))
    rgb[:, 0, :, : size // 2] = 200
    rgb[:, 2, :, size // 2:] = 200
    return rgb


def test_a_mask_bleeding_across_a_colour_edge_is_pulled_back_onto_it():
    size = 32
    prob = torch.full((1, size, size), 0.3)
    prob[:, :, : size // 2] = 0.7
    prob[:, :, size // 2: size // 2 + 3] = 0.55  # the blob's edge three pixels into the blue half
    q = colour_crf(prob, _two_colour_chip(size), **CRF)
    assert ((prob > 0.5) != (torch.arange(size) < size // 2)).any()
    assert torch.equal(q[0] > 0.5, (torch.arange(size) < size // 2).expand(size, size))


def test_isolated_noise_in_a_flat_region_is_smoothed_away_and_weight_zero_changes_nothing():
    prob = torch.full((2, 16, 16), 0.2)
    prob[:, 8, 8] = 0.6
    flat = torch.full((2, 3, 16, 16), 120.0)
    assert (colour_crf(prob, flat, **CRF) < 0.5).all()
    assert torch.allclose(colour_crf(prob, flat, **{**CRF, "weight": 0.0}), prob)
    assert colour_crf(prob[:0], flat[:0], **CRF).shape == (0, 16, 16)
    with pytest.raises(ValueError, match="window"):
        colour_crf(prob, flat, **{**CRF, "window": 4})


def test_config_checks_name_a_bad_crf_value():
    for key, value in (("WINDOW", "6"), ("THETA_COLOUR", "0.0"), ("STEPS", "-1")):
        cfg = setup_cfg(TINY, CHIPS + ["MODEL.BOX2SEG.CHIPS.CRF.ENABLED", "True", f"MODEL.BOX2SEG.CHIPS.CRF.{key}", value])
        with pytest.raises(ConfigValueError, match=key):
            build_model(cfg)


def test_the_crf_moves_each_boxs_mask_onto_its_objects_colour_edge():
    """The chips' probabilities are a blob larger than the object (a stand-in for the decoder's stride-4
    output); with the CRF on, the box masks follow the object's colour edge: higher IoU with it."""
    size, box = 64, [8.0, 8.0, 56.0, 56.0]
    rgb = torch.zeros((3, size, size))
    rgb[1] = 60
    rgb[0, 20:44, 20:44] = 220  # a red square on green, the box's object
    obj = torch.zeros((size, size), dtype=torch.bool)
    obj[20:44, 20:44] = True
    inst = Instances((size, size))
    inst.gt_boxes = Boxes(torch.tensor([box]))
    inst.gt_classes = torch.tensor([0])
    x = {"image": rgb.flip(0).to(torch.uint8), "instances": inst}  # BGR, as the mapper gives it
    ious = {}
    for enabled in (False, True):
        cfg = setup_cfg(TINY, CHIPS + ["MODEL.BOX2SEG.CHIPS.CRF.ENABLED", str(enabled), "MODEL.BOX2SEG.TEST.FLIP", "False"])
        model = build_model(cfg).eval()
        chip = model.chips["size"]
        blob = torch.zeros((1, chip, chip))
        lo, hi = round(chip * 0.3), round(chip * 0.7)  # the square in its chip is [0.33, 0.67] of the side
        blob[:, lo:hi, lo:hi] = 0.8
        blob = torch.nn.functional.avg_pool2d(blob[None], 5, 1, 2)[0].clamp(0.25, 0.8)
        model._forward_chips = lambda image, regions, boxes, blob=blob: blob.expand(len(regions), -1, -1)
        with torch.no_grad():
            (out,) = model([x])
        mask = out["box_masks"][0]
        ious[enabled] = float((mask & obj).sum() / (mask | obj).sum())
    assert ious[True] > ious[False] + 0.05 and ious[True] > 0.9
