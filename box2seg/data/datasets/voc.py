"""PASCAL VOC 2012 as a box dataset: boxes from ``Annotations/*.xml``, semantic GT for evaluation.

Coordinates: VOC's ``xmin..xmax`` / ``ymin..ymax`` are 1-based, inclusive pixel indices. In detectron2's
continuous coordinates pixel ``i`` (0-based) spans ``[i, i + 1)``, so a VOC box becomes
``[xmin - 1, ymin - 1, xmax, ymax]`` (XYXY_ABS): a box over the whole image is ``[0, 0, W, H]``.

Splits (ids from ``ImageSets/Segmentation/<split>.txt``):
- ``train`` (1,464) and ``val`` (1,449): VOC 2012 segmentation splits;
- ``trainaug`` (10,582): ``ImageSets/Segmentation/trainaug.txt`` if present (``datasets/prepare_voc_trainaug.py``
  writes it), else derived on the fly from SBD's lists: (SBD train ∪ SBD val ∪ VOC seg train) − VOC seg val.

Semantic GT: ``SegmentationClass/<id>.png`` (VOC's palette PNGs, read as palette *indices*) or else
``SegmentationClassAug/<id>.png`` (single-channel labels); 0 = background, 1..20 = classes, 255 = ignore.
It is attached (``sem_seg_file_name``) when every image of the split has one.
"""
import logging
import os
import xml.etree.ElementTree as ET

from detectron2.structures import BoxMode
from PIL import Image

from .common import (
    DatasetError,
    LoadReport,
    apply_box_validation,
    read_image_size,
    register_box_dataset,
    semantic_metadata,
    update_metadata,
)

logger = logging.getLogger(__name__)

VOC_CLASSES = (
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow", "diningtable",
    "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor",
)
# Dataset ids are VOC's label values in SegmentationClass: 1..20 (0 background, 255 void).
VOC_DATASET_ID_TO_CONTIGUOUS = {i + 1: i for i in range(len(VOC_CLASSES))}
TRAINAUG_SIZE = 10582
SEM_SEG_DIRS = ("SegmentationClass", "SegmentationClassAug")
_LAZY_KEYS = ("has_masks", "evaluator_type")


def read_id_list(path):
    """Image ids of a split list, one per line (first column), blank lines ignored."""
    try:
        with open(path) as f:
            return [line.split()[0] for line in f if line.strip()]
    except FileNotFoundError:
        raise DatasetError(f"split list {path} does not exist") from None


def find_sbd_root(voc_root, sbd_root=None):
    """The SBD folder holding ``train.txt`` and ``val.txt`` (``benchmark_RELEASE/dataset`` in the tarball)."""
    parent = os.path.dirname(os.path.abspath(voc_root))
    candidates = [sbd_root] if sbd_root else [
        os.path.join(parent, "SBD"), os.path.join(parent, "SBD", "dataset"),
        os.path.join(parent, "SBD", "benchmark_RELEASE", "dataset"),
        os.path.join(parent, "benchmark_RELEASE", "dataset"),
    ]
    for folder in candidates:
        if folder and os.path.isfile(os.path.join(folder, "train.txt")) and os.path.isfile(os.path.join(folder, "val.txt")):
            return folder
    return None


def derive_trainaug_ids(voc_root, sbd_root):
    """The standard 10,582-image train set: (SBD train ∪ SBD val ∪ VOC seg train) − VOC seg val, sorted."""
    seg = os.path.join(voc_root, "ImageSets", "Segmentation")
    ids = set(read_id_list(os.path.join(sbd_root, "train.txt")))
    ids |= set(read_id_list(os.path.join(sbd_root, "val.txt")))
    ids |= set(read_id_list(os.path.join(seg, "train.txt")))
    ids -= set(read_id_list(os.path.join(seg, "val.txt")))
    return sorted(ids)


def split_ids(voc_root, split, sbd_root=None):
    """Image ids of a VOC segmentation split (``trainaug`` derived from SBD when its list is absent)."""
    if not os.path.isdir(voc_root):
        raise DatasetError(f"PASCAL VOC folder {voc_root} does not exist (see datasets/README.md; "
                           f"set DETECTRON2_DATASETS to the folder holding VOC2012/)")
    path = os.path.join(voc_root, "ImageSets", "Segmentation", f"{split}.txt")
    if os.path.isfile(path) or split != "trainaug":
        ids = read_id_list(path)
    else:
        sbd = find_sbd_root(voc_root, sbd_root)
        if sbd is None:
            raise DatasetError(
                f"{path} does not exist and no SBD lists (train.txt, val.txt) were found next to {voc_root} to "
                f"derive it; run `python datasets/prepare_voc_trainaug.py --sbd-root SBD_DATASET_DIR` "
                f"(see datasets/README.md)")
        ids = derive_trainaug_ids(voc_root, sbd)
    if split == "trainaug" and len(ids) != TRAINAUG_SIZE:
        logger.warning(f"VOC trainaug has {len(ids)} images, not the standard {TRAINAUG_SIZE}")
    return ids


def find_sem_seg_files(voc_root, ids):
    """{id: label PNG} for the ids that have one (SegmentationClass first, then SegmentationClassAug)."""
    found = {}
    for sub in reversed(SEM_SEG_DIRS):  # later (preferred) folders overwrite
        folder = os.path.join(voc_root, sub)
        names = set(os.listdir(folder)) if os.path.isdir(folder) else set()
        for image_id in ids:
            if f"{image_id}.png" in names:
                found[image_id] = os.path.join(folder, f"{image_id}.png")
    return found


def check_label_png(path, height, width):
    """A VOC label PNG must hold class indices: palette ("P", read as indices) or single-channel ("L").

    An RGB rendering of the palette would give colours, not classes, so it is refused.
    """
    try:
        with Image.open(path) as img:
            mode, size = img.mode, img.size
    except OSError as e:
        raise DatasetError(f"semantic label file {path} cannot be read: {e}") from None
    if mode not in ("P", "L"):
        raise DatasetError(f"semantic label file {path} has PIL mode {mode!r}; expected class indices, a palette "
                           f"PNG ('P', as in VOC's SegmentationClass) or a single-channel PNG ('L', as in "
                           f"SegmentationClassAug). Do not convert the palette PNGs to RGB.")
    if size != (width, height):
        raise DatasetError(f"semantic label file {path} is {size[0]}x{size[1]}, its image is {width}x{height}")


def _text(node, tag):
    child = node.find(tag)
    return child.text.strip() if child is not None and child.text else None


def load_voc_boxes(voc_root, split, dataset_name=None, sbd_root=None, report=None):
    """Load a VOC 2012 segmentation split as Box2Seg dataset dicts (boxes from the XML files).

    Each annotation also carries ``difficult`` (0/1) from the XML. VOC has no crowd boxes.
    """
    voc_root = os.path.abspath(os.path.expanduser(voc_root))
    name = dataset_name or f"voc_2012_{split}_boxes"
    report = report or LoadReport(name, voc_root)
    ids = split_ids(voc_root, split, sbd_root)
    class_index = {c: i for i, c in enumerate(VOC_CLASSES)}
    dataset_dicts, anns, owners = [], [], []
    for image_id in ids:
        xml_path = os.path.join(voc_root, "Annotations", f"{image_id}.xml")
        file_name = os.path.join(voc_root, "JPEGImages", f"{image_id}.jpg")
        try:
            root = ET.parse(xml_path).getroot()
        except FileNotFoundError:
            report.skip("images without an annotation XML", xml_path)
            continue
        except ET.ParseError as e:
            report.skip("images with a malformed annotation XML", f"{xml_path}: {e}")
            continue
        try:
            width, height = int(float(_text(root, "size/width"))), int(float(_text(root, "size/height")))
            if width <= 0 or height <= 0:
                raise ValueError
        except (TypeError, ValueError):
            try:  # no usable <size>: read the image header
                height, width = read_image_size(file_name)
            except OSError as e:
                report.skip("images without a size in the XML whose file cannot be read", f"{xml_path}: {e}")
                continue
        record = {"file_name": file_name, "image_id": image_id, "height": height, "width": width, "annotations": []}
        dataset_dicts.append(record)
        for k, obj in enumerate(root.findall("object")):
            ann_id = f"{image_id}/{k}"
            cls = _text(obj, "name")
            if cls not in class_index:
                report.skip("boxes of an unknown class", f"object {k} ({cls!r}) in {xml_path}")
                continue
            try:
                x0, y0, x1, y1 = (float(_text(obj, f"bndbox/{t}")) for t in ("xmin", "ymin", "xmax", "ymax"))
            except (TypeError, ValueError):
                report.skip("boxes without 4 numeric coordinates", f"object {k} in {xml_path}")
                continue
            difficult = _text(obj, "difficult")
            anns.append({"bbox": [x0 - 1.0, y0 - 1.0, x1, y1], "bbox_mode": BoxMode.XYXY_ABS,
                         "category_id": class_index[cls], "iscrowd": 0, "id": ann_id,
                         "difficult": 1 if difficult and difficult not in ("0", "") else 0})
            owners.append(record)
    keep = apply_box_validation(anns, [r["width"] for r in owners], [r["height"] for r in owners], report,
                                lambda k: f"box {anns[k]['id']} {anns[k]['bbox']}")
    for ann, record, ok in zip(anns, owners, keep):
        if ok:
            record["annotations"].append(ann)

    sem_seg = find_sem_seg_files(voc_root, [r["image_id"] for r in dataset_dicts])
    has_masks = bool(dataset_dicts) and len(sem_seg) == len(dataset_dicts)
    if has_masks:
        for record in dataset_dicts:
            check_label_png(sem_seg[record["image_id"]], record["height"], record["width"])
            record["sem_seg_file_name"] = sem_seg[record["image_id"]]
    elif sem_seg:
        logger.info(f"'{name}': semantic GT found for {len(sem_seg)} of {len(dataset_dicts)} images only; "
                    f"not attached (evaluation needs all of them)")

    report.finish(dataset_dicts)
    if dataset_name is not None:
        update_metadata(dataset_name, {"has_masks": has_masks, "evaluator_type": "sem_seg" if has_masks else "box2seg_boxes"})
    return dataset_dicts


def _voc_mask_metadata(voc_root, split, sbd_root):
    """has_masks / evaluator_type without parsing the XMLs: do all images of the split have a label PNG?"""
    ids = split_ids(voc_root, split, sbd_root)
    has_masks = bool(ids) and len(find_sem_seg_files(voc_root, ids)) == len(ids)
    return {"has_masks": has_masks, "evaluator_type": "sem_seg" if has_masks else "box2seg_boxes"}


def register_voc_boxes(name, voc_root, split, sbd_root=None):
    """Register a VOC 2012 segmentation split (``train``, ``val``, ``trainaug``...) as a box dataset."""
    voc_root = os.path.abspath(os.path.expanduser(voc_root))
    static = semantic_metadata(VOC_CLASSES, VOC_DATASET_ID_TO_CONTIGUOUS, has_masks=False)
    for key in _LAZY_KEYS:
        static.pop(key)
    static.update(dirname=voc_root, split=split, year=2012, box_labels_exhaustive=True)
    register_box_dataset(
        name,
        lambda: load_voc_boxes(voc_root, split, dataset_name=name, sbd_root=sbd_root),
        static,
        lazy_metadata=lambda: _voc_mask_metadata(voc_root, split, sbd_root),
        lazy_keys=_LAZY_KEYS,
    )
