"""Evaluation: semantic mIoU goes through detectron2's SemSegEvaluator unchanged; this package adds the
per-instance mask IoU of box-conditioned masks where true masks exist."""
from .instance_iou import BoxMaskIoUEvaluator, summarize_instance_ious

__all__ = ["BoxMaskIoUEvaluator", "summarize_instance_ious"]
