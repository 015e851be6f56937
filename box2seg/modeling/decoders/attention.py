"""alpha-decoder: per-class attention logits for the L foreground classes (sigmoid gives alpha in [0,1]).

Outputs (N, L, H/4, W/4) pre-sigmoid logits; the meta-architecture takes the sigmoid of the present
classes' channels only, after upsampling them (``Box2Seg._present_attention``), and the losses read alpha
in [0, 1] (L_fg multiplies it into log y; L_fr averages it over the box). With L = 601 (Open Images)
that is 601 maps at stride 4: about 39 MB per 512x512 image in fp32, acceptable, but the tensor is
L/(L+1) of the y-logits' size again.
"""
from typing import Dict

from detectron2.config import configurable
from detectron2.layers import ShapeSpec

from .registry import ATTENTION_HEAD_REGISTRY
from .upernet import BranchHead

__all__ = ["UPerNetAttentionHead"]


@ATTENTION_HEAD_REGISTRY.register()
class UPerNetAttentionHead(BranchHead):
    """UPerNet (faithful) or light tower on the shared trunk (shared) -> L attention logits."""

    @configurable
    def __init__(self, input_shape: Dict[str, ShapeSpec], *, num_classes: int, **kwargs):
        """``num_classes`` = L, the foreground classes (background has no attention map)."""
        super().__init__(input_shape, out_channels=num_classes, **kwargs)
        self.num_classes = num_classes

    @classmethod
    def from_config(cls, cfg, input_shape):
        num_classes = cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES - 1
        if num_classes < 1:
            raise ValueError(f"MODEL.SEM_SEG_HEAD.NUM_CLASSES = L + 1 must be >= 2 (background + at least one "
                             f"class), got {cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES}")
        return dict(input_shape=input_shape, num_classes=num_classes, **cls._common_config(cfg))
