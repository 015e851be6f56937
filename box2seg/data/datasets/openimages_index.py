"""An Open Images boxes CSV parsed once into a cached columnar index that every process memory-maps.

The V6 train CSV (14.6M boxes, 2.1 min and about 6.3 GB to parse in Python) used to be parsed by every
process that touched the dataset. Now the first one writes its columns as ``.npy`` files under
``cache_root()/openimages/index-<key>/`` (key: the CSV's absolute path, size and modification time, and
:data:`INDEX_VERSION`) and every process, the first included, maps them read-only
(``np.load(mmap_mode="r")``): the pages are the page cache's, shared by all the processes of a machine.

Columns (one row per kept CSV row, in CSV order): ``image`` (int32, index into ``image_ids``), ``line``
(int32, the row's line number: the annotation id), ``label`` (int32, index into ``labels``, the CSV's
LabelNames sorted), ``group`` (int8, IsGroupOf), ``coords`` (float64 (n, 4): normalised XMin, YMin, XMax,
YMax, as the CSV has them), ``attributes`` (int8 (n, 4): IsOccluded, IsTruncated, IsDepiction, IsInside).
``image_ids`` is a fixed-width byte-string array (ImageIDs in order of first appearance). About 53 bytes a
box: 0.77 GB mapped for the 14.6M-box train CSV. The class descriptions are not part of the index: the
same index serves any class list. Rows the parser skips (truncated, no ImageID, non-numeric coordinates)
are recorded in ``meta.json`` and replayed into each load's report; rows that raise (a flag that is not
0 / 1, a boolean coordinate) raise before anything is cached.
"""
import csv
import json
import os
from array import array
from pathlib import Path

import numpy as np

from ..cache import atomic_path, atomic_write_json, cache_root, file_lock, stable_hash
from .common import DatasetError

__all__ = ["INDEX_VERSION", "BOX_COLUMNS", "ATTRIBUTE_COLUMNS", "BoxIndex", "openimages_index", "index_folder",
           "header_index"]

INDEX_VERSION = 1
BOX_COLUMNS = ("ImageID", "Source", "LabelName", "Confidence", "XMin", "XMax", "YMin", "YMax", "IsOccluded",
               "IsTruncated", "IsGroupOf", "IsDepiction", "IsInside")
# Per-box attributes kept on the annotations: CSV column -> annotation key.
ATTRIBUTE_COLUMNS = {"IsOccluded": "is_occluded", "IsTruncated": "is_truncated", "IsDepiction": "is_depiction",
                     "IsInside": "is_inside"}
_BOOLEAN_WORDS = frozenset({"true", "false"})
_COLUMNS = ("image", "line", "label", "group", "coords", "attributes", "image_ids")
_EXAMPLES = 5


def index_folder(boxes_csv):
    """The cache folder of ``boxes_csv``'s index (keyed by path, size, mtime and the index version)."""
    path = os.path.abspath(os.path.expanduser(boxes_csv))
    try:
        stat = os.stat(path)
    except FileNotFoundError:
        raise DatasetError(f"Open Images boxes file {path} does not exist") from None
    key = stable_hash([path, stat.st_size, stat.st_mtime_ns, INDEX_VERSION])
    return cache_root() / "openimages" / f"index-{key}"


class BoxIndex:
    """The mapped columns of one boxes CSV (module docstring); ``skipped``: ``[[reason, count, examples]]``."""

    def __init__(self, folder):
        self.folder = Path(folder)
        meta = json.loads((self.folder / "meta.json").read_text())
        self.csv = meta["csv"]
        self.labels = meta["labels"]
        self.skipped = meta["skipped"]
        for name in _COLUMNS:
            setattr(self, name, np.load(self.folder / f"{name}.npy", mmap_mode="r"))

    def __len__(self):
        return len(self.line)

    def image_id(self, k):
        return self.image_ids[k].decode("utf-8")

    def replay(self, report):
        """Add the parser's skipped rows to a :class:`~.common.LoadReport`."""
        for reason, count, examples in self.skipped:
            for where in examples:
                report.skip(reason, where)
            if count > len(examples):
                report.skip(reason, None, count=count - len(examples))


def header_index(reader, path, columns):
    """``({column: position}, number of columns)`` of a CSV's header, refusing missing columns by name."""
    header = next(reader, None)
    if header is None:
        raise DatasetError(f"Open Images CSV {path} is empty (expected a header with {', '.join(columns)})")
    header = [h.strip().lstrip("\ufeff") for h in header]
    missing = [c for c in columns if c not in header]
    if missing:
        raise DatasetError(f"Open Images CSV {path}, line 1: header lacks column(s) {', '.join(missing)} "
                           f"(header: {','.join(header)})")
    return {c: header.index(c) for c in columns}, len(header)


def flag(text, allowed, where):
    """A 0 / 1 (or -1 = unknown, where ``allowed`` has it) CSV flag; anything else names file, line, value."""
    try:
        value = float(text)
    except ValueError:
        value = None
    if value is None or value not in allowed:
        raise DatasetError(f"{where}: expected {' or '.join(str(a) for a in allowed)}, got {text!r}")
    return int(value)


def _parse(boxes_csv):
    """The CSV's columns (Python ``csv``, once). Returns (arrays, image ids, sorted labels, skipped)."""
    image_index, label_index = {}, {}
    image, line_no, label, group, coords = array("i"), array("i"), array("i"), array("b"), array("d")
    attributes = array("b")
    skipped = {}

    def skip(reason, where):
        count, examples = skipped.setdefault(reason, [0, []])
        skipped[reason][0] = count + 1
        if len(examples) < _EXAMPLES:
            examples.append(where)

    base = os.path.basename(boxes_csv)
    with open(boxes_csv, newline="", encoding="utf-8") as f:
        reader = csv.reader(f)
        index, ncols = header_index(reader, boxes_csv, BOX_COLUMNS)
        coord_cols = [index[c] for c in ("XMin", "YMin", "XMax", "YMax")]
        i_image, i_label, i_group = index["ImageID"], index["LabelName"], index["IsGroupOf"]
        attribute_cols = [(index[c], c) for c in ATTRIBUTE_COLUMNS]
        for row in reader:
            line = reader.line_num
            if not row:
                continue
            if len(row) < ncols:
                skip("truncated CSV rows", f"{base} line {line}")
                continue
            image_id = row[i_image].strip()
            if not image_id:
                skip("CSV rows without an ImageID", f"{base} line {line}")
                continue
            k = image_index.setdefault(image_id, len(image_index))
            if any(row[c].strip().lower() in _BOOLEAN_WORDS for c in coord_cols):
                raise DatasetError(f"Open Images CSV {boxes_csv}, line {line}: box coordinates must be numbers "
                                   f"in [0, 1], got XMin,YMin,XMax,YMax = {[row[c] for c in coord_cols]}")
            try:
                values = [float(row[c]) for c in coord_cols]
            except ValueError:
                skip("boxes with non-numeric coordinates", f"{base} line {line}")
                continue
            where = f"Open Images CSV {boxes_csv}, line {line}"
            group.append(flag(row[i_group], (0, 1), f"{where}, IsGroupOf"))
            for c, column in attribute_cols:
                attributes.append(flag(row[c], (0, 1, -1), f"{where}, {column}"))
            image.append(k)
            line_no.append(line)
            label.append(label_index.setdefault(row[i_label], len(label_index)))
            coords.extend(values)

    labels = sorted(label_index)
    remap = np.zeros(max(len(label_index), 1), np.int32)
    for j, mid in enumerate(labels):
        remap[label_index[mid]] = j
    arrays = {
        "image": np.frombuffer(image, np.int32) if len(image) else np.zeros(0, np.int32),
        "line": np.frombuffer(line_no, np.int32) if len(line_no) else np.zeros(0, np.int32),
        "label": remap[np.frombuffer(label, np.int32)] if len(label) else np.zeros(0, np.int32),
        "group": np.frombuffer(group, np.int8) if len(group) else np.zeros(0, np.int8),
        "coords": (np.frombuffer(coords, np.float64) if len(coords) else np.zeros(0)).reshape(-1, 4),
        "attributes": (np.frombuffer(attributes, np.int8) if len(attributes) else np.zeros(0, np.int8)).reshape(
            -1, len(ATTRIBUTE_COLUMNS)),
        "image_ids": np.array([i.encode("utf-8") for i in image_index], dtype=bytes) if image_index
        else np.zeros(0, "S1"),
    }
    return arrays, labels, [[r, c, e] for r, (c, e) in skipped.items()]


def openimages_index(boxes_csv):
    """The :class:`BoxIndex` of ``boxes_csv``: mapped from the cache, built first if missing (one process
    builds, under the folder's lock; the others wait and map it)."""
    folder = index_folder(boxes_csv)
    if (folder / "meta.json").is_file():
        return BoxIndex(folder)
    with file_lock(folder / ".lock", busy_message=f"waiting for another process indexing {boxes_csv}"):
        if not (folder / "meta.json").is_file():
            arrays, labels, skipped = _parse(os.path.abspath(os.path.expanduser(boxes_csv)))
            for name in _COLUMNS:
                with atomic_path(folder / f"{name}.npy") as tmp:
                    np.save(tmp, arrays[name])
            atomic_write_json(folder / "meta.json", {  # last: marks the index complete
                "csv": os.path.abspath(boxes_csv), "version": INDEX_VERSION, "labels": labels,
                "skipped": skipped, "rows": int(len(arrays["line"]))})
    return BoxIndex(folder)
