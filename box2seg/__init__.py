"""Box2Seg: weakly supervised segmentation from bounding boxes (Kulharia et al., ECCV 2020) on detectron2.

Importing this package first applies the detectron2-v0.6-on-a-modern-stack fixes (``box2seg.compat``),
then registers Box2Seg's components and built-in datasets the detectron2 way, by import.
"""
from . import compat

compat.apply()

__version__ = "0.1.0"

from . import modeling  # noqa: E402,F401  (registers the meta-architecture, backbones and heads)
from .data.datasets import builtin  # noqa: E402,F401  (registers the built-in datasets)
from .data.datasets import shapes  # noqa: E402,F401  (the embedded default: box2seg_shapes_*)
