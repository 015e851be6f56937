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
- Class hierarchy JSON (optional, ``bbox_labels_600_hierarchy.json``): a class verified absent makes its
  descendants verified absent too; a class verified present (or boxed) does not make its parents verified
  (:func:`expand_verified` says why).
- Scale: the boxes CSV is parsed once into a cached columnar index every process maps
  (:mod:`.openimages_index`). ``DatasetCatalog.get`` returns :class:`OpenImagesRecords`, a lazy sequence
  whose records are built on access from the index and a cached *view* of it (the kept boxes grouped by
  image, the image sizes, the verified classes as CSR arrays; about 12 bytes a box and 30 an image, mapped),
  never a list of dicts (about 1 KB a box: GBs per process for the V6 train CSV). The official instance
  masks load as a ground-truth COCO JSON for ``box2seg score`` (:mod:`.openimages_masks`).
Open Images box labels are not exhaustive (``box_labels_exhaustive = False``): an unverified class may be
present without a box. Bad input: a missing column, a malformed class file, a flag that is not 0 / 1 or a
coordinate written as a boolean (``True`` / ``False``) raises, naming the file and line; a truncated or
non-numeric row, an unknown class, a missing / unreadable image are skipped and counted.

From the command line, ``--openimages-dataset NAME=BOXES.csv:IMAGE_ROOT`` registers one's own CSV
(:func:`register_openimages_spec`): the class descriptions file is found next to the boxes CSV (or one folder
up, Open Images' ``annotations/`` layout), else the classes are the LabelNames of the boxes CSV itself.
"""
import csv
import hashlib
import json
import logging
import mmap
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from detectron2.structures import BoxMode
from tqdm import tqdm

from ..cache import annotations_hash, atomic_path, atomic_write_json, cache_root, file_lock, stable_hash
from .openimages_index import ATTRIBUTE_COLUMNS, BOX_COLUMNS, BoxIndex, header_index, openimages_index
from .lazy import LazyRecords
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

LABEL_COLUMNS = ("ImageID", "Source", "LabelName", "Confidence")
# Class descriptions files looked for next to a user's boxes CSV (V6 name, V7 name).
CLASS_DESCRIPTION_FILES = ("class-descriptions-boxable.csv", "oidv7-class-descriptions-boxable.csv")
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


def read_verified_classes(path, mid_map, image_ids, report):
    """{image id: (present, absent)} sets of contiguous ids from an image-level labels CSV: human labels,
    Confidence 1 (verified present) or 0 (verified absent)."""
    wanted = set(image_ids)
    verified = {}
    with _open_csv(path, "image-level labels") as f:
        reader = csv.reader(f)
        index, ncols = header_index(reader, path, LABEL_COLUMNS)
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
            cls = mid_map.get(row[index["LabelName"]])
            if cls is None:
                report.note("image-level labels of classes without boxes (ignored)", f"line {reader.line_num}")
                continue
            verified.setdefault(image_id, (set(), set()))[0 if confidence == 1.0 else 1].add(cls)
    return verified


def read_class_hierarchy(path, mid_map):
    """{contiguous id: contiguous ids of its descendants} from Open Images' class hierarchy JSON
    (``bbox_labels_600_hierarchy.json``: nested ``LabelName`` / ``Subcategory``; ``Part`` links are not
    kinds of a class and are not followed, as in the official hierarchical evaluation). A class listed
    under several parents gets the descendants of every listing; nodes without boxes (the root "Entity")
    still pass their descendants down."""
    try:
        tree = json.loads(open(path, encoding="utf-8").read())
    except FileNotFoundError:
        raise DatasetError(f"Open Images class hierarchy file {path} does not exist") from None
    except ValueError as e:
        raise DatasetError(f"Open Images class hierarchy file {path} is not JSON: {e}") from None
    descendants = {}

    def walk(node, ancestors):
        if not isinstance(node, dict) or "LabelName" not in node:
            raise DatasetError(f"Open Images class hierarchy file {path}: a node without 'LabelName': "
                               f"{str(node)[:80]}")
        cls = mid_map.get(node["LabelName"])
        for a in ancestors:
            if cls is not None:
                descendants.setdefault(a, set()).add(cls)
        below = ancestors + ([cls] if cls is not None else [])
        for child in node.get("Subcategory", ()):
            walk(child, below)

    walk(tree, [])
    return {c: frozenset(d - {c}) for c, d in descendants.items()}


def expand_verified(present, absent, box_classes, descendants):
    """The verified classes of an image: ``present`` | ``absent`` | ``box_classes``, and every descendant of
    an ``absent`` class (no animal in the image: no dog either). Present classes are *not* propagated to
    their parents: a dog makes "animal" present, but its boxes are then not exhaustive (another animal may
    be unboxed), so "animal" stays unverified (in the loss's U) unless it has its own label."""
    verified = set(present) | set(absent) | set(box_classes)
    for cls in absent:
        verified |= descendants.get(cls, frozenset())
    return verified


def load_openimages_boxes(boxes_csv, class_descriptions_csv, image_root, image_labels_csv=None,
                          dataset_name=None, report=None, image_ext=".jpg", hierarchy_json=None, lazy=False):
    """Load Open Images boxes as Box2Seg dataset dicts (images in the order of the boxes CSV).

    Annotation ``id`` is the box's line number in the CSV. With ``hierarchy_json`` (and image-level labels),
    a verified-absent class makes its descendants verified absent too (:func:`expand_verified`).
    ``lazy``: return an :class:`OpenImagesRecords` (the same records, built on access; what the registered
    datasets return) instead of a list (every record in memory: the reference the lazy one is tested against).
    """
    image_root = os.path.abspath(os.path.expanduser(image_root))
    name = dataset_name or os.path.splitext(os.path.basename(boxes_csv))[0]
    report = report or LoadReport(name, boxes_csv)
    mids, display = _classes(class_descriptions_csv, boxes_csv)
    if lazy:
        records = OpenImagesRecords.load(boxes_csv, mids, image_root, image_labels_csv, report, image_ext,
                                         hierarchy_json)
        report.num_images, report.num_boxes = len(records), records.num_boxes
        empty = records.empty_positions()
        if len(empty):
            report.note("images without boxes (background-only loss)", f"image id {records.image_id(empty[0])!r}",
                        count=len(empty))
        report.log()  # as LoadReport.finish, from the view's arrays
        if dataset_name is not None:
            update_metadata(dataset_name, _class_metadata(mids, display))
        return records
    mid_map = {m: i for i, m in enumerate(mids)}

    # The CSV parsed once into a cached columnar index that this process maps (openimages_index).
    index = openimages_index(boxes_csv)
    index.replay(report)
    base = os.path.basename(boxes_csv)
    lut = np.array([mid_map.get(m, -1) for m in index.labels] or [-1], np.int64)
    classes = lut[np.asarray(index.label)] if len(index) else np.zeros(0, np.int64)
    for j in np.flatnonzero(classes < 0)[:5]:
        report.skip("boxes of a class not in the class descriptions",
                    f"{base} line {int(index.line[j])} ({index.labels[int(index.label[j])]!r})")
    unknown = int((classes < 0).sum())
    if unknown > 5:
        report.skip("boxes of a class not in the class descriptions", None, count=unknown - 5)
    kept = np.flatnonzero(classes >= 0)
    image_ids = [index.image_id(k) for k in range(len(index.image_ids))]
    owner_all = np.asarray(index.image)[kept]
    box_line = np.asarray(index.line)[kept].tolist()
    box_class = classes[kept].tolist()
    box_group = np.asarray(index.group)[kept].tolist()
    attribute_values = np.asarray(index.attributes)[kept]
    box_attributes = {key: attribute_values[:, c].tolist() for c, key in enumerate(ATTRIBUTE_COLUMNS.values())}
    norm_all = np.asarray(index.coords)[kept]

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

    owner = owner_all
    readable = widths[owner] > 0
    if (~readable).any():
        report.skip("boxes of missing or unreadable images", count=int((~readable).sum()))
    norm = norm_all
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
        descendants = read_class_hierarchy(hierarchy_json, mid_map) if hierarchy_json is not None else {}
        for record in dataset_dicts:
            present, absent = verified.get(record["image_id"], ((), ()))
            classes = expand_verified(present, absent, {a["category_id"] for a in record["annotations"]},
                                      descendants)
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
        index, ncols = header_index(reader, boxes_csv, BOX_COLUMNS)
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
                              image_ext=".jpg", hierarchy_json=None):
    """Register an Open Images box dataset (lazy: the CSVs are read when the dataset or its classes are used).

    ``class_descriptions_csv`` None: the classes are the LabelNames of the boxes CSV."""
    paths = {k: (os.path.abspath(os.path.expanduser(v)) if v is not None else None) for k, v in
             dict(boxes_csv=boxes_csv, class_descriptions_csv=class_descriptions_csv, image_root=image_root,
                  image_labels_csv=image_labels_csv, hierarchy_json=hierarchy_json).items()}
    register_box_dataset(
        name,
        lambda: load_openimages_boxes(**paths, dataset_name=name, image_ext=image_ext, lazy=True),
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


# ------------------------------------------------------------------------------------------------ lazy records

VIEW_VERSION = 1
_VIEW_ARRAYS = ("images", "hw", "rows", "starts", "verified_indptr", "verified")
_CHUNK = 1 << 18  # boxes per vectorised step of a view build (validate_boxes' temporaries: about 50 MB)


def image_sizes_array(index, image_root, image_ext=".jpg", workers=8):
    """(images, 2) int32 heights and widths aligned with ``index.image_ids``, -1 where an image is missing or
    unreadable; cached as ``sizes-<hash of image_root>.npy`` in the index folder (8 bytes an image).

    The JSON cache of :func:`image_sizes` (a dict per image: hundreds of MB parsed for 1.7M images) is read
    once, when the array does not exist yet; missing images are retried on every load, as there."""
    image_root = os.path.abspath(image_root)
    key = stable_hash([image_root, image_ext])
    store = Path(index.folder) / f"sizes-{key}.npy"
    n = len(index.image_ids)
    sizes = None
    if store.is_file():
        try:
            sizes = np.array(np.load(store), dtype=np.int32)
        except (OSError, ValueError):
            sizes = None
        if sizes is not None and sizes.shape != (n, 2):
            sizes = None
    fresh = sizes is None
    if fresh:
        sizes = np.full((n, 2), -1, np.int32)
        old = cache_root() / "openimages" / f"sizes-{key}.json"
        if old.is_file():
            try:
                cached = json.loads(old.read_text())
            except ValueError:
                cached = {}
            for k in range(n):
                size = cached.get(index.image_id(k))
                if size is not None:
                    sizes[k] = size
            del cached
    todo = np.flatnonzero(sizes[:, 0] < 0)
    found = 0
    if len(todo):
        def read(k):
            try:
                return k, read_image_size(os.path.join(image_root, index.image_id(k) + image_ext))
            except OSError:
                return k, None

        with ThreadPoolExecutor(workers) as pool:  # header reads are I/O bound
            for k, size in tqdm(pool.map(read, todo.tolist()), total=len(todo), desc="Open Images sizes",
                                unit="img", mininterval=2.0, disable=len(todo) < 1000):
                if size is not None:
                    sizes[k] = size
                    found += 1
    if fresh or found:
        with atomic_path(store) as tmp:
            with open(tmp, "wb") as f:
                np.save(f, sizes)
    return sizes


def _file_stamp(path):
    if path is None:
        return None
    path = os.path.abspath(os.path.expanduser(path))
    try:
        stat = os.stat(path)
    except FileNotFoundError:
        return [path, None]
    return [path, stat.st_size, stat.st_mtime_ns]


def _report_state(report):
    """A :class:`LoadReport`'s skipped and noted entries as JSON: ``[[kind, reason, count, examples]]``."""
    return [[kind, reason, count, report._examples.get((kind, reason), [])]
            for kind, table in (("skip", report.skipped), ("note", report.noted)) for reason, count in table.items()]


def _replay_report(entries, report):
    for kind, reason, count, examples in entries:
        add = report.skip if kind == "skip" else report.note
        for where in examples:
            add(reason, where)
        if count > len(examples):
            add(reason, None, count=count - len(examples))


def _verified_pairs(path, mid_map, record_ids, report):
    """(record positions, classes, absent flags) int arrays of the human image-level labels of the records'
    images, read and reported exactly as :func:`read_verified_classes` does, in chunks: the image ids are
    matched with a sorted byte-string array (``record_ids``), not a set of Python strings."""
    order = np.argsort(record_ids, kind="stable")
    sorted_ids = record_ids[order]
    pos, cls, absent = [], [], []

    def flush(entries):
        ids = [e[1] for e in entries if e[1] is not None]
        wanted = np.zeros(len(ids), bool)
        found = np.zeros(len(ids), np.int64)
        if ids and len(sorted_ids):
            chunk = np.array(ids)
            width = max(chunk.dtype.itemsize, sorted_ids.dtype.itemsize)
            chunk = chunk.astype(f"S{width}")
            table = sorted_ids.astype(f"S{width}") if sorted_ids.dtype.itemsize < width else sorted_ids
            at = np.minimum(np.searchsorted(table, chunk), len(table) - 1)
            wanted = table[at] == chunk
            found = order[at]
        j = 0
        for line, image_id, human, confidence, label in entries:
            if image_id is None:
                report.skip(f"truncated rows in {os.path.basename(path)}", f"line {line}")
                continue
            k = j
            j += 1
            if not wanted[k] or not human:
                continue
            try:
                value = float(confidence)
            except ValueError:
                report.skip(f"rows with a non-numeric Confidence in {os.path.basename(path)}", f"line {line}")
                continue
            if value not in (0.0, 1.0):
                continue
            c = mid_map.get(label)
            if c is None:
                report.note("image-level labels of classes without boxes (ignored)", f"line {line}")
                continue
            pos.append(int(found[k]))
            cls.append(c)
            absent.append(value == 0.0)

    with _open_csv(path, "image-level labels") as f:
        reader = csv.reader(f)
        index, ncols = header_index(reader, path, LABEL_COLUMNS)
        i_image, i_source, i_label, i_conf = (index[c] for c in LABEL_COLUMNS)
        entries = []
        for row in reader:
            if not row:
                continue
            if len(row) < ncols:
                entries.append((reader.line_num, None, None, None, None))
            else:
                entries.append((reader.line_num, row[i_image].encode("utf-8"),
                                row[i_source].strip().lower() != "machine", row[i_conf], row[i_label]))
            if len(entries) >= 200_000:
                flush(entries)
                entries = []
        flush(entries)
    return np.asarray(pos, np.int64), np.asarray(cls, np.int64), np.asarray(absent, bool)


def _descendant_csr(descendants, num_classes):
    counts = np.zeros(num_classes, np.int64)
    for c, d in descendants.items():
        counts[c] = len(d)
    indptr = np.concatenate([[0], np.cumsum(counts)])
    flat = np.zeros(int(indptr[-1]), np.int64)
    for c, d in descendants.items():
        flat[indptr[c]:indptr[c + 1]] = sorted(d)
    return indptr, flat


def _expand_ranges(indptr, flat, keys):
    """``flat[indptr[k]:indptr[k + 1]]`` for every k of ``keys``, concatenated, and how many each gave."""
    starts, counts = indptr[keys], indptr[keys + 1] - indptr[keys]
    total = int(counts.sum())
    offsets = np.repeat(starts - np.cumsum(counts) + counts, counts) + np.arange(total)
    return flat[offsets], counts


def _build_view(folder, index, sizes, mids, image_root, image_ext, image_labels_csv, hierarchy_json, source):
    """Validate and group the boxes (as the eager loader does, vectorised in chunks) and write the view's
    arrays and report to ``folder`` (``meta.json`` last)."""
    report = LoadReport("view", source)
    index.replay(report)
    base = os.path.basename(source)
    mid_map = {m: i for i, m in enumerate(mids)}
    lut = np.array([mid_map.get(m, -1) for m in index.labels] or [-1], np.int32)
    n, n_images = len(index), len(index.image_ids)
    label, image, line = index.label, index.image, index.line

    unknown = []
    for s in range(0, n, _CHUNK):
        unknown.extend((np.flatnonzero(lut[label[s:s + _CHUNK]] < 0)[:5] + s).tolist())
        if len(unknown) >= 5:
            break
    for j in unknown[:5]:
        report.skip("boxes of a class not in the class descriptions",
                    f"{base} line {int(line[j])} ({index.labels[int(label[j])]!r})")
    num_unknown = sum(int((lut[label[s:s + _CHUNK]] < 0).sum()) for s in range(0, n, _CHUNK))
    if num_unknown > 5:
        report.skip("boxes of a class not in the class descriptions", None, count=num_unknown - 5)

    present = sizes[:, 0] >= 0
    for k in np.flatnonzero(~present)[:3].tolist():
        report.skip("images missing or unreadable (with their boxes)",
                    os.path.join(image_root, index.image_id(k) + image_ext))
    if (~present).sum() > 3:
        report.skip("images missing or unreadable (with their boxes)", None, count=int((~present).sum()) - 3)
    heights = np.where(present, sizes[:, 0], 0).astype(np.float64)
    widths = np.where(present, sizes[:, 1], 0).astype(np.float64)

    # The readable boxes' status (int8), in CSV order, then one report over all of them (as the eager one).
    readable_rows, status = [], []
    unreadable = 0
    for s in range(0, n, _CHUNK):
        known = np.flatnonzero(lut[label[s:s + _CHUNK]] >= 0) + s
        owner = image[known]
        readable = widths[owner] > 0
        unreadable += int((~readable).sum())
        rows = known[readable]
        w, h = widths[image[rows]], heights[image[rows]]
        absolute = np.asarray(index.coords[rows]) * np.stack([w, h, w, h], axis=1)
        readable_rows.append(rows.astype(np.int32))
        status.append(validate_boxes(absolute, w, h)[1])
    if unreadable:
        report.skip("boxes of missing or unreadable images", count=unreadable)
    readable_rows = np.concatenate(readable_rows) if readable_rows else np.zeros(0, np.int32)
    status = np.concatenate(status) if status else np.zeros(0, np.int8)
    report_box_status(status, report, lambda j: f"{base} line {int(line[readable_rows[j]])} "
                                                f"(image {index.image_id(int(image[readable_rows[j]]))})")
    rows = readable_rows[status <= BOX_CLIPPED]
    del readable_rows, status
    owners = np.asarray(image[rows])
    rows = rows[np.argsort(owners, kind="stable")]  # grouped by image, CSV order within
    counts = np.bincount(owners, minlength=n_images)
    del owners
    images = np.flatnonzero(present).astype(np.int32)
    starts = np.concatenate([[0], np.cumsum(counts[images])]).astype(np.int64)
    arrays = {"images": images, "hw": sizes[images].astype(np.int32), "rows": rows, "starts": starts}

    if image_labels_csv is not None:
        pos, cls, absent = _verified_pairs(image_labels_csv, mid_map, np.asarray(index.image_ids)[images], report)
        box_pos = np.repeat(np.arange(len(images), dtype=np.int64), np.diff(starts))
        box_cls = lut[np.asarray(label[rows])].astype(np.int64)
        parts = [(pos, cls), (box_pos, box_cls)]
        if hierarchy_json is not None:
            indptr, flat = _descendant_csr(read_class_hierarchy(hierarchy_json, mid_map), len(mids))
            below, per = _expand_ranges(indptr, flat, cls[absent])
            parts.append((np.repeat(pos[absent], per), below))
        keys = np.unique(np.concatenate([p * len(mids) + c for p, c in parts]))
        arrays["verified_indptr"] = np.searchsorted(keys // len(mids), np.arange(len(images) + 1)).astype(np.int64)
        arrays["verified"] = (keys % len(mids)).astype(np.int32)
    for name, values in arrays.items():
        with atomic_path(folder / f"{name}.npy") as tmp:
            with open(tmp, "wb") as f:
                np.save(f, values)
    atomic_write_json(folder / "meta.json", {  # last: marks the view complete
        "version": VIEW_VERSION, "lut": lut.tolist(), "image_root": image_root, "image_ext": image_ext,
        "verified": image_labels_csv is not None, "report": _report_state(report), "boxes": int(len(rows))})


def index_columns(index):
    return [getattr(index, name) for name in ("label", "group", "line", "coords", "attributes", "image_ids", "image")]


def release_pages(arrays):
    """Hand this process's resident pages of mapped arrays back (``madvise(MADV_DONTNEED)``): they stay in
    the page cache, and a later access maps them again."""
    for array in arrays:
        mapping = getattr(array, "_mmap", None)
        if mapping is not None:
            try:
                mapping.madvise(mmap.MADV_DONTNEED)
            except (AttributeError, OSError, ValueError):  # no madvise here: the pages stay, nothing else
                return


class OpenImagesRecords(LazyRecords):
    """Open Images records built on access (``DatasetCatalog.get`` of a registered Open Images dataset).

    Equal, record for record, to what ``load_openimages_boxes(..., lazy=False)`` returns. Backed by the mapped
    box index (:mod:`.openimages_index`) and a cached view under ``<index folder>/view-<key>/`` (key: the
    classes, image root, image sizes, labels and hierarchy files): ``images`` (int32, index image of each
    record), ``hw`` (int32 heights, widths), ``rows`` (int32, index rows of the kept boxes grouped by record),
    ``starts`` (int64 CSR offsets into ``rows``), ``verified_indptr`` / ``verified`` (the sorted verified
    classes of each record, CSR), and ``meta.json`` (class lookup, the load report to replay, the
    annotations hash once computed). Pickles as the two folders (workers map them again).
    """

    def __init__(self, index_folder, view_folder):
        super().__init__()
        self.index_folder, self.view_folder = str(index_folder), str(view_folder)
        self._map()

    def _map(self):
        view = Path(self.view_folder)
        try:
            self._meta = json.loads((view / "meta.json").read_text())
        except FileNotFoundError:
            raise DatasetError(f"Open Images view {view} was removed (cache cleared?): load the dataset again "
                               "(DatasetCatalog.get) in the parent process") from None
        self._index = BoxIndex(self.index_folder)
        self._lut = np.asarray(self._meta["lut"], np.int64)
        for name in _VIEW_ARRAYS:
            path = view / f"{name}.npy"
            setattr(self, f"_{name}", np.load(path, mmap_mode="r") if path.is_file() else None)
        self._root, self._ext = self._meta["image_root"], self._meta["image_ext"]
        self._attribute_keys = list(ATTRIBUTE_COLUMNS.values())

    # Mapped pages stay in this process's RSS once touched (and count in its peak, VmHWM), though they are
    # the page cache's, shared by every process: a full pass would keep the whole index resident (about 50
    # bytes a box, 0.7 GiB for V6 train), and random accesses fault in 64 KB around each page they touch
    # (Linux's fault-around). They are handed back (madvise DONTNEED; a later access maps them again from the
    # page cache, no disk read) every _RELEASE_EVERY accesses (13 syscalls, well under a microsecond a
    # record): at most about 50 MB resident, and after the whole-column passes (box_items, positions).
    _RELEASE_EVERY = 64

    def _release_pages(self):
        release_pages([getattr(self, f"_{name}") for name in _VIEW_ARRAYS] + index_columns(self._index))

    def __getitem__(self, i):
        self._accesses = getattr(self, "_accesses", 0) + 1
        if self._accesses % self._RELEASE_EVERY == 0:
            self._release_pages()
        return super().__getitem__(i)

    def __getstate__(self):
        return {"index_folder": self.index_folder, "view_folder": self.view_folder, "fields": self._fields}

    def __setstate__(self, state):
        self.index_folder, self.view_folder = state["index_folder"], state["view_folder"]
        self._fields = state["fields"]
        self._map()

    @classmethod
    def load(cls, boxes_csv, mids, image_root, image_labels_csv, report, image_ext=".jpg", hierarchy_json=None):
        """Map (building first if missing, under a lock) the view of these files; replay its report."""
        index = openimages_index(boxes_csv)
        sizes = image_sizes_array(index, image_root, image_ext)
        key = stable_hash([VIEW_VERSION, index.folder.name, hashlib.sha1(sizes.tobytes()).hexdigest(), mids,
                           image_root, image_ext, _file_stamp(image_labels_csv), _file_stamp(hierarchy_json)])
        folder = Path(index.folder) / f"view-{key}"
        if not (folder / "meta.json").is_file():
            with file_lock(folder / ".lock", busy_message=f"waiting for another process building {folder}"):
                if not (folder / "meta.json").is_file():
                    _build_view(folder, index, sizes, mids, image_root, image_ext, image_labels_csv,
                                hierarchy_json, os.path.abspath(boxes_csv))
                    release_pages(index_columns(index))  # the build read every column
        del sizes
        records = cls(index.folder, folder)
        _replay_report(records._meta["report"], report)
        return records

    def __len__(self):
        return len(self._images)

    @property
    def num_boxes(self):
        return int(self._starts[-1]) if len(self._starts) else 0

    def image_id(self, i):
        return self._index.image_id(int(self._images[i]))

    def image_ids(self):
        ids = self._index.image_ids
        return (ids[k].decode("utf-8") for k in np.asarray(self._images).tolist())

    def box_items(self, crowd=False):
        starts = np.asarray(self._starts)
        counts = np.diff(starts)
        dtype = np.int32 if starts[-1] < 2**31 else np.int64  # 8 bytes a box, not 16: 14.6M boxes
        positions = np.repeat(np.arange(len(counts), dtype=dtype), counts)
        within = np.arange(int(starts[-1]), dtype=dtype) - np.repeat(starts[:-1].astype(dtype), counts)
        if not crowd:
            keep = np.asarray(self._index.group[np.asarray(self._rows)]) == 0
            positions, within = positions[keep], within[keep]
        self._release_pages()
        return positions, within

    def empty_positions(self):
        """Positions of the records without boxes (int64)."""
        return np.flatnonzero(np.diff(np.asarray(self._starts)) == 0)

    def positions_with_boxes(self, crowd=True):
        starts = np.asarray(self._starts)
        if crowd:
            return np.flatnonzero(np.diff(starts) > 0)
        kept = np.concatenate([[0], np.cumsum(np.asarray(self._index.group[np.asarray(self._rows)]) == 0)])
        self._release_pages()
        return np.flatnonzero(kept[starts[1:]] - kept[starts[:-1]] > 0)

    def _build(self, i):
        image_id = self._index.image_id(int(self._images[i]))
        h, w = (int(v) for v in self._hw[i])
        record = {"file_name": os.path.join(self._root, image_id + self._ext), "image_id": image_id,
                  "height": h, "width": w, "annotations": []}
        start, end = int(self._starts[i]), int(self._starts[i + 1])
        if end > start:
            rows = np.asarray(self._rows[start:end])
            index = self._index
            limits = np.array([w, h, w, h], np.float64)
            boxes = np.clip(np.asarray(index.coords[rows]) * limits, 0.0, limits).tolist()
            classes = self._lut[np.asarray(index.label[rows])].tolist()
            groups, lines = index.group[rows].tolist(), index.line[rows].tolist()
            attributes = index.attributes[rows].tolist()
            keys = self._attribute_keys
            record["annotations"] = [
                {"bbox": boxes[j], "bbox_mode": BoxMode.XYXY_ABS, "category_id": classes[j], "iscrowd": groups[j],
                 "id": lines[j], **dict(zip(keys, attributes[j]))} for j in range(end - start)]
        if self._verified_indptr is not None:
            record["verified_classes"] = self._verified[
                int(self._verified_indptr[i]):int(self._verified_indptr[i + 1])].tolist()
        return record

    def annotations_hash(self, length=12):
        """The records' :func:`~box2seg.data.cache.annotations_hash` (the same value as for the list), streamed
        once and kept in the view's ``hash.json``: a full pass over 14.6M boxes is minutes of Python."""
        path = Path(self.view_folder) / "hash.json"
        try:
            return json.loads(path.read_text())["sha1"][:length]
        except (OSError, ValueError, KeyError):
            pass
        digest = annotations_hash((r for r in self), length=40)
        atomic_write_json(path, {"sha1": digest})
        return digest[:length]
