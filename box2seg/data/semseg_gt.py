"""Semantic ground truth painted from instance masks, for evaluation (SemSegEvaluator) only.

A COCO-format dataset with masks has no semantic label maps; they are painted once per image from the
annotations' polygons / RLE and cached as PNGs, so ``sem_seg_file_name`` works like any other semantic
dataset. Painting rules: background 0, class ``c`` -> ``c + 1``, instances painted in descending mask
area so a smaller object in front of a larger one wins, crowd regions = ignore, and a (non-crowd) box
without a usable mask = ignore over the pixels its box touches (``structures.PIXELS_TOUCHED``: its true
extent is unknown, and a partly covered edge pixel may hold it). Labels are uint8 PNGs when
``ignore_label`` is 255, uint16 PNGs when it is 65535.
"""
import hashlib
import json
import logging
import os

import cv2
import numpy as np
import pycocotools.mask as mask_util
from PIL import Image
from tqdm import tqdm

from ..structures import PIXELS_TOUCHED, annotation_boxes, box_areas, pixel_extents, segmentation_to_rle
from .cache import annotations_hash, atomic_path, cache_root, safe_name, stable_hash

logger = logging.getLogger(__name__)


def paint_semantic_gt(annotations, height, width, ignore_label):
    """The (height, width) label map of one image's annotations (contiguous ``category_id``, XYXY boxes)."""
    dtype = np.uint8 if ignore_label <= 255 else np.uint16
    labels = np.zeros((height, width), dtype=dtype)
    boxes = annotation_boxes(annotations)[0]
    extents, box_area = pixel_extents(boxes, height, width, PIXELS_TOUCHED), box_areas(boxes)
    items = []  # (area, mask or None, box extent, value)
    for i, ann in enumerate(annotations):
        value = ignore_label if ann.get("iscrowd", 0) else ann["category_id"] + 1
        rle = segmentation_to_rle(ann["segmentation"], height, width) if ann.get("segmentation") else None
        if rle is not None:
            items.append((float(mask_util.area(rle)), rle, None, value))
        else:
            items.append((float(box_area[i]), None, extents[i], ignore_label))
    # Stable sort, largest first: the smaller instance is painted last and wins the overlap.
    for _, rle, extent, value in sorted(items, key=lambda item: -item[0]):
        if rle is not None:
            labels[mask_util.decode(rle).astype(bool)] = value
        else:
            x0, y0, x1, y1 = extent
            labels[y0:y1, x0:x1] = value
    return labels


def masks_hash(dataset_dicts, length=12):
    """Hash of what the painting reads beyond the boxes: each annotation's segmentation."""
    digest = hashlib.sha1()
    for record in dataset_dicts:
        for ann in record.get("annotations", []):
            digest.update(json.dumps(ann.get("segmentation"), separators=(",", ":"), default=str).encode())
        digest.update(b"|")
    return digest.hexdigest()[:length]


def semseg_cache_dir(dataset_name, dataset_dicts, ignore_label, masks_key=None):
    """``cache_root()/semseg/NAME-HASH``; the hash covers images, boxes, masks and the ignore value.

    ``masks_key`` replaces the (slow on big datasets) hash of every segmentation by a cheaper key that
    changes with them, e.g. the digest of the annotation file they were read from.
    """
    masks_key = masks_key if masks_key is not None else masks_hash(dataset_dicts)
    key = stable_hash([annotations_hash(dataset_dicts), masks_key, int(ignore_label)])
    return cache_root() / "semseg" / f"{safe_name(dataset_name)}-{key}"


def attach_semantic_gt(dataset_name, dataset_dicts, ignore_label, masks_key=None):
    """Set ``record["sem_seg_file_name"]`` on every record, painting the PNGs that are not cached yet.

    Files are written atomically (one PNG per image, named by ``safe_name(image_id)``), so an
    interrupted run resumes where it stopped. Returns ``dataset_dicts``.
    """
    folder = semseg_cache_dir(dataset_name, dataset_dicts, ignore_label, masks_key)
    existing = set(os.listdir(folder)) if folder.is_dir() else set()
    missing = []
    for record in dataset_dicts:
        name = f"{safe_name(record['image_id'])}.png"
        record["sem_seg_file_name"] = str(folder / name)
        if name not in existing:
            missing.append(record)
    if missing:
        logger.info(f"Painting semantic ground truth of {len(missing)} images of '{dataset_name}' into {folder}")
        folder.mkdir(parents=True, exist_ok=True)
        for record in tqdm(missing, desc=f"semantic GT {dataset_name}", unit="img", mininterval=2.0):
            labels = paint_semantic_gt(record.get("annotations", []), record["height"], record["width"], ignore_label)
            with atomic_path(record["sem_seg_file_name"]) as tmp:
                if not cv2.imwrite(tmp, labels):
                    raise OSError(f"could not write {tmp}")
    return dataset_dicts


def read_label_map(path):
    """A semantic label PNG as an (H, W) array of class indices (uint8 or uint16).

    Uses PIL, which returns a palette PNG's *indices* (VOC's SegmentationClass); ``cv2.imread`` would
    expand the palette to colours. Single-channel 8- and 16-bit PNGs are read unchanged.
    """
    with Image.open(path) as img:
        if img.mode not in ("P", "L", "I;16", "I;16B", "I;16L", "I"):
            raise ValueError(f"label PNG {path} has PIL mode {img.mode!r}; expected class indices "
                             f"(palette 'P' or single-channel 'L' / 16-bit)")
        labels = np.array(img)
    if labels.dtype not in (np.uint8, np.uint16):
        labels = labels.astype(np.uint16 if labels.max(initial=0) <= 65535 else np.int64)
    return labels
