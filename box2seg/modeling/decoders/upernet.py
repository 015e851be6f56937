"""UPerNet decoder trunk (Xiao et al., ECCV 2018), the decoder the Box2Seg paper uses, and the y-head.

Trunk: a pyramid pooling module (PPM, bins 1/2/3/6) on the last backbone stage gives the top FPN level;
a top-down FPN adds it into 1x1 lateral projections of the other stages, each level is smoothed by a 3x3
conv, all levels are upsampled to the finest stage (stride 4) and concatenated, and a 3x3 conv fuses them
to ``channels`` maps. Branch heads put an output conv on it (``faithful`` mode: each branch has its own
trunk) or a light tower on one shared trunk (``shared`` mode); see ``decoders/registry.py``.

Norm: "GN" by default. Box2Seg trains with a few large crops per device (and on CPU with batch 1-2),
where BN statistics are noisy, and the PPM's 1x1 bin has a single value per channel and image, which
train-mode BN cannot normalise at batch size 1. GN does not depend on the batch; "BN"/"SyncBN" remain
available for large-batch multi-GPU runs.
"""
import math
from typing import Dict, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from detectron2.config import configurable
from detectron2.layers import Conv2d, ShapeSpec, get_norm
from detectron2.modeling import SEM_SEG_HEADS_REGISTRY
import fvcore.nn.weight_init as weight_init

__all__ = [
    "DECODER_MODES",
    "SHARED_FEATURE",
    "BranchHead",
    "LightTower",
    "UPerNetHead",
    "UPerNetTrunk",
    "decoder_mode",
    "trunk_kwargs_from_config",
]

DECODER_MODES = ("faithful", "shared")
# In "shared" mode the heads read the shared trunk's output under this feature name.
SHARED_FEATURE = "upernet"


def _pooled_norm(norm, channels):
    """Norm for the PPM's pooled maps. The 1x1 bin has one value per channel per image, so GN needs at
    least two channels per group there (GN(32, 32) cannot normalise it); other norms are unchanged."""
    if norm == "GN":
        return nn.GroupNorm(math.gcd(32, max(channels // 2, 1)), channels)
    return get_norm(norm, channels)


def _conv_norm_act(in_channels, out_channels, kernel_size, norm, pooled=False):
    conv = Conv2d(
        in_channels,
        out_channels,
        kernel_size=kernel_size,
        padding=kernel_size // 2,
        bias=not norm,
        norm=_pooled_norm(norm, out_channels) if pooled else get_norm(norm, out_channels),
        activation=nn.ReLU(inplace=True),
    )
    weight_init.c2_msra_fill(conv)
    return conv


def _resize(x, size):
    return x if tuple(x.shape[-2:]) == tuple(size) else F.interpolate(x, size=size, mode="bilinear",
                                                                      align_corners=False)


class UPerNetTrunk(nn.Module):
    """PPM + FPN fusion of ``in_features`` to one (N, channels, H/s, W/s) map, s = finest stride."""

    def __init__(
        self,
        input_shape: Dict[str, ShapeSpec],
        *,
        in_features: Sequence[str],
        channels: int = 256,
        pool_scales: Sequence[int] = (1, 2, 3, 6),
        norm: str = "GN",
    ):
        super().__init__()
        in_features = list(in_features)
        missing = [f for f in in_features if f not in input_shape]
        if not in_features or missing:
            raise ValueError(f"UPerNet in_features {in_features}: {missing or 'none'} not among the backbone "
                             f"outputs {sorted(input_shape)}")
        # finest first, coarsest (the PPM input) last
        in_features = sorted(in_features, key=lambda f: input_shape[f].stride)
        if norm == "GN" and channels % 32:
            raise ValueError(f"UPerNet channels={channels} must be a multiple of 32 with GN (32 groups)")
        if not pool_scales:
            raise ValueError("UPerNet pool_scales must not be empty")
        self.in_features = in_features
        self.channels = channels
        self.common_stride = input_shape[in_features[0]].stride

        top_channels = input_shape[in_features[-1]].channels
        self.pool_scales = tuple(int(s) for s in pool_scales)
        self.ppm = nn.ModuleList(
            nn.Sequential(nn.AdaptiveAvgPool2d(s), _conv_norm_act(top_channels, channels, 1, norm, pooled=True))
            for s in self.pool_scales
        )
        self.ppm_bottleneck = _conv_norm_act(top_channels + len(self.pool_scales) * channels, channels, 3, norm)
        self.lateral_convs = nn.ModuleList(
            _conv_norm_act(input_shape[f].channels, channels, 1, norm) for f in in_features[:-1]
        )
        self.fpn_convs = nn.ModuleList(_conv_norm_act(channels, channels, 3, norm) for _ in in_features[:-1])
        self.fuse = _conv_norm_act(len(in_features) * channels, channels, 3, norm)

    @property
    def output_shape(self) -> ShapeSpec:
        return ShapeSpec(channels=self.channels, stride=self.common_stride)

    def forward(self, features: Dict[str, torch.Tensor]) -> torch.Tensor:
        top = features[self.in_features[-1]]
        pooled = [_resize(branch(top), top.shape[-2:]) for branch in self.ppm]
        levels = [self.ppm_bottleneck(torch.cat([top] + pooled, dim=1))]
        # top-down pathway: coarse to fine
        laterals = [conv(features[f]) for conv, f in zip(self.lateral_convs, self.in_features[:-1])]
        for i in range(len(laterals) - 1, -1, -1):
            laterals[i] = laterals[i] + _resize(levels[0], laterals[i].shape[-2:])
            levels.insert(0, self.fpn_convs[i](laterals[i]))
        size = levels[0].shape[-2:]
        return self.fuse(torch.cat([levels[0]] + [_resize(x, size) for x in levels[1:]], dim=1))


class LightTower(nn.Sequential):
    """Shared-mode branch head: 3x3 conv + norm + ReLU, then a 3x3 conv to the outputs."""

    def __init__(self, in_channels: int, channels: int, out_channels: int, norm: str = "GN"):
        predictor = Conv2d(channels, out_channels, kernel_size=3, padding=1)
        nn.init.normal_(predictor.weight, std=0.01)
        nn.init.constant_(predictor.bias, 0.0)
        super().__init__(_conv_norm_act(in_channels, channels, 3, norm), predictor)


def decoder_mode(cfg) -> str:
    mode = cfg.MODEL.BOX2SEG.DECODER_MODE
    if mode not in DECODER_MODES:
        raise ValueError(f"MODEL.BOX2SEG.DECODER_MODE must be one of {DECODER_MODES}, got {mode!r}")
    return mode


def trunk_kwargs_from_config(cfg) -> dict:
    ucfg = cfg.MODEL.UPERNET
    return dict(
        in_features=list(ucfg.IN_FEATURES),
        channels=ucfg.CHANNELS,
        pool_scales=tuple(ucfg.POOL_SCALES),
        norm=ucfg.NORM,
    )


class BranchHead(nn.Module):
    """One decoder branch, producing ``out_channels`` maps at the trunk's stride (4).

    faithful: its own ``UPerNetTrunk`` on the backbone features + a 1x1 output conv (UPerNet's
    classifier). shared: reads ``features[SHARED_FEATURE]`` (the shared trunk's output, computed once by
    ``Box2SegDecoders``) through a ``LightTower``.
    """

    def __init__(
        self,
        input_shape: Dict[str, ShapeSpec],
        *,
        out_channels: int,
        mode: str = "faithful",
        in_features: Sequence[str] = ("res2", "res3", "res4", "res5"),
        channels: int = 256,
        pool_scales: Sequence[int] = (1, 2, 3, 6),
        norm: str = "GN",
        tower_channels: int = 128,
    ):
        super().__init__()
        if mode not in DECODER_MODES:
            raise ValueError(f"decoder mode must be one of {DECODER_MODES}, got {mode!r}")
        if out_channels < 1:
            raise ValueError(f"{type(self).__name__}: out_channels must be >= 1, got {out_channels}")
        self.mode = mode
        self.out_channels = out_channels
        if mode == "faithful":
            self.trunk = UPerNetTrunk(input_shape, in_features=in_features, channels=channels,
                                      pool_scales=pool_scales, norm=norm)
            self.predictor = Conv2d(channels, out_channels, kernel_size=1)
            nn.init.normal_(self.predictor.weight, std=0.01)
            nn.init.constant_(self.predictor.bias, 0.0)
            self.common_stride = self.trunk.common_stride
        else:
            if SHARED_FEATURE not in input_shape:
                raise ValueError(
                    f"{type(self).__name__} in 'shared' decoder mode reads the shared UPerNet trunk's output "
                    f"'{SHARED_FEATURE}', got features {sorted(input_shape)}: build it through "
                    "box2seg.modeling.decoders.build_box2seg_decoders, or use DECODER_MODE 'faithful'"
                )
            self.trunk = None
            self.predictor = LightTower(input_shape[SHARED_FEATURE].channels, tower_channels, out_channels, norm)
            self.common_stride = input_shape[SHARED_FEATURE].stride

    @classmethod
    def _common_config(cls, cfg):
        kwargs = trunk_kwargs_from_config(cfg)
        kwargs.update(mode=decoder_mode(cfg), tower_channels=cfg.MODEL.UPERNET.TOWER_CHANNELS)
        return kwargs

    def layers(self, features: Dict[str, torch.Tensor]) -> torch.Tensor:
        """(N, out_channels, H/4, W/4) raw outputs (logits / embeddings)."""
        x = self.trunk(features) if self.trunk is not None else features[SHARED_FEATURE]
        return self.predictor(x)

    def forward(self, features: Dict[str, torch.Tensor]) -> torch.Tensor:
        return self.layers(features)


@SEM_SEG_HEADS_REGISTRY.register()
class UPerNetHead(BranchHead):
    """y-decoder: (N, L+1, H/4, W/4) class logits from ``layers()``.

    ``forward(features, targets)`` follows detectron2's SemanticSegmentor contract (cross-entropy on
    upsampled logits in training, full-resolution logits at inference), so the head also works in a stock
    fully supervised SemanticSegmentor (faithful mode). Box2Seg's meta-arch uses ``layers()``.
    """

    @configurable
    def __init__(
        self,
        input_shape: Dict[str, ShapeSpec],
        *,
        num_classes: int,
        ignore_value: int = 255,
        loss_weight: float = 1.0,
        **kwargs,
    ):
        super().__init__(input_shape, out_channels=num_classes, **kwargs)
        self.num_classes = num_classes
        self.ignore_value = ignore_value
        self.loss_weight = loss_weight

    @classmethod
    def from_config(cls, cfg, input_shape):
        return dict(
            input_shape=input_shape,
            num_classes=cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES,
            ignore_value=cfg.MODEL.SEM_SEG_HEAD.IGNORE_VALUE,
            loss_weight=cfg.MODEL.SEM_SEG_HEAD.LOSS_WEIGHT,
            **cls._common_config(cfg),
        )

    def forward(self, features: Dict[str, torch.Tensor], targets: Optional[torch.Tensor] = None):
        x = F.interpolate(self.layers(features), scale_factor=self.common_stride, mode="bilinear",
                          align_corners=False)
        if self.training:
            if targets is None:
                raise ValueError("UPerNetHead in training mode needs sem_seg targets")
            loss = F.cross_entropy(x, targets, reduction="mean", ignore_index=self.ignore_value)
            return None, {"loss_sem_seg": loss * self.loss_weight}
        return x, {}
