"""Box2Seg's decoders: UPerNet trunk, y-head (SEM_SEG_HEADS_REGISTRY "UPerNetHead"), alpha-head
(ATTENTION_HEAD_REGISTRY) and beta-head (EMBEDDING_HEAD_REGISTRY), registered by import."""
from .upernet import DECODER_MODES, SHARED_FEATURE, BranchHead, LightTower, UPerNetHead, UPerNetTrunk  # noqa: F401
from .registry import (  # noqa: F401
    ATTENTION_HEAD_REGISTRY,
    BRANCHES,
    EMBEDDING_HEAD_REGISTRY,
    Box2SegDecoders,
    build_attention_head,
    build_box2seg_decoders,
    build_embedding_head,
)
from .attention import UPerNetAttentionHead  # noqa: F401
from .embedding import UPerNetEmbeddingHead  # noqa: F401
