"""Every shipped config merges, builds on CPU without downloaded weights and trains one step."""
import glob
import os

import box2seg  # noqa: F401
import pytest
import torch
from detectron2.modeling import build_model
from detectron2.structures import Boxes, Instances

from box2seg.engine import setup_cfg

CONFIG_ROOT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs")


def _load(path):
    return setup_cfg(path, freeze=False)


ALL_CONFIGS = sorted(
    p for p in glob.glob(os.path.join(CONFIG_ROOT, "**", "*.yaml"), recursive=True)
    if not os.path.basename(p).startswith("Base-")
)
# Box2Seg's own configs; the downstream Mask R-CNN configs are built by tests/test_maskrcnn.py.
CONFIGS = [p for p in ALL_CONFIGS if _load(p).MODEL.META_ARCHITECTURE == "Box2Seg"]


def test_every_config_merges():
    assert len(CONFIGS) >= 4
    for path in ALL_CONFIGS:
        _load(path)


def tiny_batch(num_classes, size=64, seed=0):
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
                      "instances": inst, "grabcut_labels": labels, "height": size, "width": size,
                      "chip_box": torch.tensor([4.0, 6.0, 40.0, 50.0]),  # read in chip mode only
                      # each box's own GrabCut mask: read at inference in chip mode with CHIPS.GRABCUT_WEIGHT
                      "grabcut_own_masks": torch.stack([labels == 1, labels == num_classes - 1])})
    return batch


@pytest.mark.parametrize("path", CONFIGS, ids=[os.path.relpath(p, CONFIG_ROOT) for p in CONFIGS])
def test_config_builds_and_trains_one_step(path):
    cfg = _load(path)
    cfg.MODEL.WEIGHTS = ""
    cfg.MODEL.DEVICE = "cpu"
    cfg.MODEL.BOX2SEG.PRETRAIN_ITERS = 0
    cfg.MODEL.BOX2SEG.AFFINITY.NUM_SAMPLES = 64
    torch.manual_seed(0)
    model = build_model(cfg)
    model.train()
    losses = model(tiny_batch(cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES))
    assert set(losses) == {f"loss_{t}" for t in cfg.MODEL.BOX2SEG.LOSS.TERMS}
    total = sum(losses.values())
    assert torch.isfinite(total)
    total.backward()
    # Every parameter of the branches the config's loss terms read (a config may switch branches off).
    heads = {"y": model.decoders.y_head, "alpha": model.decoders.alpha_head, "beta": model.decoders.beta_head}
    modules = [heads[b] for b in model.loss.branches()] + [model.decoders.trunk] * (model.decoders.trunk is not None)
    grads = [p.grad for m in modules for p in m.parameters() if p.requires_grad]
    assert grads and all(g is not None and torch.isfinite(g).all() for g in grads)
    model.eval()
    with torch.no_grad():
        out = model(tiny_batch(cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES)[:1])[0]
    assert out["sem_seg"].shape == (cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES, 64, 64)
    assert out["box_masks"].shape == (2, 64, 64)
