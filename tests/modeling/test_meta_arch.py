"""Box2Seg inference: output contract, flip / multi-scale test-time augmentation, box-conditioned masks,
attention maps, and the phase switch between embedding pre-training and joint training."""
import os

import box2seg  # noqa: F401
import pytest
import torch
import torch.nn.functional as F
from detectron2.modeling import build_model
from detectron2.structures import Boxes, Instances
from detectron2.utils.events import EventStorage

from box2seg.engine import setup_cfg

TINY = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
                    "configs", "tests", "box2seg_tiny.yaml")


def tiny_batch(num_classes, size=64, seed=0):
    """Two images with two boxes each (classes 0 and L - 1) and GrabCut labels, as the mapper gives them."""
    g = torch.Generator().manual_seed(seed)
    batch = []
    for _ in range(2):
        inst = Instances((size, size))
        inst.gt_boxes = Boxes(torch.tensor([[4.0, 6.0, 40.0, 50.0], [20.0, 10.0, 60.0, 30.0]]))
        inst.gt_classes = torch.tensor([0, num_classes - 2])
        inst.gt_is_crowd = torch.tensor([False, False])
        labels = torch.zeros((size, size), dtype=torch.long)
        labels[12:44, 8:36] = 1
        labels[12:26, 24:56] = num_classes - 1
        labels[:, -3:] = 255
        batch.append({"image": torch.randint(0, 255, (3, size, size), generator=g, dtype=torch.uint8),
                      "instances": inst, "grabcut_labels": labels, "height": size, "width": size})
    return batch


def _model(**overrides):
    cfg = setup_cfg(TINY, [item for key_value in overrides.items() for item in key_value])
    torch.manual_seed(0)
    return build_model(cfg).eval(), cfg


def _plain_probs(model, image):
    x = ((image.float() - model.pixel_mean) / model.pixel_std)[None]
    logits = model.decoders.forward_y(model.backbone(x))
    return torch.softmax(torch.nn.functional.interpolate(logits, size=x.shape[-2:], mode="bilinear"), 1)[0]


def test_flip_tta_averages_the_flipped_pass():
    model, cfg = _model(**{"MODEL.BOX2SEG.TEST.FLIP": True})
    (x,) = tiny_batch(cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES)[:1]
    with torch.no_grad():
        out = model([x])[0]["sem_seg"]
        expected = (_plain_probs(model, x["image"]) + _plain_probs(model, x["image"].flip(-1)).flip(-1)) / 2
    assert torch.allclose(out, expected, atol=1e-5)


def test_multi_scale_outputs_probabilities_at_input_size():
    model, cfg = _model(**{"MODEL.BOX2SEG.TEST.FLIP": True, "MODEL.BOX2SEG.TEST.SCALES": [0.75, 1.0, 1.5]})
    (x,) = tiny_batch(cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES)[:1]
    with torch.no_grad():
        out = model([x])[0]["sem_seg"]
        single = _plain_probs(model, x["image"])
    assert out.shape == (cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES, 64, 64)
    assert torch.allclose(out.sum(0), torch.ones(64, 64), atol=1e-5)
    assert not torch.allclose(out, single, atol=1e-4)  # the other scales contributed


def test_output_resized_to_record_size_and_box_masks_inside_boxes():
    model, cfg = _model()
    (x,) = tiny_batch(cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES)[:1]
    x = dict(x, height=128, width=96)  # the mapper resized a 128x96 original to 64x64
    with torch.no_grad():
        out = model([x])[0]
    assert out["sem_seg"].shape[-2:] == (128, 96)
    masks = out["box_masks"]
    assert masks.shape == (2, 128, 96)
    scaled = x["instances"].gt_boxes.tensor * torch.tensor([96 / 64, 128 / 64, 96 / 64, 128 / 64])
    for mask, (x0, y0, x1, y1) in zip(masks, scaled.tolist()):
        ys, xs = mask.nonzero(as_tuple=True)
        if len(ys):
            assert xs.min() + 0.5 >= x0 and xs.max() + 0.5 <= x1 and ys.min() + 0.5 >= y0 and ys.max() + 0.5 <= y1


def _attention_by_hand(model, image, classes, height, width):
    """What Box2SegPredictor.attention computed before the model had attention_maps (the reference)."""
    x = (image.float() - model.pixel_mean) / model.pixel_std
    h, w = x.shape[-2:]
    x = F.pad(x, (0, (-w) % model.size_divisibility, 0, (-h) % model.size_divisibility))
    alpha = model.decoders.forward_alpha(model.backbone(x[None]))[:, classes]
    alpha = F.interpolate(alpha.float(), size=x.shape[-2:], mode="bilinear", align_corners=False)[..., :h, :w]
    alpha = F.interpolate(alpha, size=(height, width), mode="bilinear", align_corners=False)
    return torch.sigmoid(alpha[0])


def test_attention_maps_match_the_inference_path():
    model, cfg = _model()
    num_classes = cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES - 1
    image = torch.randint(0, 255, (3, 50, 70), generator=torch.Generator().manual_seed(1), dtype=torch.uint8)
    inputs = [{"image": image, "height": 100, "width": 140}]  # not a multiple of 32; resized back up
    with torch.no_grad():
        (maps,) = model.attention_maps(inputs, classes=[[2, 0]])
        expected = _attention_by_hand(model, image, [2, 0], 100, 140)
        (every,) = model.attention_maps(inputs)
    assert maps.shape == (2, 100, 140) and torch.equal(maps, expected)
    assert every.shape == (num_classes, 100, 140) and torch.allclose(every[[2, 0]], maps, atol=1e-6)
    assert 0 <= every.min() and every.max() <= 1


def test_iteration_decides_pretraining_phase():
    model, cfg = _model(**{"MODEL.BOX2SEG.PRETRAIN_ITERS": 2})
    model.train()
    batch = tiny_batch(cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES)
    with EventStorage(start_iter=1):
        assert set(model(batch)) == {"loss_aff_pre"}
    with EventStorage(start_iter=2):
        assert set(model(batch)) == {"loss_gc", "loss_fg", "loss_bg", "loss_fr", "loss_aff"}


def test_attention_terms_start_at_their_iteration():
    model, cfg = _model(**{"MODEL.BOX2SEG.PRETRAIN_ITERS": 1, "MODEL.BOX2SEG.LOSS.ATTENTION_START_ITER": 3})
    model.train()
    batch = tiny_batch(cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES)
    with EventStorage(start_iter=2):
        losses = model(batch)
        assert set(losses) == {"loss_gc", "loss_bg", "loss_aff"}
        sum(losses.values()).backward()
        assert all(p.grad is None for p in model.decoders.alpha_head.parameters())  # branch not evaluated
    with EventStorage(start_iter=3):
        assert set(model(batch)) == {"loss_gc", "loss_fg", "loss_bg", "loss_fr", "loss_aff"}
    model.eval()
    with torch.no_grad():  # no trainer, no iteration: inference is unaffected
        assert "sem_seg" in model(batch[:1])[0]


def test_disabled_terms_skip_their_branches():
    model, cfg = _model(**{"MODEL.BOX2SEG.LOSS.TERMS": ["gc", "bg"]})
    model.train()
    losses = model(tiny_batch(cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES))
    assert set(losses) == {"loss_gc", "loss_bg"}
    sum(losses.values()).backward()
    assert all(p.grad is None for p in model.decoders.alpha_head.parameters())
    assert all(p.grad is None for p in model.decoders.beta_head.parameters())


@pytest.mark.parametrize("classes", [[], [0]])
def test_images_without_boxes_train(classes):
    model, cfg = _model()
    model.train()
    batch = tiny_batch(cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES)
    keep = torch.tensor([c in classes for c in batch[0]["instances"].gt_classes.tolist()])
    batch[0]["instances"] = batch[0]["instances"][keep]
    losses = model(batch)
    total = sum(losses.values())
    assert torch.isfinite(total)
    total.backward()
