"""What ``box2seg visualize`` draws: one PNG grid per dataset image, to check what a Box2Seg model learnt
and what it hands to Mask R-CNN: the image with its boxes, the pseudo-masks (read from a pseudo-mask COCO
JSON, :class:`PseudoMasks`, or computed by the model), and, for a trained model, its semantic prediction and
each boxed class's attention map sigmoid(alpha), upsampled to the image. The drawing itself is
:mod:`box2seg.utils.visualizer`'s; per-box masks are shown as they paint (``paint_box_masks``).
"""
import json
import logging
import os

import cv2
import numpy as np
import torch
from tqdm import tqdm

from .data.cache import safe_name
from .data.images import ImageReadError, read_image
from .evaluation.mask_scoring import paint_box_masks
from .structures import decode_segmentation, record_boxes
from .utils.visualizer import (
    attention_panel,
    caption,
    draw_boxes,
    draw_instances,
    make_grid,
    overlay_labels,
    palette,
    write_png,
)

__all__ = ["PseudoMasks", "load_pseudo_masks", "record_panels", "visualize_records"]

logger = logging.getLogger(__name__)


class PseudoMasks:
    """A pseudo-mask COCO JSON indexed for lookup by dataset record.

    Records are matched by image id when the JSON image with that id has the same file name, else by
    file name alone (so a JSON written for a copy of the images still matches).
    """

    def __init__(self, json_file, thing_classes):
        self.json_file = json_file
        try:
            with open(json_file) as f:
                data = json.load(f)
        except FileNotFoundError:
            raise FileNotFoundError(f"pseudo-mask file {json_file} does not exist") from None
        except json.JSONDecodeError as e:
            raise ValueError(f"pseudo-mask file {json_file} is not valid JSON: {e}") from None
        for key in ("images", "annotations", "categories"):
            if not isinstance(data.get(key), list):
                raise ValueError(f"pseudo-mask file {json_file}: missing or malformed '{key}' list")
        # JSON category id -> the dataset's contiguous id: by name when the dataset knows it, else by
        # position among the JSON's sorted ids.
        cats = sorted(data["categories"], key=lambda c: c["id"])
        by_name = {n: i for i, n in enumerate(thing_classes)}
        self.category_to_contiguous = {c["id"]: by_name.get(c.get("name"), i) for i, c in enumerate(cats)}
        self.images_by_id = {img["id"]: img for img in data["images"]}
        names = {}
        for img in data["images"]:
            names.setdefault(os.path.basename(img["file_name"]), []).append(img)
        self.images_by_name = {k: v[0] for k, v in names.items() if len(v) == 1}
        self.annotations = {}
        for ann in data["annotations"]:
            self.annotations.setdefault(ann.get("image_id"), []).append(ann)

    def find_image(self, record):
        base = os.path.basename(record["file_name"])
        img = self.images_by_id.get(record.get("image_id"))
        if img is not None and os.path.basename(img["file_name"]) == base:
            return img
        return self.images_by_name.get(base)

    def masks_for(self, record):
        """(masks (N, H, W) bool, classes (N,), boxes (N, 4) xyxy) at the record's size, or None when
        the JSON has no entry for this image. Crowd and mask-less annotations are left out."""
        img = self.find_image(record)
        if img is None:
            return None
        h, w = record["height"], record["width"]
        masks, classes, boxes = [], [], []
        for ann in self.annotations.get(img["id"], []):
            if ann.get("iscrowd", 0) or not ann.get("segmentation"):
                continue
            mask = decode_segmentation(ann["segmentation"], int(img.get("height", h)), int(img.get("width", w)))
            if mask.shape != (h, w):
                raise ValueError(
                    f"pseudo-mask file {self.json_file}: annotation {ann.get('id')!r} of image "
                    f"{img['file_name']!r} is {mask.shape[0]}x{mask.shape[1]}, but the dataset image "
                    f"{record['file_name']} is {h}x{w}"
                )
            x, y, bw, bh = ann["bbox"]
            masks.append(mask)
            classes.append(self.category_to_contiguous.get(ann["category_id"], 0))
            boxes.append([x, y, x + bw, y + bh])
        return (np.asarray(masks, dtype=bool).reshape(-1, h, w), np.asarray(classes, dtype=np.int64),
                np.asarray(boxes, dtype=np.float64).reshape(-1, 4))


def load_pseudo_masks(json_file, thing_classes):
    return PseudoMasks(json_file, thing_classes)


# --------------------------------------------------------------------------------------------------
# Grids


def _scaled(panel, scale):
    if scale == 1.0:
        return panel
    h, w = panel.shape[:2]
    return cv2.resize(panel, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_NEAREST)


def _masks_panel(image, masks, classes, boxes, colours):
    h, w = image.shape[:2]
    return draw_instances(image, paint_box_masks(masks, classes, boxes, h, w), boxes, classes, colours)


def record_panels(record, image, thing_classes, pseudo=None, predictor=None):
    """[(caption, panel)] for one dataset record: boxes, pseudo-masks, prediction, attention maps."""
    colours = palette(len(thing_classes))
    boxes, classes, crowd = record_boxes(record)
    boxes, classes = boxes[~crowd], classes[~crowd]
    panels = [("image + boxes", draw_boxes(image, boxes, classes, colours))]
    output = None
    if predictor is not None:
        output = predictor(image, boxes=boxes, classes=classes)
    if pseudo is not None:
        found = pseudo.masks_for(record)
        if found is None:
            logger.warning(f"{pseudo.json_file} has no entry for image {record['file_name']}")
            panels.append(("pseudo-masks: none", image.copy()))
        else:
            masks, mclasses, mboxes = found
            panels.append(("pseudo-masks", _masks_panel(image, masks, mclasses, mboxes, colours)))
    elif output is not None:
        panels.append(("model masks", _masks_panel(image, output["box_masks"].numpy(), classes, boxes, colours)))
    if output is not None:
        panels.append(("prediction", overlay_labels(image, output["labels"].numpy(), colours)))
        present = np.unique(classes)
        if len(present):
            attention = predictor.attention(image, present).numpy()
            for c, amap in zip(present, attention):
                panels.append((f"alpha: {thing_classes[c]}", attention_panel(image, amap)))
    return panels


def visualize_records(records, thing_classes, output, pseudo=None, predictor=None, columns=4, scale=1.0):
    """One grid per record into ``output/IMAGE_ID.png`` (panels ``scale`` x, ``columns`` per row); an
    unreadable image is logged and skipped. Returns the number of grids written."""
    os.makedirs(output, exist_ok=True)
    written = 0
    with torch.no_grad():
        for record in tqdm(records, desc="visualize", unit="image"):
            try:
                image = read_image(record["file_name"], format="BGR")
            except ImageReadError as e:
                logger.error(f"{e}; skipped")
                continue
            panels = record_panels(record, image, thing_classes, pseudo, predictor)
            grid = make_grid([caption(_scaled(p, scale), text) for text, p in panels], columns)
            write_png(os.path.join(output, f"{safe_name(record['image_id'])}.png"), grid)
            written += 1
    logger.info(f"wrote {written} grid(s) to {output}")
    return written
