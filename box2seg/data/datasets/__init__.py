"""Box-annotated datasets (COCO format, PASCAL VOC 2012, Open Images), registered the detectron2 way."""
from .coco import load_coco_boxes, parse_coco_spec, register_coco_boxes, register_coco_spec
from .common import (
    DatasetError,
    LoadReport,
    UnknownDatasetError,
    get_dataset_dicts,
    ignore_label_for,
    unknown_dataset_message,
    validate_boxes,
)
from .openimages import load_openimages_boxes, parse_openimages_spec, register_openimages_boxes, register_openimages_spec
from .voc import VOC_CLASSES, load_voc_boxes, register_voc_boxes
from . import builtin as _builtin  # noqa: F401  (registers the standard datasets)
