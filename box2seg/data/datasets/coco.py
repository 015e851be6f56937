"""COCO-format box datasets: any instances JSON plus an image folder.

Only ``bbox`` and ``category_id`` train the model. Masks (``segmentation``), when present, stay in the
annotation dicts for evaluation, and a semantic ground truth is painted from them (``semseg_gt``).
Image sizes come from the JSON (no image is opened), except for an image whose JSON entry lacks them.
A ``bbox`` holding strings or booleans is refused (DatasetError naming the file and annotation): JSON numbers
only; a bbox that is not 4 values is skipped and counted.

A run asks DatasetCatalog for the same dataset several times (the data loader, the evaluators, the GrabCut
and export jobs), and COCO train2017's JSON takes tens of seconds to parse: the parsed and validated records
are kept in memory per file version (path, size, mtime, inode) and image folder, and every call gets its own
copies (records, annotation lists and annotation dicts; the segmentation polygons / RLE are shared and must
not be changed in place).
"""
import copy
import hashlib
import json
import logging
import os
from collections import OrderedDict

from detectron2.structures import BoxMode

from ..cache import atomic_write_json, cache_root, stable_hash
from ..semseg_gt import attach_semantic_gt
from .common import (
    DatasetError,
    LoadReport,
    apply_box_validation,
    read_image_size,
    register_box_dataset,
    registered_metadata,
    semantic_metadata,
    update_metadata,
)

logger = logging.getLogger(__name__)

# name -> (json_file, image_root) of the datasets registered here (a name detectron2 registered with the
# same files is still a different loader, so it is not "the same registration").
_REGISTERED = {}
_LAZY_KEYS = ("thing_classes", "stuff_classes", "thing_dataset_id_to_contiguous_id", "ignore_label",
              "has_masks", "evaluator_type")

# (file version, image_root) -> _Parsed, most recently used last; a few entries (train and test sets).
_PARSED = OrderedDict()
PARSE_CACHE_ENTRIES = 4


class _Parsed:
    """One validated load of a COCO JSON: the records before any semantic GT is attached, their metadata,
    the sha1 of the file's bytes and the load report (copied into a caller's report on reuse)."""

    def __init__(self, records, meta, digest, report):
        self.records, self.meta, self.digest, self.report = records, meta, digest, report


def _file_version(json_file):
    """What identifies one version of the file without reading it: (path, size, mtime_ns, inode)."""
    try:
        stat = os.stat(json_file)
    except FileNotFoundError:
        raise DatasetError(f"COCO annotation file {json_file} does not exist") from None
    return json_file, stat.st_size, stat.st_mtime_ns, stat.st_ino


def _copy_records(records):
    """Fresh records a caller may change: new dicts, annotation lists, annotation dicts and bboxes."""
    return [{**r, "annotations": [{**a, "bbox": list(a["bbox"])} for a in r["annotations"]]} for r in records]


def _copy_report(source, target):
    """Fill ``target`` with what ``source`` counted (a reused parse is not logged again)."""
    target.skipped.update(source.skipped)
    target.noted.update(source.noted)
    target._examples.update(copy.deepcopy(source._examples))
    target.num_images, target.num_boxes = source.num_images, source.num_boxes


def _read_json(json_file):
    """(parsed JSON, sha1 of the bytes); clear errors for a missing or malformed file."""
    try:
        with open(json_file, "rb") as f:
            blob = f.read()
    except FileNotFoundError:
        raise DatasetError(f"COCO annotation file {json_file} does not exist") from None
    try:
        data = json.loads(blob)
    except json.JSONDecodeError as e:
        raise DatasetError(f"COCO annotation file {json_file} is not valid JSON: {e}") from None
    if not isinstance(data, dict):
        raise DatasetError(f"COCO annotation file {json_file}: expected a JSON object at the top level")
    for key in ("images", "annotations", "categories"):
        if not isinstance(data.get(key), list):
            raise DatasetError(f"COCO annotation file {json_file}: missing or malformed '{key}' list "
                               f"(a box dataset needs images, annotations and categories)")
    return data, hashlib.sha1(blob).hexdigest()[:12]


def _categories(data, json_file):
    """(sorted dataset category ids, their names); contiguous id = position in the sorted list."""
    names = {}
    for i, cat in enumerate(data["categories"]):
        if not isinstance(cat, dict) or "id" not in cat or "name" not in cat:
            raise DatasetError(f"COCO annotation file {json_file}: category #{i} needs 'id' and 'name': {cat!r}")
        if cat["id"] in names:
            raise DatasetError(f"COCO annotation file {json_file}: duplicate category id {cat['id']!r}")
        names[cat["id"]] = str(cat["name"])
    if not names:
        raise DatasetError(f"COCO annotation file {json_file}: 'categories' is empty")
    ids = sorted(names)
    return ids, [names[i] for i in ids]


def _has_segmentation(ann):
    return bool(ann.get("segmentation"))


def _metadata_from_json(data, json_file):
    ids, names = _categories(data, json_file)
    has_masks = any(_has_segmentation(ann) for ann in data["annotations"] if isinstance(ann, dict))
    return semantic_metadata(names, {d: c for c, d in enumerate(ids)}, has_masks)


def coco_metadata(json_file):
    """Class metadata of a COCO JSON, cached by file path, size and mtime (big JSONs parse slowly): from a
    load of this file version already in memory, else from the on-disk cache, else parsed."""
    json_file = os.path.abspath(os.path.expanduser(str(json_file)))
    version = _file_version(json_file)
    for (parsed_version, _), parsed in reversed(_PARSED.items()):
        if parsed_version == version:
            return copy.deepcopy(parsed.meta)
    stat = os.stat(json_file)
    cache_file = cache_root() / "coco" / f"meta-{stable_hash([json_file, stat.st_size, stat.st_mtime_ns])}.json"
    if cache_file.is_file():
        try:
            meta = json.loads(cache_file.read_text())
            # JSON object keys are strings: restore the dataset's category ids.
            meta["thing_dataset_id_to_contiguous_id"] = dict(meta["thing_dataset_id_to_contiguous_id"])
            return meta
        except (ValueError, KeyError):
            pass  # a damaged cache entry: recompute below
    data, _ = _read_json(json_file)
    meta = _metadata_from_json(data, json_file)
    atomic_write_json(cache_file, {**meta, "thing_dataset_id_to_contiguous_id":
                                   [[k, v] for k, v in meta["thing_dataset_id_to_contiguous_id"].items()]})
    return meta


def _clean_segmentation(segmentation):
    """The segmentation without degenerate polygons, or None when nothing usable is left."""
    if isinstance(segmentation, list):
        polygons = [p for p in segmentation if isinstance(p, list) and len(p) >= 6 and len(p) % 2 == 0]
        return polygons or None
    if isinstance(segmentation, dict) and "counts" in segmentation and "size" in segmentation:
        counts, size = segmentation["counts"], segmentation["size"]
        if isinstance(counts, list) and (len(size) != 2 or sum(counts) != size[0] * size[1]):
            return None  # uncompressed RLE that does not cover its image: decoding it reads garbage
        return segmentation
    return None


def load_coco_boxes(json_file, image_root, dataset_name=None, report=None, paint_semseg=True):
    """Load a COCO instances JSON as Box2Seg dataset dicts (see the team contract for the format).

    Args:
        json_file, image_root: the annotation file and the folder its ``file_name`` s are relative to.
        dataset_name: if given, its metadata is updated and the painted semantic GT is cached under it.
        report: a :class:`LoadReport` to fill (the first load of a file version logs its own; a load that
            reuses the parse fills ``report`` without logging it again).
        paint_semseg: paint / attach ``sem_seg_file_name`` when the annotations have masks.
    """
    json_file = os.path.abspath(os.path.expanduser(str(json_file)))
    image_root = os.path.abspath(os.path.expanduser(str(image_root)))
    name = dataset_name or os.path.splitext(os.path.basename(json_file))[0]
    key = (_file_version(json_file), image_root)
    parsed = _PARSED.get(key)
    if parsed is None:
        parsed = _parse(json_file, image_root, LoadReport(name, json_file))
        _PARSED[key] = parsed
        while len(_PARSED) > PARSE_CACHE_ENTRIES:
            _PARSED.popitem(last=False)
    else:
        _PARSED.move_to_end(key)
        logger.debug(f"dataset '{name}': reusing the parse of {json_file}")
    if report is not None:
        _copy_report(parsed.report, report)
    dataset_dicts = _copy_records(parsed.records)
    meta = copy.deepcopy(parsed.meta)
    if dataset_name is not None:
        update_metadata(dataset_name, meta)
    if meta["has_masks"] and paint_semseg:
        attach_semantic_gt(name, dataset_dicts, meta["ignore_label"], masks_key=parsed.digest)
    return dataset_dicts


def _parse(json_file, image_root, report):
    """Read and validate the JSON once (the work :func:`load_coco_boxes` memoises); logs the report."""
    data, digest = _read_json(json_file)
    cat_ids, cat_names = _categories(data, json_file)
    id_map = {d: c for c, d in enumerate(cat_ids)}

    records = {}
    for i, img in enumerate(data["images"]):
        if not isinstance(img, dict) or "id" not in img or "file_name" not in img:
            raise DatasetError(f"COCO annotation file {json_file}: image #{i} needs 'id' and 'file_name': {img!r}")
        if img["id"] in records:
            raise DatasetError(f"COCO annotation file {json_file}: duplicate image id {img['id']!r}")
        file_name = os.path.join(image_root, img["file_name"])
        height, width = img.get("height"), img.get("width")
        if not (isinstance(height, (int, float)) and isinstance(width, (int, float)) and height > 0 and width > 0):
            # Only here is an image opened at load time (header only).
            try:
                height, width = read_image_size(file_name)
            except OSError as e:
                report.skip("images without a size in the JSON whose file cannot be read",
                            f"image id {img['id']!r}: {e}")
                records[img["id"]] = None
                continue
        records[img["id"]] = {"file_name": file_name, "image_id": img["id"], "height": int(height),
                              "width": int(width), "annotations": []}

    anns, owners = [], []
    for i, ann in enumerate(data["annotations"]):
        ann_id = ann.get("id", i) if isinstance(ann, dict) else i
        where = f"annotation id {ann_id!r}"
        if not isinstance(ann, dict):
            report.skip("annotations that are not JSON objects", f"annotation #{i}")
            continue
        if "id" not in ann:
            report.note("annotations without 'id' (their position in the list is used)", f"annotation #{i}")
        if ann.get("image_id") not in records:
            report.skip("annotations of an unknown image id", f"{where} (image id {ann.get('image_id')!r})")
            continue
        record = records[ann["image_id"]]
        if record is None:
            report.skip("annotations of unreadable images", where)
            continue
        where += f" in image {ann['image_id']!r}"
        if ann.get("category_id") not in id_map:
            report.skip("annotations with an unknown category id", f"{where} (category {ann.get('category_id')!r})")
            continue
        bbox = ann.get("bbox")
        if isinstance(bbox, (str, bool)) or (isinstance(bbox, (list, tuple)) and
                                             any(isinstance(v, (str, bool)) for v in bbox)):
            # A writer that emits text or booleans has its columns wrong: float() would accept "12" and True.
            raise DatasetError(f"COCO annotation file {json_file}: {where}: 'bbox' must be 4 numbers "
                               f"[x, y, width, height], got {bbox!r}")
        try:
            x, y, w, h = (float(v) for v in bbox)
        except (TypeError, ValueError):
            report.skip("annotations without a 4-number bbox", f"{where} (bbox {bbox!r})")
            continue
        out = {"bbox": [x, y, x + w, y + h], "bbox_mode": BoxMode.XYXY_ABS,
               "category_id": id_map[ann["category_id"]], "iscrowd": 1 if ann.get("iscrowd", 0) else 0,
               "id": ann_id}
        if _has_segmentation(ann):
            segmentation = _clean_segmentation(ann["segmentation"])
            if segmentation is None:
                report.note("masks dropped as unusable (degenerate polygons, malformed RLE)", where)
            else:
                out["segmentation"] = segmentation
        anns.append(out)
        owners.append(record)

    keep = apply_box_validation(
        anns, [r["width"] for r in owners], [r["height"] for r in owners], report,
        lambda k: f"annotation id {anns[k]['id']!r} in image {owners[k]['image_id']!r} (bbox {anns[k]['bbox']})",
    )
    for ann, record, ok in zip(anns, owners, keep):
        if ok:
            record["annotations"].append(ann)

    dataset_dicts = [r for r in records.values() if r is not None]
    has_masks = any("segmentation" in a for r in dataset_dicts for a in r["annotations"])
    meta = semantic_metadata(cat_names, id_map, has_masks)
    report.finish(dataset_dicts)
    return _Parsed(dataset_dicts, meta, digest, report)


def register_coco_boxes(name, json_file, image_root):
    """Register a COCO-format box dataset under ``name`` (lazy: files are read when it is used).

    Registering the same name again with the same files is a no-op; with other files it is an error.
    """
    json_file = os.path.abspath(os.path.expanduser(str(json_file)))
    image_root = os.path.abspath(os.path.expanduser(str(image_root)))
    existing = registered_metadata(name)
    if existing is not None:
        if _REGISTERED.get(name) == (json_file, image_root):
            return
        raise DatasetError(
            f"dataset '{name}' is already registered with json_file={existing.get('json_file')!r}, "
            f"image_root={existing.get('image_root')!r}; cannot register it again with "
            f"json_file={json_file!r}, image_root={image_root!r} (choose another name)"
        )
    register_box_dataset(
        name,
        lambda: load_coco_boxes(json_file, image_root, dataset_name=name),
        {"json_file": json_file, "image_root": image_root, "box_labels_exhaustive": True},
        lazy_metadata=lambda: coco_metadata(json_file),
        lazy_keys=_LAZY_KEYS,
    )
    _REGISTERED[name] = (json_file, image_root)


def parse_coco_spec(spec):
    """``"NAME=JSON:IMAGE_ROOT"`` -> (name, json_file, image_root).

    The JSON path ends at the first ``:`` that follows ``.json`` (so either path may contain ``:``);
    without a ``.json`` suffix, at the first ``:``.
    """
    usage = f"malformed dataset spec {spec!r}: expected NAME=JSON:IMAGE_ROOT, e.g. mydata=ann/train.json:images/train"
    name, eq, paths = str(spec).partition("=")
    name = name.strip()
    if not eq or not name or ":" not in paths:
        raise DatasetError(usage)
    cut = paths.lower().find(".json:")
    cut = cut + len(".json") if cut >= 0 else paths.find(":")
    json_file, image_root = paths[:cut].strip(), paths[cut + 1 :].strip()
    if not json_file or not image_root:
        raise DatasetError(usage)
    return name, json_file, image_root


def register_coco_spec(spec):
    """Register a dataset from a ``--coco-dataset`` / ``DATASETS.COCO_FORMAT`` spec; returns its name.

    Unlike :func:`register_coco_boxes` (which may be called before a generated file exists), the
    files must exist: a typo on the command line fails at once, naming the path.
    """
    name, json_file, image_root = parse_coco_spec(spec)
    if not os.path.isfile(os.path.expanduser(json_file)):
        raise DatasetError(f"dataset spec {spec!r}: annotation file {json_file} does not exist")
    if not os.path.isdir(os.path.expanduser(image_root)):
        raise DatasetError(f"dataset spec {spec!r}: image folder {image_root} does not exist")
    register_coco_boxes(name, json_file, image_root)
    return name
