"""Pixel labels where they exist: which training images train on their true mask instead of GrabCut's map.

The paper uses pixel-level labels twice: fine-tuning a box-trained model on a limited set of masks (VOC
``train``'s 1,464 after trainaug's boxes), and the attention-weighted loss with every image's mask. Here an
image "carries pixel labels" when ``MODEL.BOX2SEG.PIXEL_LABELS`` chooses it (:func:`choose_pixel_label_images`);
its record then gets ``record["supervision"]``:

* ``"mask_ce"`` (``MODE: "ce"``): plain cross-entropy on the true mask, nothing else (the paper's fine-tuning);
* ``"mask"`` (``MODE: "box2seg"``): every enabled Box2Seg term with the true mask as M (so the filling rates,
  L_fr and the embedding pre-training read it too);

and every other image keeps ``"boxes"`` (GrabCut's map as M). The mappers read the true mask as M for such a
record (:func:`true_class_map`, :func:`true_instance_map`) and pass the supervision on to the loss.

Which images: the training images (DATASETS.TRAIN), narrowed to those also in ``PIXEL_LABELS.DATASETS``
(another registered dataset with the same image files, e.g. VOC ``train`` inside ``trainaug``, COCO-format
``train2017`` inside a set of all images) and to the image ids ``PIXEL_LABELS.IDS`` when given; then a
``FRACTION`` of those, drawn with ``SEED``. The draw is a prefix of one seeded permutation, so with one seed
a smaller fraction picks a subset of a larger one's images.

True masks come from the annotations' ``segmentation`` (COCO polygons / RLE), painted like the semantic
ground truth (``semseg_gt``: descending mask area, smaller wins; crowd and boxes without a mask are
ignore), or else from the record's semantic label map (``sem_seg_file_name``, e.g. VOC's SegmentationClass).
"""
import logging
import os

import numpy as np
import pycocotools.mask as mask_util
from detectron2.data import DatasetCatalog

from ..structures import PIXELS_TOUCHED, box_areas, pixel_extents, record_boxes, segmentation_to_rle
from .datasets.common import DatasetError, UnknownDatasetError, unknown_dataset_message
from .grabcut import IGNORE_INDEX, instance_map_to_labels
from .semseg_gt import read_label_map

__all__ = [
    "PIXEL_LABEL_MODES",
    "SUPERVISION_OF_MODE",
    "PixelLabelError",
    "choose_pixel_label_images",
    "has_true_instances",
    "mark_pixel_labels",
    "true_class_map",
    "true_instance_map",
    "true_own_labels",
]

logger = logging.getLogger(__name__)

PIXEL_LABEL_MODES = ("ce", "box2seg")
# PIXEL_LABELS.MODE -> the record's (and the loss's) supervision; "boxes" for every other image.
SUPERVISION_OF_MODE = {"ce": "mask_ce", "box2seg": "mask"}


class PixelLabelError(DatasetError):
    """A MODEL.BOX2SEG.PIXEL_LABELS setting that chooses no image, an unknown one, or one without a mask."""


def _file_key(record):
    return os.path.realpath(str(record["file_name"]))


def choose_pixel_label_images(records, *, ids=(), fraction=1.0, seed=0, files=None):
    """Indices (sorted) of the ``records`` that carry pixel labels.

    ``files``: None, or the set of real paths of the images of ``PIXEL_LABELS.DATASETS``: only records whose
    image is among them are candidates. ``ids``: image ids (compared as strings: COCO's are numbers, VOC's
    names); when given, only those records are candidates, and an id matching no training image is an error.
    ``fraction``: share of the candidates taken, ``round(fraction * n)`` of them, the first of a permutation
    drawn with ``seed`` (numpy's default_rng), so a smaller fraction picks a subset of a larger one."""
    if not 0.0 <= fraction <= 1.0:
        raise PixelLabelError(f"MODEL.BOX2SEG.PIXEL_LABELS.FRACTION={fraction}: a share of the images, in [0, 1]")
    pool = list(range(len(records)))
    if files is not None:
        pool = [i for i in pool if _file_key(records[i]) in files]
    if ids:
        wanted = {str(v) for v in ids}
        found = {str(records[i].get("image_id")) for i in pool}
        missing = sorted(wanted - found)
        if missing:
            where = " that are also in PIXEL_LABELS.DATASETS" if files is not None else ""
            raise PixelLabelError(
                f"MODEL.BOX2SEG.PIXEL_LABELS.IDS: {len(missing)} of {len(wanted)} image ids are not training "
                f"images{where} (first: {missing[:5]})")
        pool = [i for i in pool if str(records[i].get("image_id")) in wanted]
    count = int(round(fraction * len(pool)))
    order = np.random.default_rng(seed).permutation(len(pool))[:count]
    return sorted(pool[k] for k in order.tolist())


def has_true_instances(record):
    """Whether some annotation of ``record`` has a ``segmentation`` (the per-box masks chip mode's "own"
    target needs)."""
    return any(ann.get("segmentation") for ann in record.get("annotations", ()))


def _has_true_mask(record):
    return has_true_instances(record) or bool(record.get("sem_seg_file_name"))


def _dataset_files(names):
    files = set()
    for name in names:
        if name not in DatasetCatalog.list():
            raise UnknownDatasetError(f"MODEL.BOX2SEG.PIXEL_LABELS.DATASETS: {unknown_dataset_message(name)}")
        files.update(_file_key(r) for r in DatasetCatalog.get(name))
    return files


def mark_pixel_labels(cfg, records):
    """Set ``record["supervision"]`` on the training ``records`` (in place) as MODEL.BOX2SEG.PIXEL_LABELS
    chooses: "mask_ce" / "mask" on the chosen images, "boxes" on the others. Returns the number chosen.

    Fails before training (:class:`PixelLabelError`, naming the setting or the image) when the settings
    choose no image, a chosen image has no true mask, or ``MODE`` is ``ce`` without "gc" in LOSS.TERMS."""
    p = cfg.MODEL.BOX2SEG.PIXEL_LABELS
    for record in records:
        record["supervision"] = "boxes"
    if not p.ENABLED:
        return 0
    if p.MODE not in PIXEL_LABEL_MODES:
        raise PixelLabelError(f"MODEL.BOX2SEG.PIXEL_LABELS.MODE={p.MODE!r}: must be one of "
                              f"{', '.join(repr(m) for m in PIXEL_LABEL_MODES)}")
    if p.MODE == "ce" and "gc" not in cfg.MODEL.BOX2SEG.LOSS.TERMS:
        raise PixelLabelError("MODEL.BOX2SEG.PIXEL_LABELS.MODE='ce' trains the mask images with L_GC's cross-entropy: "
                              "keep 'gc' in MODEL.BOX2SEG.LOSS.TERMS")
    files = _dataset_files(p.DATASETS) if len(p.DATASETS) else None
    if files is not None and not any(_file_key(r) in files for r in records):
        raise PixelLabelError(f"MODEL.BOX2SEG.PIXEL_LABELS.DATASETS={tuple(p.DATASETS)} share no image file with "
                              f"DATASETS.TRAIN={tuple(cfg.DATASETS.TRAIN)}")
    chosen = choose_pixel_label_images(records, ids=list(p.IDS), fraction=float(p.FRACTION), seed=int(p.SEED),
                                       files=files)
    if not chosen:
        raise PixelLabelError("MODEL.BOX2SEG.PIXEL_LABELS.ENABLED but its DATASETS / IDS / FRACTION choose no "
                              "training image (set ENABLED False for boxes only)")
    own = cfg.MODEL.BOX2SEG.CHIPS.ENABLED and cfg.MODEL.BOX2SEG.CHIPS.TARGET == "own"
    for i in chosen:
        record = records[i]
        if not (has_true_instances(record) if own else _has_true_mask(record)):
            need = "per-box masks ('segmentation'), which chip mode's TARGET 'own' needs" if own else \
                "true mask: no annotation has a 'segmentation' and it has no semantic label map ('sem_seg_file_name')"
            raise PixelLabelError(f"image {record['file_name']} (image_id {record.get('image_id')!r}) is chosen by "
                                  f"MODEL.BOX2SEG.PIXEL_LABELS but has no {need}")
        record["supervision"] = SUPERVISION_OF_MODE[p.MODE]
    logger.info(f"Pixel labels: {len(chosen)} of {len(records)} training images train on their true mask "
                f"(PIXEL_LABELS.MODE {p.MODE!r}); the others on their boxes")
    return len(chosen)


def true_instance_map(record):
    """(H, W) uint16 instance map of ``record``'s true masks, in the GrabCut instance map's format (k + 1 where
    annotation k's mask is, 0 background, ``IGNORE_INDEX`` on crowd masks and on the box of an annotation
    without a usable mask). Painted in descending area, the smaller instance winning, as ``semseg_gt`` paints
    the evaluation ground truth."""
    height, width = int(record["height"]), int(record["width"])
    annotations = record.get("annotations", [])
    boxes, _, crowd = record_boxes(record)
    extents, area = pixel_extents(boxes, height, width, PIXELS_TOUCHED), box_areas(boxes)
    items = []  # (area, rle or None, extent, value)
    for k, ann in enumerate(annotations):
        rle = segmentation_to_rle(ann["segmentation"], height, width) if ann.get("segmentation") else None
        value = IGNORE_INDEX if crowd[k] else k + 1
        if rle is not None:
            items.append((float(mask_util.area(rle)), rle, None, value))
        else:
            items.append((float(area[k]), None, extents[k], IGNORE_INDEX))
    out = np.zeros((height, width), np.uint16)
    for _, rle, extent, value in sorted(items, key=lambda item: -item[0]):  # stable: larger first
        if rle is not None:
            out[mask_util.decode(rle).astype(bool)] = value
        else:
            x0, y0, x1, y1 = (int(v) for v in extent)
            out[y0:y1, x0:x1] = value
    return out


def true_class_map(record, classes, ignore_label):
    """The true class map M of a pixel-labelled ``record`` (0 background, class + 1, ``ignore_label``): from its
    annotations' masks when it has some (``classes``: their contiguous ids, in annotation order), else from its
    semantic label map. uint8 when ``ignore_label`` is 255, else uint16."""
    if has_true_instances(record):
        return instance_map_to_labels(true_instance_map(record), classes, ignore_label)
    path = record.get("sem_seg_file_name")
    if not path:
        raise PixelLabelError(f"image {record['file_name']} (image_id {record.get('image_id')!r}) carries pixel "
                              "labels but has no mask: no 'segmentation' and no 'sem_seg_file_name'")
    labels = read_label_map(path)
    if labels.shape != (int(record["height"]), int(record["width"])):
        raise PixelLabelError(f"label map {path} is {labels.shape[1]}x{labels.shape[0]} but image "
                              f"{record['file_name']} is {record['width']}x{record['height']}")
    return labels.astype(np.uint8 if ignore_label <= 255 else np.uint16, copy=False)


def true_own_labels(record, index, classes, ignore_label):
    """Chip mode's "own" target from true masks: (H, W) int64, ``classes[index] + 1`` on annotation ``index``'s
    whole mask (before painting, as for GrabCut's own masks), 0 elsewhere, ``ignore_label`` on crowd and on
    boxes without a mask (the own box's too, when it has none: its object's extent is unknown)."""
    height, width = int(record["height"]), int(record["width"])
    labels = np.where(true_instance_map(record) == IGNORE_INDEX, ignore_label, 0).astype(np.int64)
    ann = record["annotations"][index]
    rle = segmentation_to_rle(ann["segmentation"], height, width) if ann.get("segmentation") else None
    if rle is None:
        boxes = record_boxes(record)[0]
        x0, y0, x1, y1 = (int(v) for v in pixel_extents(boxes[index:index + 1], height, width, PIXELS_TOUCHED)[0])
        labels[y0:y1, x0:x1] = ignore_label
    else:
        labels[mask_util.decode(rle).astype(bool)] = int(classes[index]) + 1
    return labels
