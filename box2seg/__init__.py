"""Box2Seg: weakly supervised segmentation from bounding boxes (Kulharia et al., ECCV 2020) on detectron2.

Importing this package first applies the detectron2-v0.6-on-a-modern-stack fixes (``box2seg.compat``),
then registers Box2Seg's components and built-in datasets the detectron2 way, by import.
"""
from . import compat

compat.apply()

__version__ = "0.1.0"
