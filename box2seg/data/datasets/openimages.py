"""Open Images V6 / V7 boxes from the official CSVs.

- Boxes CSV: a header with at least ImageID, Source, LabelName, Confidence, XMin, XMax, YMin, YMax,
  IsOccluded, IsTruncated, IsGroupOf, IsDepiction, IsInside (V6 train adds XClick* columns: ignored).
  Coordinates are normalised to [0, 1]; they become absolute pixels with the image sizes, read once from
  the image headers (EXIF orientation applied, as detectron2's ``read_image`` does) and cached in
  ``cache_root()/openimages/sizes-<hash of image_root>.json``. IsGroupOf = 1 -> ``iscrowd = 1``; a value
  other than 0 / 1 is refused (DatasetError naming the file, line and value). IsOccluded, IsTruncated,
  IsDepiction and IsInside stay on each annotation as ``is_occluded``, ``is_truncated``, ``is_depiction``,
  ``is_inside`` (1, 0, or -1 where Open Images marks the attribute unknown; another value is refused).
- Class descriptions CSV (LabelName, DisplayName), with or without a header row. Contiguous ids follow
  the sorted LabelNames (MIDs). 601 classes -> ignore_label 65535 (uint16 label maps).
- Image-level labels CSV (optional; ImageID, Source, LabelName, Confidence): ``verified_classes`` = the
  classes a human verified present (Confidence 1) or absent (Confidence 0) in the image, plus the classes
  of its boxes (drawn by humans). Machine-generated labels (Source "machine") do not count.
Open Images box labels are not exhaustive (``box_labels_exhaustive = False``): an unverified class may be
present without a box. Bad input: a missing column, a malformed class file, a flag that is not 0 / 1 or a
coordinate written as a boolean (``True`` / ``False``) raises, naming the file and line; a truncated or
non-numeric row, an unknown class, a missing / unreadable image are skipped and counted.

From the command line, ``--openimages-dataset NAME=BOXES.csv:IMAGE_ROOT`` registers one's own CSV
(:func:`register_openimages_spec`): the class descriptions file is found next to the boxes CSV (or one folder
up, Open Images' ``annotations/`` layout), else the classes are the LabelNames of the boxes CSV itself.
"""
import csv
from array import array
import json
import logging
import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from detectron2.structures import BoxMode
from tqdm import tqdm

from ..cache import atomic_write_json, cache_root, stable_hash
from .common import (
    DatasetError,
    BOX_CLIPPED,
    LoadReport,
    read_image_size,
    register_box_dataset,
    registered_metadata,
    report_box_status,
    semantic_metadata,
    update_metadata,
    validate_boxes,
)

logger = logging.getLogger(__name__)

# name -> (boxes_csv, image_root) of the datasets registered here.
_REGISTERED = {}

BOX_COLUMNS = ("ImageID", "Source", "LabelName", "Confidence", "XMin", "XMax", "YMin", "YMax", "IsOccluded",
               "IsTruncated", "IsGroupOf", "IsDepiction", "IsInside")
LABEL_COLUMNS = ("ImageID", "Source", "LabelName", "Confidence")
# Per-box attributes kept on the annotations: CSV column -> annotation key.
ATTRIBUTE_COLUMNS = {"IsOccluded": "is_occluded", "IsTruncated": "is_truncated", "IsDepiction": "is_depiction",
                     "IsInside": "is_inside"}
# Class descriptions files looked for next to a user's boxes CSV (V6 name, V7 name).
CLASS_DESCRIPTION_FILES = ("class-descriptions-boxable.csv", "oidv7-class-descriptions-boxable.csv")
_BOOLEAN_WORDS = frozenset({"true", "false"})
_LAZY_KEYS = ("thing_classes", "stuff_classes", "thing_dataset_id_to_contiguous_id", "ignore_label",
              "has_masks", "evaluator_type")


def _open_csv(path, what):
    try:
        return open(path, newline="", encoding="utf-8")
    except FileNotFoundError:
        raise DatasetError(f"Open Images {what} file {path} does not exist") from None


def read_class_descriptions(path):
    """(sorted LabelNames, display names); the file may or may not start with a header row."""
    names = {}
    with _open_csv(path, "class descriptions") as f:
        reader = csv.reader(f)
        for row in reader:
            if not row or not "".join(row).strip():
                continue
            if reader.line_num == 1 and row[0].strip().lower() == "labelname":
                continue  # V7's header; V6's file has none
            if len(row) != 2 or not row[0].strip():
                raise DatasetError(f"{path}, line {reader.line_num}: expected 'LabelName,DisplayName', got {row!r}")
            if row[0] in names:
                raise DatasetError(f"{path}, line {reader.line_num}: duplicate class {row[0]!r}")
            names[row[0].strip()] = row[1].strip()
    if not names:
        raise DatasetError(f"Open Images class descriptions file {path} lists no classes")
    mids = sorted(names)
    return mids, [names[m] for m in mids]


def _header_index(reader, path, columns):
    header = next(reader, None)
    if header is None:
        raise DatasetError(f"Open Images CSV {path} is empty (expected a header with {', '.join(columns)})")
    header = [h.strip().lstrip("\ufeff") for h in header]
    missing = [c for c in columns if c not in header]
    if missing:
        raise DatasetError(f"Open Images CSV {path}, line 1: header lacks column(s) {', '.join(missing)} "
                           f"(header: {','.join(header)})")
    return {c: header.index(c) for c in columns}, len(header)


def _flag(text, allowed, where):
    """A 0 / 1 (or -1 = unknown, where ``allowed`` has it) CSV flag; anything else names file, line, value."""
    try:
        value = float(text)
    except ValueError:
        value = None
    if value is None or value not in allowed:
        raise DatasetError(f"{where}: expected {' or '.join(str(a) for a in allowed)}, got {text!r}")
    return int(value)


def image_sizes(image_ids, image_root, image_ext=".jpg", workers=8):
    """{image id: (height, width)} read from the image headers; cached per image_root.

    Images that cannot be read are absent from the result (and not cached: a later run retries them).
    """
    image_root = os.path.abspath(image_root)
    cache_file = cache_root() / "openimages" / f"sizes-{stable_hash([image_root, image_ext])}.json"
    cached = {}
    if cache_file.is_file():
        try:
            cached = {k: tuple(v) for k, v in json.loads(cache_file.read_text()).items()}
        except ValueError:
            cached = {}
    todo = [i for i in dict.fromkeys(image_ids) if i not in cached]
    if todo:
        def read(image_id):
            try:
                return image_id, read_image_size(os.path.join(image_root, image_id + image_ext))
            except OSError:
                return image_id, None

        found = {}
        with ThreadPoolExecutor(workers) as pool:  # header reads are I/O bound
            for image_id, size in tqdm(pool.map(read, todo), total=len(todo), desc="Open Images sizes",
                                       unit="img", mininterval=2.0, disable=len(todo) < 1000):
                if size is not None:
                    found[image_id] = size
        if found:
            cached.update(found)
            atomic_write_json(cache_file, {k: list(v) for k, v in cached.items()})
    return {i: cached[i] for i in image_ids if i in cached}


def read_verified_classes(path, mid_to_contiguous, image_ids, report):
    """{image id: set of contiguous ids} from an image-level labels CSV (human labels, Confidence 0 or 1)."""
    wanted = set(image_ids)
    verified = {}
    with _open_csv(path, "image-level labels") as f:
        reader = csv.reader(f)
        index, ncols = _header_index(reader, path, LABEL_COLUMNS)
        for row in reader:
            if not row:
                continue
            if len(row) < ncols:
                report.skip(f"truncated rows in {os.path.basename(path)}", f"line {reader.line_num}")
                continue
            image_id = row[index["ImageID"]]
            if image_id not in wanted or row[index["Source"]].strip().lower() == "machine":
                continue
            try:
                confidence = float(row[index["Confidence"]])
            except ValueError:
                report.skip(f"rows with a non-numeric Confidence in {os.path.basename(path)}", f"line {reader.line_num}")
                continue
            if confidence not in (0.0, 1.0):
                continue
            cls = mid_to_contiguous.get(row[index["LabelName"]])
            if cls is None:
                report.note("image-level labels of classes without boxes (ignored)", f"line {reader.line_num}")
                continue
            verified.setdefault(image_id, set()).add(cls)
    return verified


def load_openimages_boxes(boxes_csv, class_descriptions_csv, image_root, image_labels_csv=None,
                          dataset_name=None, report=None, image_ext=".jpg"):
    """Load Open Images boxes as Box2Seg dataset dicts (images in the order of the boxes CSV).

    Annotation ``id`` is the box's line number in the CSV.
    """
    image_root = os.path.abspath(os.path.expanduser(image_root))
    name = dataset_name or os.path.splitext(os.path.basename(boxes_csv))[0]
    report = report or LoadReport(name, boxes_csv)
    mids, display = _classes(class_descriptions_csv, boxes_csv)
    mid_map = {m: i for i, m in enumerate(mids)}

    # Columnar, compact storage: the V6 train CSV has 14.6M boxes.
    image_index = {}  # image id -> index, in order of first appearance
    box_image, box_line, box_class, box_group, box_coords = array("i"), array("q"), array("i"), array("b"), array("d")
    box_attributes = {key: array("b") for key in ATTRIBUTE_COLUMNS.values()}
    base = os.path.basename(boxes_csv)
    with _open_csv(boxes_csv, "boxes") as f:
        reader = csv.reader(f)
        index, ncols = _header_index(reader, boxes_csv, BOX_COLUMNS)
        coord_cols = [index[c] for c in ("XMin", "YMin", "XMax", "YMax")]
        i_image, i_label, i_group = index["ImageID"], index["LabelName"], index["IsGroupOf"]
        attribute_cols = [(index[c], c, key) for c, key in ATTRIBUTE_COLUMNS.items()]
        for row in reader:
            line = reader.line_num
            if not row:
                continue
            if len(row) < ncols:
                report.skip("truncated CSV rows", f"{base} line {line}")
                continue
            image_id = row[i_image].strip()
            if not image_id:
                report.skip("CSV rows without an ImageID", f"{base} line {line}")
                continue
            k = image_index.setdefault(image_id, len(image_index))
            cls = mid_map.get(row[i_label])
            if cls is None:
                report.skip("boxes of a class not in the class descriptions", f"{base} line {line} ({row[i_label]!r})")
                continue
            if any(row[c].strip().lower() in _BOOLEAN_WORDS for c in coord_cols):
                raise DatasetError(f"Open Images CSV {boxes_csv}, line {line}: box coordinates must be numbers "
                                   f"in [0, 1], got XMin,YMin,XMax,YMax = {[row[c] for c in coord_cols]}")
            try:
                coords = [float(row[c]) for c in coord_cols]
            except ValueError:
                report.skip("boxes with non-numeric coordinates", f"{base} line {line}")
                continue
            group = _flag(row[i_group], (0, 1), f"Open Images CSV {boxes_csv}, line {line}, IsGroupOf")
            for c, column, key in attribute_cols:
                box_attributes[key].append(
                    _flag(row[c], (0, 1, -1), f"Open Images CSV {boxes_csv}, line {line}, {column}"))
            box_image.append(k)
            box_line.append(line)
            box_class.append(cls)
            box_group.append(group)
            box_coords.extend(coords)

    image_ids = list(image_index)
    sizes = image_sizes(image_ids, image_root, image_ext)
    records = []
    heights = np.zeros(len(image_ids), dtype=np.float64)
    widths = np.zeros(len(image_ids), dtype=np.float64)
    for k, image_id in enumerate(image_ids):
        if image_id not in sizes:
            report.skip("images missing or unreadable (with their boxes)", os.path.join(image_root, image_id + image_ext))
            records.append(None)
            continue
        heights[k], widths[k] = sizes[image_id]
        records.append({"file_name": os.path.join(image_root, image_id + image_ext), "image_id": image_id,
                        "height": int(heights[k]), "width": int(widths[k]), "annotations": []})

    owner = np.frombuffer(box_image, dtype=np.int32) if len(box_image) else np.zeros(0, np.int32)
    readable = widths[owner] > 0
    if (~readable).any():
        report.skip("boxes of missing or unreadable images", count=int((~readable).sum()))
    norm = np.frombuffer(box_coords, dtype=np.float64).reshape(-1, 4) if len(box_coords) else np.zeros((0, 4))
    w, h = widths[owner], heights[owner]
    absolute = norm * np.stack([w, h, w, h], axis=1)  # normalised xmin, ymin, xmax, ymax -> pixels
    boxes, status = validate_boxes(absolute[readable], w[readable], h[readable])
    kept_rows = np.flatnonzero(readable)
    report_box_status(status, report,
                      lambda j: f"{base} line {box_line[kept_rows[j]]} (image {image_ids[owner[kept_rows[j]]]})")
    for j in np.flatnonzero(status <= BOX_CLIPPED):
        i = kept_rows[j]
        records[owner[i]]["annotations"].append({
            "bbox": boxes[j].tolist(), "bbox_mode": BoxMode.XYXY_ABS, "category_id": box_class[i],
            "iscrowd": box_group[i], "id": box_line[i],
            **{key: values[i] for key, values in box_attributes.items()}})
    records = {r["image_id"]: r for r in records if r is not None}

    dataset_dicts = list(records.values())
    if image_labels_csv is not None:
        verified = read_verified_classes(image_labels_csv, mid_map, records, report)
        for record in dataset_dicts:
            classes = verified.get(record["image_id"], set()) | {a["category_id"] for a in record["annotations"]}
            record["verified_classes"] = sorted(classes)
    report.finish(dataset_dicts)
    if dataset_name is not None:
        update_metadata(dataset_name, _class_metadata(mids, display))
    return dataset_dicts


def read_box_label_names(boxes_csv):
    """(sorted LabelNames of a boxes CSV, the same as display names): the classes of a CSV that comes
    without a class descriptions file."""
    with _open_csv(boxes_csv, "boxes") as f:
        reader = csv.reader(f)
        index, ncols = _header_index(reader, boxes_csv, BOX_COLUMNS)
        mids = sorted({row[index["LabelName"]].strip() for row in reader if len(row) >= ncols} - {""})
    if not mids:
        raise DatasetError(f"Open Images CSV {boxes_csv} has no box rows (no classes)")
    return mids, list(mids)


def _classes(class_descriptions_csv, boxes_csv):
    if class_descriptions_csv is None:
        return read_box_label_names(boxes_csv)
    return read_class_descriptions(class_descriptions_csv)


def _class_metadata(mids, display):
    return semantic_metadata(display, {m: i for i, m in enumerate(mids)}, has_masks=False)


def register_openimages_boxes(name, boxes_csv, class_descriptions_csv, image_root, image_labels_csv=None,
                              image_ext=".jpg"):
    """Register an Open Images box dataset (lazy: the CSVs are read when the dataset or its classes are used).

    ``class_descriptions_csv`` None: the classes are the LabelNames of the boxes CSV."""
    paths = {k: (os.path.abspath(os.path.expanduser(v)) if v is not None else None) for k, v in
             dict(boxes_csv=boxes_csv, class_descriptions_csv=class_descriptions_csv, image_root=image_root,
                  image_labels_csv=image_labels_csv).items()}
    register_box_dataset(
        name,
        lambda: load_openimages_boxes(**paths, dataset_name=name, image_ext=image_ext),
        {**paths, "box_labels_exhaustive": False},
        lazy_metadata=lambda: _class_metadata(*_classes(paths["class_descriptions_csv"], paths["boxes_csv"])),
        lazy_keys=_LAZY_KEYS,
    )
    _REGISTERED[name] = (paths["boxes_csv"], paths["image_root"])


def parse_openimages_spec(spec):
    """``"NAME=BOXES.csv:IMAGE_ROOT"`` -> (name, boxes_csv, image_root).

    The CSV path ends at the first ``:`` that follows ``.csv`` (so either path may contain ``:``); without a
    ``.csv`` suffix, at the first ``:``.
    """
    usage = (f"malformed Open Images dataset spec {spec!r}: expected NAME=BOXES.csv:IMAGE_ROOT, e.g. "
             "mydata=annotations/train-annotations-bbox.csv:images/train")
    name, eq, paths = str(spec).partition("=")
    name = name.strip()
    if not eq or not name or ":" not in paths:
        raise DatasetError(usage)
    cut = paths.lower().find(".csv:")
    cut = cut + len(".csv") if cut >= 0 else paths.find(":")
    boxes_csv, image_root = paths[:cut].strip(), paths[cut + 1 :].strip()
    if not boxes_csv or not image_root:
        raise DatasetError(usage)
    return name, boxes_csv, image_root


def find_class_descriptions(boxes_csv):
    """The class descriptions CSV beside ``boxes_csv`` or one folder up (``annotations/`` layout), or None."""
    folder = os.path.dirname(os.path.abspath(os.path.expanduser(boxes_csv)))
    for where in (folder, os.path.dirname(folder)):
        for candidate in CLASS_DESCRIPTION_FILES:
            path = os.path.join(where, candidate)
            if os.path.isfile(path):
                return path
    return None


def register_openimages_spec(spec):
    """Register a dataset from an ``--openimages-dataset`` / ``DATASETS.OPENIMAGES_FORMAT`` spec; returns its
    name. The files must exist (a typo fails at once, naming the path). Registering the same name again with
    the same files is a no-op; with other files (or a name another loader registered) it is an error."""
    name, boxes_csv, image_root = parse_openimages_spec(spec)
    boxes_csv = os.path.abspath(os.path.expanduser(boxes_csv))
    image_root = os.path.abspath(os.path.expanduser(image_root))
    if not os.path.isfile(boxes_csv):
        raise DatasetError(f"dataset spec {spec!r}: boxes CSV {boxes_csv} does not exist")
    if not os.path.isdir(image_root):
        raise DatasetError(f"dataset spec {spec!r}: image folder {image_root} does not exist")
    if registered_metadata(name) is not None:
        if _REGISTERED.get(name) == (boxes_csv, image_root):
            return name
        raise DatasetError(f"dataset spec {spec!r}: the name {name!r} is already registered with other files "
                           "(choose another name)")
    register_openimages_boxes(name, boxes_csv, find_class_descriptions(boxes_csv), image_root)
    return name
