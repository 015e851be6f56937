"""Backbones registered in detectron2's BACKBONE_REGISTRY (by import)."""
from .efficientnet_lite import (  # noqa: F401
    EfficientNetLite0Backbone,
    build_efficientnet_lite0_backbone,
    build_efficientnet_lite0_fpn_backbone,
    load_wheel_weights,
    wheel_weights_path,
)
