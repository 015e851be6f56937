"""beta-decoder: per-pixel embeddings (dimension MODEL.BOX2SEG.EMBEDDING_DIM, 64 by default).

Outputs (N, D, H/4, W/4) raw embeddings; the affinity loss compares them by cosine similarity, so no
normalisation is applied here (the loss L2-normalises the sampled pixels only).
"""
from typing import Dict

from detectron2.config import configurable
from detectron2.layers import ShapeSpec

from .registry import EMBEDDING_HEAD_REGISTRY
from .upernet import BranchHead

__all__ = ["UPerNetEmbeddingHead"]


@EMBEDDING_HEAD_REGISTRY.register()
class UPerNetEmbeddingHead(BranchHead):
    """UPerNet (faithful) or light tower on the shared trunk (shared) -> D-dimensional embeddings."""

    @configurable
    def __init__(self, input_shape: Dict[str, ShapeSpec], *, embedding_dim: int = 64, **kwargs):
        super().__init__(input_shape, out_channels=embedding_dim, **kwargs)
        self.embedding_dim = embedding_dim

    @classmethod
    def from_config(cls, cfg, input_shape):
        return dict(input_shape=input_shape, embedding_dim=cfg.MODEL.BOX2SEG.EMBEDDING_DIM,
                    **cls._common_config(cfg))
