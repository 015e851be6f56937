"""Chip mode: training batches from the chip mapper, box-conditioned inference with one chip per box
(batched, pasted back, never empty), images without boxes, and the error for inputs without boxes."""
import os

import box2seg  # noqa: F401
import numpy as np
import pytest
import torch
from detectron2.data import DatasetCatalog
from detectron2.modeling import build_model
from detectron2.structures import Boxes, Instances
from detectron2.utils.events import EventStorage

from box2seg.data.chip_mapper import ChipDatasetMapper, chip_items, jitter_colours
from box2seg.data.datasets.common import unregister
from box2seg.data.grabcut import (GrabCutSettings, attach_grabcut_files, load_instance_map, own_grabcut_masks,
                                  read_png_stats)
from box2seg.data.mapper import Box2SegDatasetMapper
from box2seg.data.grabcut_job import prepare_dataset
from box2seg.engine import setup_cfg
from box2seg.modeling.box_conditioned import fuse_grabcut, never_empty_masks
from box2seg.structures import PIXEL_CENTRES, box_pixel_masks

TINY = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
                    "configs", "tests", "box2seg_tiny.yaml")
CHIPS = ["MODEL.BOX2SEG.CHIPS.ENABLED", "True", "MODEL.BOX2SEG.CHIPS.SIZE", "64", "INPUT.MIN_SIZE_TEST", "0",
         "MODEL.BOX2SEG.LOSS.TERMS", '["gc", "fg", "bg", "fr", "aff", "proj"]']


@pytest.fixture
def chip_cfg(tiny_coco):
    json_path, image_root = tiny_coco
    name = "chip_tiny"
    cfg = setup_cfg(TINY, CHIPS + ["DATASETS.TRAIN", f"('{name}',)", "DATASETS.TEST", f"('{name}',)",
                                   "MODEL.SEM_SEG_HEAD.NUM_CLASSES", "0"],
                    [f"{name}={json_path}:{image_root}"])
    yield cfg
    unregister(name)


def _records(cfg):
    name = cfg.DATASETS.TRAIN[0]
    records = DatasetCatalog.get(name)
    settings = GrabCutSettings.from_config(cfg)
    prepare_dataset(name, records, settings, workers=0)
    attach_grabcut_files(name, records, settings)
    return records


def _two_box_input():
    """A 64 px random image and two overlapping boxes of classes 0 and 1, for inference."""
    inst = Instances((64, 64))
    inst.gt_boxes = Boxes(torch.tensor([[4.0, 6.0, 40.0, 50.0], [30.0, 10.0, 60.0, 30.0]]))
    inst.gt_classes = torch.tensor([0, 1])
    return inst, torch.randint(0, 255, (3, 64, 64), dtype=torch.uint8)


def test_never_empty_fills_empty_boxes_with_their_most_probable_pixels():
    inside = box_pixel_masks(torch.tensor([[0.0, 0.0, 4.0, 4.0], [4.0, 0.0, 8.0, 4.0], [0.0, 0.0, 0.0, 0.0]]),
                             4, 8, PIXEL_CENTRES)
    probs = torch.zeros((3, 4, 8))
    probs[0, :2] = 0.9  # above the threshold: kept as it is
    probs[1] = torch.arange(32, dtype=torch.float32).reshape(4, 8) / 100  # all below 0.5
    masks, scores, filled = never_empty_masks(probs, inside, 0.5, 0.25)
    assert filled.tolist() == [False, True, False]
    assert masks[0].sum() == 8 and (masks[0] == (probs[0] > 0.5) & inside[0]).all()
    assert masks[1].sum() == 4 and masks[1][3, 4:].all()  # the 4 most probable of its 16 pixels
    assert not masks[2].any() and scores[2] == 0  # a box without pixels stays empty
    assert scores[0] == pytest.approx(0.9)


def test_chip_mapper_centres_the_box_and_marks_outside_the_image_ignore(chip_cfg):
    records = _records(chip_cfg)
    items = chip_items(records)
    assert len(items) == sum(len(r["annotations"]) for r in records)
    mapper = ChipDatasetMapper(chip_cfg, records)
    mapper.scale_jitter = mapper.shift_jitter = 0.0
    mapper.flip = False
    for item in items[:4]:
        out = mapper(item)
        assert out["image"].shape == (3, 64, 64) and out["grabcut_labels"].shape == (64, 64)
        box = out["instances"].gt_boxes.tensor
        centre = box[:, :2].add(box[:, 2:]).div(2)
        # The chip's own box is the one centred with its longer side at 64 / 1.5 px.
        sides = (box[:, 2:] - box[:, :2]).max(1).values
        own = ((centre - 32).abs().max(1).values < 1e-3) & ((sides - 64 / 1.5).abs() < 1e-3)
        assert own.any()
        region = out["chip_region"]
        x_outside = (region[0] + (torch.arange(64) + 0.5) * (region[2] - region[0]) / 64 < 0)
        if x_outside.any():
            assert (out["grabcut_labels"][:, x_outside] == 255).all()


def test_colour_jitter_scales_brightness_contrast_and_saturation():
    chip = torch.randint(60, 200, (3, 16, 16), dtype=torch.uint8)
    assert torch.equal(jitter_colours(chip, (1.0, 1.0, 1.0)), chip)
    brighter = jitter_colours(chip, (1.2, 1.0, 1.0)).float()
    assert float(brighter.mean()) == pytest.approx(float(chip.float().mean()) * 1.2, abs=0.6)
    flat = jitter_colours(chip, (1.0, 0.0, 1.0)).float()
    assert flat.max() - flat.min() <= 1  # contrast 0: every pixel the mean
    grey = jitter_colours(chip, (1.0, 1.0, 0.0)).float()
    assert (grey.max(0).values - grey.min(0).values).max() <= 1  # saturation 0: the channels agree


def test_colour_jitter_changes_only_the_chip_pixels(chip_cfg):
    records = _records(chip_cfg)
    item = chip_items(records)[0]
    plain = ChipDatasetMapper(chip_cfg, records)
    jittered = ChipDatasetMapper(chip_cfg, records)
    jittered.color_jitter = 0.4
    np.random.seed(3)
    a = plain(item)
    np.random.seed(3)  # the same chip region and flip: the jitter draws after them
    b = jittered(item)
    assert not torch.equal(a["image"], b["image"])
    assert torch.equal(a["grabcut_labels"], b["grabcut_labels"])
    assert torch.equal(a["instances"].gt_boxes.tensor, b["instances"].gt_boxes.tensor)


def test_chip_training_step_and_inference(chip_cfg):
    records = _records(chip_cfg)
    mapper = ChipDatasetMapper(chip_cfg, records)
    batch = [mapper(item) for item in chip_items(records)[:3]]
    torch.manual_seed(0)
    model = build_model(chip_cfg)
    assert model.decoders.y_head.predictor[-1].out_channels == 2  # class-agnostic: object vs background
    with EventStorage(5):
        losses = model(batch)
    assert set(losses) == {"loss_gc", "loss_fg", "loss_bg", "loss_fr", "loss_aff", "loss_proj"}
    sum(losses.values()).backward()

    model.eval()
    size = 64
    inst = Instances((size, size))
    inst.gt_boxes = Boxes(torch.tensor([[4.0, 6.0, 40.0, 50.0], [20.0, 10.0, 60.0, 30.0], [0.0, 0.0, 2.0, 1.0]]))
    inst.gt_classes = torch.tensor([0, 2, 1])
    inst.gt_is_crowd = torch.tensor([False, True, False])
    image = torch.randint(0, 255, (3, size, size), dtype=torch.uint8)
    with torch.no_grad():
        (out,) = model([{"image": image, "instances": inst, "height": 2 * size, "width": 2 * size}])
    masks = out["box_masks"]
    assert masks.shape == (3, 128, 128)
    inside = box_pixel_masks(inst.gt_boxes.tensor * 2, 128, 128, PIXEL_CENTRES)
    assert not (masks & ~inside).any()
    assert masks[0].any() and masks[2].any() and not masks[1].any()  # never empty; crowd boxes get none
    assert out["sem_seg"].shape == (chip_cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES, 128, 128)
    painted = out["sem_seg"].argmax(0)
    assert ((painted == 1) == masks[0] & ~masks[2]).all() and ((painted == 2) == masks[2]).all()  # smaller wins
    assert ((out["box_scores"] > 0) == torch.tensor([True, False, True])).all()

    empty = Instances((size, size))
    empty.gt_boxes = Boxes(torch.zeros((0, 4)))
    empty.gt_classes = torch.zeros(0, dtype=torch.long)
    with torch.no_grad():
        (out,) = model([{"image": image, "instances": empty}])
    assert out["box_masks"].shape == (0, size, size) and (out["sem_seg"].argmax(0) == 0).all()
    with pytest.raises(ValueError, match="chip mode"):
        model([{"image": image, "file_name": "x.jpg"}])


def test_own_target_keeps_only_the_chips_own_box_and_its_grabcut_mask(chip_cfg):
    records = _records(chip_cfg)
    cfg = chip_cfg.clone()
    cfg.defrost()
    cfg.MODEL.BOX2SEG.CHIPS.TARGET = "own"
    mapper = ChipDatasetMapper(cfg, records)
    for item in chip_items(records)[:4]:
        out = mapper(item)
        own_class = records[item[0]]["annotations"][item[1]]["category_id"]
        assert len(out["instances"]) == 1 and out["instances"].gt_classes.tolist() == [own_class]
        assert set(out["grabcut_labels"].unique().tolist()) <= {0, own_class + 1, 255}
    cfg.MODEL.BOX2SEG.CHIPS.TARGET = "mine"
    with pytest.raises(ValueError, match="CHIPS.TARGET"):
        ChipDatasetMapper(cfg, records)


def test_coordinate_channels_and_pairwise_term_train_and_predict_with_flips(chip_cfg):
    records = _records(chip_cfg)
    cfg = chip_cfg.clone()
    cfg.defrost()
    cfg.MODEL.BOX2SEG.CHIPS.COORD_CHANNELS = True
    cfg.MODEL.BOX2SEG.CHIPS.TARGET = "own"
    cfg.MODEL.BOX2SEG.LOSS.TERMS = ["gc", "bg", "proj", "pair"]
    cfg.MODEL.BOX2SEG.TEST.FLIP = True
    mapper = ChipDatasetMapper(cfg, records)
    batch = [mapper(item) for item in chip_items(records)[:3]]
    torch.manual_seed(0)
    model = build_model(cfg)
    plain = build_model(chip_cfg)
    def first_lateral(m):  # the (shared or the y-branch's own) UPerNet trunk's finest lateral conv
        return (m.decoders.trunk or m.decoders.y_head.trunk).lateral_convs[0]

    lateral = first_lateral(model)
    assert lateral.in_channels == first_lateral(plain).in_channels + 2  # (u, v)
    with EventStorage(5):
        losses = model(batch)
    assert set(losses) == {"loss_gc", "loss_bg", "loss_proj", "loss_pair"}
    sum(losses.values()).backward()
    assert lateral.weight.grad[:, -2:].abs().sum() > 0  # the coordinates reach the decoder

    model.eval()
    inst, image = _two_box_input()
    with torch.no_grad():
        probs = model.chip_box_probs({"image": image, "instances": inst})[0]
        mirrored = model.chip_box_probs({"image": image.flip(-1), "instances": _mirrored(inst, 64)})[0]
    # With flips averaged, a mirrored image and mirrored boxes give the mirrored probabilities.
    assert (probs.float() - mirrored.flip(-1).float()).abs().max() <= 2  # uint8 x 255 rounding


def _mirrored(inst, width):
    out = Instances(inst.image_size)
    b = inst.gt_boxes.tensor.clone()
    out.gt_boxes = Boxes(torch.stack([width - b[:, 2], b[:, 1], width - b[:, 0], b[:, 3]], 1))
    out.gt_classes = inst.gt_classes
    return out


def test_channels_last_on_cpu_gives_the_same_losses_and_probabilities(chip_cfg):
    """MODEL.DEVICE cpu builds the model in NHWC layout (faster oneDNN convolutions); the numbers must be those
    of the NCHW model with the same weights, in training and at inference."""
    records = _records(chip_cfg)
    batch = [ChipDatasetMapper(chip_cfg, records)(item) for item in chip_items(records)[:3]]
    torch.manual_seed(0)
    fast = build_model(chip_cfg)
    assert chip_cfg.MODEL.DEVICE == "cpu" and fast.memory_format == torch.channels_last
    conv = next(m for m in fast.modules() if isinstance(m, torch.nn.Conv2d))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    plain = type(fast)(**{**type(fast).from_config(chip_cfg), "channels_last": False})
    plain.load_state_dict(fast.state_dict())
    assert plain.memory_format == torch.contiguous_format
    with EventStorage(5):
        torch.manual_seed(1)  # the affinity term samples pixels
        a = fast(batch)
        torch.manual_seed(1)
        b = plain(batch)
    for k in a:
        assert torch.allclose(a[k], b[k], rtol=1e-4, atol=1e-5), k
    fast.eval(), plain.eval()
    inst, image = _two_box_input()
    with torch.no_grad():
        pa = fast.chip_box_probs({"image": image, "instances": inst})[0]
        pb = plain.chip_box_probs({"image": image, "instances": inst})[0]
    assert (pa.float() - pb.float()).abs().max() <= 1  # uint8 x 255 rounding


def test_grabcut_weight_averages_each_boxs_own_grabcut_mask_in(chip_cfg):
    """Test mapper -> model with CHIPS.GRABCUT_WEIGHT: each box's own cached GrabCut mask reaches the model and
    is averaged in before the threshold. At weight 0.6 and threshold 0.5 the GrabCut mask alone decides (0.6 >
    0.5 where it is 1, at most 0.4 where it is 0), so the masks must be GrabCut's own inside each box."""
    probs = torch.tensor([[[0.2, 0.9]]])
    fused = fuse_grabcut(probs, torch.tensor([[[True, False]]]), 0.25)
    assert torch.allclose(fused, torch.tensor([[[0.4, 0.675]]]))
    records = _records(chip_cfg)
    cfg = chip_cfg.clone()
    cfg.defrost()
    cfg.MODEL.BOX2SEG.CHIPS.GRABCUT_WEIGHT = 0.6
    cfg.MODEL.BOX2SEG.CHIPS.THRESHOLD = 0.5
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    record = max(records, key=lambda r: len(r["annotations"]))
    x = Box2SegDatasetMapper(cfg, is_train=False)(record)
    own = own_grabcut_masks(load_instance_map(record), read_png_stats(record["grabcut_file_name"]),
                            len(record["annotations"]))
    assert torch.equal(x["grabcut_own_masks"], torch.from_numpy(own))
    uncached = {k: v for k, v in record.items() if k != "grabcut_file_name"}  # computed as prepare-grabcut would
    assert torch.equal(Box2SegDatasetMapper(cfg, is_train=False)(uncached)["grabcut_own_masks"], x["grabcut_own_masks"])
    with torch.no_grad():
        (out,) = model([x])
    inside = box_pixel_masks(x["instances"].gt_boxes.tensor, record["height"], record["width"], PIXEL_CENTRES)
    checked = [k for k in range(len(own)) if (x["grabcut_own_masks"][k] & inside[k]).any()]  # else: fallback fill
    assert checked
    for k in checked:
        assert torch.equal(out["box_masks"][k], x["grabcut_own_masks"][k] & inside[k])
    plain = build_model(chip_cfg).eval()
    plain.load_state_dict(model.state_dict())
    with torch.no_grad():
        (alone,) = plain([x])  # weight 0: the model's own masks, not GrabCut's
    assert not torch.equal(alone["box_masks"], out["box_masks"])
    del x["grabcut_own_masks"]
    with pytest.raises(ValueError, match="GRABCUT_WEIGHT"):
        model([x])
