"""Indexed COCO JSON: a plain COCO instances file written by streaming, and beside it a small index of
where every image and annotation entry starts, so that a merge or a training process reads entries by
offset instead of parsing (and holding) the whole file.

::

    NAME.json         the COCO JSON, compact (``folder.dumps``): any COCO reader takes it as it is
    NAME.index.npz    per image: byte offset, length, position in the export's image list; per annotation:
                      byte offset, length, sort key (its position in the source annotation list), the index
                      of its image in this file, iscrowd; ``meta``: a JSON string (categories, counts, the writer's
                      extra fields) and the JSON's size, checked on opening (a stale index is refused)

The writer emits the same bytes as ``folder.dumps`` of the whole document (``dumps`` of a list is
``[`` + the entries' ``dumps`` joined by ``,`` + ``]``), so a streamed file equals an in-memory one. About
24 bytes of index per annotation: 1M annotations take 24 MB, against several GB for the parsed JSON.
"""
import json
import os
from pathlib import Path

import numpy as np

from ..data.cache import atomic_path
from .folder import ExportError, dumps

__all__ = ["INDEX_FORMAT", "index_path", "write_indexed_coco", "CocoIndex", "read_entry"]

INDEX_FORMAT = "box2seg-indexed-coco"
_CHUNK = 1 << 13  # values a column buffers as Python ints before packing them


def index_path(json_file):
    """``X.json`` -> ``X.index.npz``."""
    path = Path(json_file)
    return path.with_name(path.stem + ".index.npz")


class _Counter:
    """A binary file that knows its position (without a ``tell`` per write)."""

    def __init__(self, f):
        self.f, self.pos = f, 0

    def write(self, data):
        self.f.write(data)
        self.pos += len(data)


class _Column:
    """A numpy column grown in chunks (a Python list of 1M ints is 36 MB; an int64 column 8 MB)."""

    def __init__(self, dtype=np.int64):
        self.dtype, self.chunks, self.buffer = dtype, [], []

    def append(self, value):
        self.buffer.append(value)
        if len(self.buffer) == _CHUNK:
            self.chunks.append(np.asarray(self.buffer, self.dtype))
            self.buffer = []

    def array(self):
        return np.concatenate(self.chunks + [np.asarray(self.buffer, self.dtype)])


def write_indexed_coco(path, sections, images, annotations, meta=None):
    """Write ``path`` and its index atomically; returns the index ``meta`` written.

    Args:
        sections: ``[(key, value)]`` of the document in order; the values of ``"images"`` and
            ``"annotations"`` are ignored (they come from the next two arguments).
        images: iterable of ``(header position, entry bytes)`` (``folder.dumps`` of the image dict).
        annotations: iterable of ``(sort key, image index in this file, iscrowd, entry bytes)``, in file order.
        meta: extra JSON-serialisable fields for the index's ``meta`` (format fields, counts).
    """
    path = Path(path)
    img = {"offset": _Column(), "length": _Column(np.int32), "header_pos": _Column()}
    ann = {"offset": _Column(), "length": _Column(np.int32), "order": _Column(), "image": _Column(np.int32),
           "crowd": _Column(bool)}
    categories = []
    with atomic_path(path) as tmp, atomic_path(index_path(path)) as tmp_index:
        with open(tmp, "wb", buffering=1 << 20) as f:
            out = _Counter(f)
            out.write(b"{")
            for n, (key, value) in enumerate(sections):
                out.write((b"," if n else b"") + dumps(key) + b":")
                if key in ("images", "annotations"):
                    columns = img if key == "images" else ann
                    out.write(b"[")
                    for m, item in enumerate(images if key == "images" else annotations):
                        *fields, blob = item
                        if m:
                            out.write(b",")
                        columns["offset"].append(out.pos)
                        columns["length"].append(len(blob))
                        for name, v in zip(("header_pos",) if key == "images" else ("order", "image", "crowd"), fields):
                            columns[name].append(int(v))
                        out.write(blob)
                    out.write(b"]")
                else:
                    if key == "categories":
                        categories = value
                    out.write(dumps(value))
            out.write(b"}")
            f.flush()
            os.fsync(f.fileno())
            size = out.pos
        arrays = {f"image_{k}": c.array() for k, c in img.items()}
        arrays.update({f"ann_{k}": c.array() for k, c in ann.items()})
        meta = {**(meta or {}), "index_format": INDEX_FORMAT, "json_size": size, "categories": categories,
                "num_images": len(arrays["image_offset"]), "num_annotations": len(arrays["ann_offset"])}
        with open(tmp_index, "wb") as f:
            np.savez(f, meta=np.frombuffer(json.dumps(meta, sort_keys=True).encode(), np.uint8), **arrays)
            f.flush()
            os.fsync(f.fileno())
    return meta


class CocoIndex:
    """The index of an indexed COCO JSON: numpy columns and ``meta`` (module docstring).

    Raises ExportError naming the file when the index is missing, foreign or older than the JSON.
    """

    def __init__(self, json_file):
        self.json_file = Path(json_file)
        path = index_path(self.json_file)
        try:
            with np.load(path) as data:
                self.meta = json.loads(bytes(data["meta"]))
                for key in data.files:
                    if key != "meta":
                        setattr(self, key, data[key])
        except (OSError, ValueError, KeyError) as e:
            raise ExportError(f"{self.json_file}: its index {path} is missing or unreadable ({e}); it is written "
                              "by `box2seg export` (re-run the export or `box2seg export --merge DIR`)") from None
        if self.meta.get("index_format") != INDEX_FORMAT:
            raise ExportError(f"{path} is not a box2seg COCO index")
        try:
            size = self.json_file.stat().st_size
        except OSError as e:
            raise ExportError(f"{self.json_file}: cannot read it ({e})") from None
        if size != self.meta["json_size"]:
            raise ExportError(f"{self.json_file} is {size} bytes but its index {path} was written for "
                              f"{self.meta['json_size']}: the JSON changed since; re-run the export or merge")

    @property
    def num_images(self):
        return len(self.image_offset)

    @property
    def num_annotations(self):
        return len(self.ann_offset)


def read_entry(fd, offset, length):
    """The bytes of one entry (``os.pread``: no shared file position, safe across forked workers)."""
    data = os.pread(fd, int(length), int(offset))
    if len(data) != length:
        raise ExportError(f"short read at byte {offset}: the file is shorter than its index says")
    return data
