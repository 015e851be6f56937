"""Box2Seg modeling: backbone, decoders, the meta-architecture, and the box-derived targets and losses
(``box2seg.modeling.targets``, ``box2seg.modeling.losses``)."""

from . import backbone, decoders  # noqa: F401  (register backbones, heads)
from .meta_arch import Box2Seg  # noqa: F401  (registers META_ARCH "Box2Seg")
