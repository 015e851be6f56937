"""Open Images' official instance masks (V5+ ``*-annotations-object-segmentation.csv`` and its mask PNGs), as
a ground-truth COCO JSON that ``box2seg score`` compares an export with.

Each mask row names its image, class and box (``BoxXMin``, ``BoxXMax``, ``BoxYMin``, ``BoxYMax``,
normalised, copied from the boxes CSV) and a binary PNG (``MaskPath``, at its own resolution). A mask is
attached to the box of the boxes CSV with the same image, class and coordinates (to 1e-6); that box's
line number is the annotation id the loader and ``box2seg export`` give it, so the JSON lines up with an
export of the same dataset: every box of the dataset is in it (:func:`box2seg.export.source` conventions:
XYWH pixels, the class's MID as ``category_id``), and the boxes with a mask carry it as a compressed RLE,
resized to the image with nearest-neighbour sampling. Boxes without a mask are left unscored by
``box2seg score``. Mask rows that match no box, and PNGs that are missing or unreadable, are skipped and
counted.

Mask PNGs are looked for as ``MASKS_ROOT/MaskPath``, ``MASKS_ROOT/<first character of ImageID>/MaskPath``
and ``MASKS_ROOT/train-masks-<that character>/MaskPath`` (the layouts of the unpacked official archives).
"""
import csv
import json
import os

import cv2
import numpy as np
from detectron2.data import DatasetCatalog, MetadataCatalog

from ...structures import encode_rle
from ..cache import atomic_write_bytes
from .common import DatasetError, LoadReport
from .openimages_index import header_index, openimages_index

__all__ = ["MASK_COLUMNS", "read_mask_rows", "load_instance_masks", "write_masks_coco"]

MASK_COLUMNS = ("MaskPath", "ImageID", "LabelName", "BoxXMin", "BoxXMax", "BoxYMin", "BoxYMax")


def _xywh(box):
    """XYXY -> XYWH as the export writes boxes of datasets without a source JSON (export.source.xyxy_to_xywh)."""
    x0, y0, x1, y1 = (float(v) for v in box)
    return [x0, y0, round(x1 - x0, 6), round(y1 - y0, 6)]


def _key(image_id, mid, xmin, ymin, xmax, ymax):
    return image_id, mid, *(round(float(v), 6) for v in (xmin, ymin, xmax, ymax))


def read_mask_rows(segmentation_csv, report):
    """``[(key, MaskPath, line)]`` of a segmentation CSV (key: image, class, normalised XYXY to 1e-6)."""
    rows = []
    try:
        f = open(segmentation_csv, newline="", encoding="utf-8")
    except FileNotFoundError:
        raise DatasetError(f"Open Images segmentation file {segmentation_csv} does not exist") from None
    with f:
        reader = csv.reader(f)
        index, ncols = header_index(reader, segmentation_csv, MASK_COLUMNS)
        for row in reader:
            if not row:
                continue
            if len(row) < ncols:
                report.skip("truncated segmentation CSV rows", f"line {reader.line_num}")
                continue
            try:
                key = _key(row[index["ImageID"]].strip(), row[index["LabelName"]].strip(),
                           *(row[index[c]] for c in ("BoxXMin", "BoxYMin", "BoxXMax", "BoxYMax")))
            except ValueError:
                report.skip("segmentation rows with non-numeric box coordinates", f"line {reader.line_num}")
                continue
            rows.append((key, row[index["MaskPath"]].strip(), reader.line_num))
    return rows


def _mask_file(masks_root, image_id, mask_path):
    for candidate in (os.path.join(masks_root, mask_path), os.path.join(masks_root, image_id[:1], mask_path),
                      os.path.join(masks_root, f"train-masks-{image_id[:1]}", mask_path)):
        if os.path.isfile(candidate):
            return candidate
    return None


def load_instance_masks(boxes_csv, segmentation_csv, masks_root, dataset_dicts, report=None):
    """``{annotation id (box line): (H, W) bool mask}`` for the boxes of ``dataset_dicts`` (loaded from
    ``boxes_csv``) that have an official mask; ``report`` counts what was skipped."""
    report = report or LoadReport("open images masks", segmentation_csv)
    rows = read_mask_rows(segmentation_csv, report)
    wanted = {key[0] for key, _, _ in rows}
    index = openimages_index(boxes_csv)
    line_of = {}
    images = np.asarray(index.image)
    labels, lines, coords = np.asarray(index.label), np.asarray(index.line), np.asarray(index.coords)
    image_ids = [index.image_id(k) for k in range(len(index.image_ids))]
    for j in np.flatnonzero(np.isin(images, [k for k, i in enumerate(image_ids) if i in wanted])):
        xmin, ymin, xmax, ymax = coords[j]
        line_of[_key(image_ids[images[j]], index.labels[labels[j]], xmin, ymin, xmax, ymax)] = int(lines[j])
    records = {r["image_id"]: r for r in dataset_dicts}
    boxes = {a["id"] for r in dataset_dicts for a in r["annotations"]}
    masks = {}
    for key, mask_path, line in rows:
        box_line = line_of.get(key)
        if box_line is None or box_line not in boxes:
            report.skip("masks whose box is not in the dataset", f"{os.path.basename(segmentation_csv)} line {line}")
            continue
        record = records[key[0]]
        path = _mask_file(masks_root, key[0], mask_path)
        image = cv2.imread(path, cv2.IMREAD_GRAYSCALE) if path is not None else None
        if image is None:
            report.skip("mask PNGs missing or unreadable", os.path.join(masks_root, mask_path))
            continue
        size = (record["width"], record["height"])
        if image.shape[::-1] != size:
            image = cv2.resize(image, size, interpolation=cv2.INTER_NEAREST)
        masks[box_line] = image > 0
    report.log()
    return masks


def write_masks_coco(dataset_name, segmentation_csv, masks_root, output):
    """Write the ground-truth COCO JSON of registered Open Images dataset ``dataset_name`` with its official
    masks to ``output`` (atomic); returns ``{"annotations", "masks", "output"}``."""
    meta = MetadataCatalog.get(dataset_name)
    boxes_csv = meta.get("boxes_csv", None)
    if boxes_csv is None:
        raise DatasetError(f"dataset {dataset_name!r} is not an Open Images boxes dataset")
    dicts = DatasetCatalog.get(dataset_name)
    masks = load_instance_masks(boxes_csv, segmentation_csv, masks_root, dicts)
    inverse = {c: m for m, c in meta.thing_dataset_id_to_contiguous_id.items()}
    images, annotations = [], []
    root = meta.image_root
    for r in dicts:
        images.append({"id": r["image_id"], "file_name": os.path.relpath(r["file_name"], root),
                       "height": r["height"], "width": r["width"]})
        for a in r["annotations"]:
            ann = {"id": a["id"], "image_id": r["image_id"], "category_id": inverse[a["category_id"]],
                   "bbox": _xywh(a["bbox"]), "iscrowd": int(a.get("iscrowd", 0))}
            mask = masks.get(a["id"])
            if mask is not None:
                (ann["segmentation"],) = encode_rle(mask[None])
                ann["area"] = int(mask.sum())
            annotations.append(ann)
    categories = [{"id": inverse[c], "name": n} for c, n in enumerate(meta.thing_classes)]
    atomic_write_bytes(output, json.dumps({"images": images, "annotations": annotations,
                                           "categories": categories}).encode())
    return {"annotations": len(annotations), "masks": len(masks), "output": str(output)}
