"""Registries for Box2Seg's alpha- and beta-decoders and the three-branch decoder module (their config
keys live in box2seg/config.py with every other key).

The y-decoder lives in detectron2's SEM_SEG_HEADS_REGISTRY (MODEL.SEM_SEG_HEAD.NAME, "UPerNetHead");
the alpha-decoder in ATTENTION_HEAD_REGISTRY (MODEL.BOX2SEG.ATTENTION_HEAD_NAME) and the beta-decoder in
EMBEDDING_HEAD_REGISTRY (MODEL.BOX2SEG.EMBEDDING_HEAD_NAME). Every head is built as
``REGISTRY.get(name)(cfg, input_shape)`` and maps a feature dict to one stride-4 tensor via ``layers()``.

MODEL.BOX2SEG.DECODER_MODE picks the layout (the paper's vs. a cheaper one; results must name it):
- "faithful": three independent UPerNets, each head gets the backbone features;
- "shared": one UPerNet trunk computed once, each head gets {"upernet": trunk output} and is a light
  tower of two 3x3 convs.
"""
from typing import Dict, Optional, Sequence

import torch
from torch import nn

from detectron2.config import configurable
from detectron2.layers import ShapeSpec
from detectron2.modeling import build_sem_seg_head
from detectron2.utils.registry import Registry

from .upernet import SHARED_FEATURE, UPerNetTrunk, decoder_mode, trunk_kwargs_from_config

__all__ = [
    "ATTENTION_HEAD_REGISTRY",
    "BRANCHES",
    "EMBEDDING_HEAD_REGISTRY",
    "Box2SegDecoders",
    "build_attention_head",
    "build_box2seg_decoders",
    "build_embedding_head",
]

ATTENTION_HEAD_REGISTRY = Registry("ATTENTION_HEAD")
ATTENTION_HEAD_REGISTRY.__doc__ = """
Box2Seg alpha-decoders: called as ``obj(cfg, input_shape)``; ``layers(features)`` returns (N, L, h, w)
pre-sigmoid attention logits for the L foreground classes.
"""

EMBEDDING_HEAD_REGISTRY = Registry("EMBEDDING_HEAD")
EMBEDDING_HEAD_REGISTRY.__doc__ = """
Box2Seg beta-decoders: called as ``obj(cfg, input_shape)``; ``layers(features)`` returns (N, D, h, w)
per-pixel embeddings.
"""

BRANCHES = ("y", "alpha", "beta")


def build_attention_head(cfg, input_shape: Dict[str, ShapeSpec]) -> nn.Module:
    return ATTENTION_HEAD_REGISTRY.get(cfg.MODEL.BOX2SEG.ATTENTION_HEAD_NAME)(cfg, input_shape)


def build_embedding_head(cfg, input_shape: Dict[str, ShapeSpec]) -> nn.Module:
    return EMBEDDING_HEAD_REGISTRY.get(cfg.MODEL.BOX2SEG.EMBEDDING_HEAD_NAME)(cfg, input_shape)


class Box2SegDecoders(nn.Module):
    """The y-, alpha- and beta-decoders behind one module.

    ``forward(features)`` -> (y_logits (N, L+1, h, w), alpha_logits (N, L, h, w), beta (N, D, h, w)),
    h, w = H/4, W/4. ``forward_y`` (inference) and ``forward_beta`` (embedding pre-training) run only their
    branch (plus the shared trunk in "shared" mode); ``forward_branches`` runs any subset.
    """

    @configurable
    def __init__(self, *, y_head: nn.Module, alpha_head: nn.Module, beta_head: nn.Module,
                 trunk: Optional[UPerNetTrunk] = None, isolate_trunk: bool = False):
        """``isolate_trunk`` (shared mode): the alpha and beta towers read the trunk's output detached, so their
        losses cannot reshape the features y is predicted from (MODEL.BOX2SEG.ISOLATE_SHARED_TRUNK)."""
        super().__init__()
        if isolate_trunk and trunk is None:
            raise ValueError("MODEL.BOX2SEG.ISOLATE_SHARED_TRUNK needs DECODER_MODE 'shared' (a trunk to isolate)")
        self.isolate_trunk = bool(isolate_trunk)
        for name, head in (("y", y_head), ("alpha", alpha_head), ("beta", beta_head)):
            if not callable(getattr(head, "layers", None)):
                raise TypeError(f"the {name}-decoder {type(head).__name__} has no layers(features) method "
                                "returning stride-4 outputs")
        self.trunk = trunk
        self.y_head = y_head
        self.alpha_head = alpha_head
        self.beta_head = beta_head

    @classmethod
    def from_config(cls, cfg, input_shape: Dict[str, ShapeSpec]):
        trunk = None
        head_shape = input_shape
        if decoder_mode(cfg) == "shared":
            trunk = UPerNetTrunk(input_shape, **trunk_kwargs_from_config(cfg))
            head_shape = {SHARED_FEATURE: trunk.output_shape}
        return dict(
            trunk=trunk,
            isolate_trunk=cfg.MODEL.BOX2SEG.ISOLATE_SHARED_TRUNK,
            y_head=build_sem_seg_head(cfg, head_shape),
            alpha_head=build_attention_head(cfg, head_shape),
            beta_head=build_embedding_head(cfg, head_shape),
        )

    @property
    def mode(self) -> str:
        return "faithful" if self.trunk is None else "shared"

    def forward_branches(self, features: Dict[str, torch.Tensor], branches: Sequence[str] = BRANCHES):
        """{branch: output} for the requested branches; the other branches do not run."""
        unknown = [b for b in branches if b not in BRANCHES]
        if unknown:
            raise ValueError(f"unknown decoder branches {unknown}; choose from {BRANCHES}")
        heads = {"y": self.y_head, "alpha": self.alpha_head, "beta": self.beta_head}
        if self.trunk is None:
            return {b: heads[b].layers(features) for b in branches}
        shared = self.trunk(features)
        isolated = {SHARED_FEATURE: shared.detach() if self.isolate_trunk else shared}
        return {b: heads[b].layers({SHARED_FEATURE: shared} if b == "y" else isolated) for b in branches}

    def forward(self, features: Dict[str, torch.Tensor]):
        out = self.forward_branches(features, BRANCHES)
        return out["y"], out["alpha"], out["beta"]

    def forward_y(self, features: Dict[str, torch.Tensor]) -> torch.Tensor:
        return self.forward_branches(features, ("y",))["y"]

    def forward_alpha(self, features: Dict[str, torch.Tensor]) -> torch.Tensor:
        return self.forward_branches(features, ("alpha",))["alpha"]

    def forward_beta(self, features: Dict[str, torch.Tensor]) -> torch.Tensor:
        return self.forward_branches(features, ("beta",))["beta"]


def build_box2seg_decoders(cfg, input_shape: Dict[str, ShapeSpec]) -> Box2SegDecoders:
    """``input_shape`` = ``backbone.output_shape()``."""
    return Box2SegDecoders(cfg, input_shape)
