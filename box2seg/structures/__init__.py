"""Box and mask geometry shared by data, modeling and evaluation (the ground floor: imports nothing of
box2seg). Boxes are XYXY_ABS; which pixels a box covers is always one of two named rules."""
from .boxes import (
    PIXEL_CENTRES,
    PIXEL_RULES,
    PIXELS_TOUCHED,
    annotation_boxes,
    box_areas,
    box_pixel_masks,
    box_union_mask,
    ellipse_masks,
    pixel_extents,
    record_boxes,
)
from .chips import (
    box_coordinates,
    boxes_in_chip,
    boxes_in_own_chips,
    chip_regions,
    crop_chips,
    ellipse_prior,
    flip_boxes_horizontally,
    paste_chip_probs,
    sample_label_chip,
)
from .masks import crop_to_extent, decode_segmentation, encode_rle, paste_in_image, segmentation_to_rle

__all__ = [
    "PIXEL_CENTRES",
    "PIXELS_TOUCHED",
    "PIXEL_RULES",
    "pixel_extents",
    "box_pixel_masks",
    "box_union_mask",
    "ellipse_masks",
    "box_areas",
    "record_boxes",
    "annotation_boxes",
    "encode_rle",
    "segmentation_to_rle",
    "decode_segmentation",
    "crop_to_extent",
    "paste_in_image",
    "chip_regions",
    "boxes_in_chip",
    "crop_chips",
    "paste_chip_probs",
    "sample_label_chip",
    "flip_boxes_horizontally",
    "boxes_in_own_chips",
    "ellipse_prior",
    "box_coordinates",
]
