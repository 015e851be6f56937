"""UPerNet trunk and the Box2Seg y/alpha/beta decoders in both decoder modes."""
import box2seg  # noqa: F401  (compat fixes before any detectron2 import)
import pytest
import torch
from torch import nn

from detectron2.layers import ShapeSpec
from detectron2.modeling import SEM_SEG_HEADS_REGISTRY, build_sem_seg_head

from box2seg.engine import setup_cfg
from box2seg.modeling.decoders import (
    ATTENTION_HEAD_REGISTRY,
    EMBEDDING_HEAD_REGISTRY,
    Box2SegDecoders,
    UPerNetTrunk,
    build_box2seg_decoders,
)

# EfficientNet-Lite0's res2..res5
SHAPES = {
    "res2": ShapeSpec(channels=24, stride=4),
    "res3": ShapeSpec(channels=40, stride=8),
    "res4": ShapeSpec(channels=112, stride=16),
    "res5": ShapeSpec(channels=320, stride=32),
}
L = 5


def _cfg(mode, channels=64, tower=32, dim=16):
    cfg = setup_cfg(freeze=False)
    cfg.MODEL.SEM_SEG_HEAD.NAME = "UPerNetHead"
    cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES = L + 1
    cfg.MODEL.BOX2SEG.DECODER_MODE = mode
    cfg.MODEL.UPERNET.CHANNELS = channels
    cfg.MODEL.UPERNET.TOWER_CHANNELS = tower
    cfg.MODEL.BOX2SEG.EMBEDDING_DIM = dim
    return cfg


def _features(n, h, w):
    torch.manual_seed(0)
    return {k: torch.randn(n, s.channels, h // s.stride, w // s.stride) for k, s in SHAPES.items()}


def _params(module):
    return sum(p.numel() for p in module.parameters())


def test_registries_contain_heads():
    assert "UPerNetHead" in SEM_SEG_HEADS_REGISTRY
    assert "UPerNetAttentionHead" in ATTENTION_HEAD_REGISTRY
    assert "UPerNetEmbeddingHead" in EMBEDDING_HEAD_REGISTRY


def test_default_config():
    cfg = setup_cfg(freeze=False)
    assert cfg.MODEL.BOX2SEG.DECODER_MODE == "faithful" and cfg.MODEL.BOX2SEG.EMBEDDING_DIM == 64
    assert list(cfg.MODEL.UPERNET.POOL_SCALES) == [1, 2, 3, 6] and cfg.MODEL.UPERNET.NORM == "GN"


@pytest.mark.parametrize("mode", ["faithful", "shared"])
@pytest.mark.parametrize("size", [(64, 64), (96, 128)])
def test_output_shapes(mode, size):
    decoders = build_box2seg_decoders(_cfg(mode), SHAPES)
    assert isinstance(decoders, Box2SegDecoders) and decoders.mode == mode
    h, w = size
    y, alpha, beta = decoders(_features(2, h, w))
    assert tuple(y.shape) == (2, L + 1, h // 4, w // 4)
    assert tuple(alpha.shape) == (2, L, h // 4, w // 4)
    assert tuple(beta.shape) == (2, 16, h // 4, w // 4)
    assert torch.isfinite(y).all() and torch.isfinite(alpha).all() and torch.isfinite(beta).all()


def test_trunk_handles_odd_sizes_and_batch_one_training():
    trunk = UPerNetTrunk(SHAPES, in_features=list(SHAPES), channels=64).train()
    # sizes that are not multiples of 32 (no padding) and the 1x1 PPM bin at batch size 1 (GN, not BN)
    feats = {"res2": torch.randn(1, 24, 25, 33), "res3": torch.randn(1, 40, 13, 17),
             "res4": torch.randn(1, 112, 7, 9), "res5": torch.randn(1, 320, 4, 5)}
    assert tuple(trunk(feats).shape) == (1, 64, 25, 33)


@pytest.mark.parametrize("mode", ["faithful", "shared"])
@pytest.mark.parametrize("branch", ["y", "beta"])
def test_single_branch_paths_run_only_their_branch(mode, branch):
    decoders = build_box2seg_decoders(_cfg(mode), SHAPES)
    heads = {"y": decoders.y_head, "alpha": decoders.alpha_head, "beta": decoders.beta_head}
    ran = []
    for name, head in heads.items():
        head.predictor.register_forward_pre_hook(lambda m, inp, name=name: ran.append(name))
    feats = _features(1, 64, 64)
    out = decoders.forward_y(feats) if branch == "y" else decoders.forward_beta(feats)
    assert ran == [branch]
    out.square().mean().backward()
    for name, head in heads.items():
        grads = [p.grad for p in head.parameters()]
        if name == branch:
            assert all(g is not None for g in grads), name
        else:
            assert all(g is None for g in grads), name
    if mode == "shared":
        assert all(p.grad is not None for p in decoders.trunk.parameters())
    expected = (1, L + 1, 16, 16) if branch == "y" else (1, 16, 16, 16)
    assert tuple(out.shape) == expected


def test_faithful_is_three_upernets_shared_is_one():
    cfg = _cfg("faithful", channels=256, tower=128, dim=64)
    one = _params(UPerNetTrunk(SHAPES, in_features=list(SHAPES), channels=256))
    faithful = build_box2seg_decoders(cfg, SHAPES)
    assert faithful.trunk is None
    assert all(h.trunk is not None for h in (faithful.y_head, faithful.alpha_head, faithful.beta_head))
    assert 2.95 < _params(faithful) / one < 3.05
    cfg.MODEL.BOX2SEG.DECODER_MODE = "shared"
    shared = build_box2seg_decoders(cfg, SHAPES)
    assert _params(shared.trunk) == one
    assert all(h.trunk is None for h in (shared.y_head, shared.alpha_head, shared.beta_head))
    for head in (shared.y_head, shared.alpha_head, shared.beta_head):
        convs = [m for m in head.modules() if isinstance(m, nn.Conv2d)]
        assert len(convs) == 2 and all(c.kernel_size == (3, 3) for c in convs)
    assert _params(shared) < 0.5 * _params(faithful)


def test_y_head_follows_detectron2_sem_seg_contract():
    head = build_sem_seg_head(_cfg("faithful"), SHAPES)
    feats = _features(2, 64, 96)
    head.train()
    targets = torch.randint(0, L + 1, (2, 64, 96))
    targets[:, :4] = 255
    none, losses = head(feats, targets)
    assert none is None and set(losses) == {"loss_sem_seg"} and torch.isfinite(losses["loss_sem_seg"])
    head.eval()
    with torch.no_grad():
        logits, empty = head(feats)
    assert tuple(logits.shape) == (2, L + 1, 64, 96) and empty == {}


def test_config_errors():
    cfg = _cfg("both")
    with pytest.raises(ValueError, match="DECODER_MODE"):
        build_box2seg_decoders(cfg, SHAPES)
    # a shared-mode head needs the shared trunk's output, not backbone features
    with pytest.raises(ValueError, match="shared"):
        build_sem_seg_head(_cfg("shared"), SHAPES)
    cfg = _cfg("faithful", channels=48)
    with pytest.raises(ValueError, match="multiple of 32"):
        build_box2seg_decoders(cfg, SHAPES)
    cfg = _cfg("faithful")
    cfg.MODEL.UPERNET.IN_FEATURES = ["p2", "res5"]
    with pytest.raises(ValueError, match="p2"):
        build_box2seg_decoders(cfg, SHAPES)
    with pytest.raises(ValueError, match="unknown decoder branches"):
        build_box2seg_decoders(_cfg("shared"), SHAPES).forward_branches(_features(1, 64, 64), ("gamma",))


def test_isolated_shared_trunk_learns_only_from_y():
    cfg = _cfg("shared")
    cfg.MODEL.BOX2SEG.ISOLATE_SHARED_TRUNK = True
    decoders = build_box2seg_decoders(cfg, SHAPES)
    feats = _features(1, 64, 64)
    out = decoders.forward_branches(feats, ("alpha", "beta"))
    (out["alpha"].square().mean() + out["beta"].square().mean()).backward()
    assert all(p.grad is None for p in decoders.trunk.parameters())  # attention and embedding losses stop here
    assert all(p.grad is not None for p in decoders.alpha_head.parameters())
    decoders.forward_y(feats).square().mean().backward()
    assert all(p.grad is not None for p in decoders.trunk.parameters())
    cfg.MODEL.BOX2SEG.DECODER_MODE = "faithful"
    with pytest.raises(ValueError, match="ISOLATE_SHARED_TRUNK"):
        build_box2seg_decoders(cfg, SHAPES)
