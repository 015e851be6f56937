"""The exported JSON's source: where each annotation comes from, where it sorts, and the file's header.

COCO-format datasets (metadata ``json_file``): the source JSON gives the header (every top-level section
but ``annotations``, unchanged), each annotation's original dict (original XYWH bbox, so clipping at load
time does not leak into it; extra fields; crowd segmentation) and its sort key, its position in the source
list. Other datasets (VOC, Open Images, generated shapes): a header built from the records and metadata,
boxes converted back to XYWH, and the annotation's running position in the dataset as sort key. Sorting
by that key is what makes a merge of shards byte-identical to an unsharded run.
"""
import hashlib
import json
import os
from pathlib import Path

import numpy as np

from .folder import ExportError

__all__ = ["Source", "xyxy_to_xywh"]


def xyxy_to_xywh(box):
    x0, y0, x1, y1 = (float(v) for v in box)
    return [x0, y0, round(x1 - x0, 6), round(y1 - y0, 6)]


class Source:
    """Source annotations and header of a dataset's export (see the module docstring).

    Attributes:
        json_file: the source JSON, or None; digest: its SHA-1 (part of the fingerprint), or None.
        header: the output's top-level sections, ``annotations`` None (filled in by the merge).
        num_source: annotations in the source JSON (None without one): the summary's "not exported" count.
    """

    def __init__(self, dataset_name, dicts, meta):
        self.dataset_name = dataset_name
        json_file = meta.get("json_file", None)
        self.json_file = json_file if json_file and os.path.isfile(json_file) else None
        self.inverse = {int(c): d for d, c in meta.thing_dataset_id_to_contiguous_id.items()}
        self.digest = None
        self.by_id = None
        if self.json_file is not None:
            blob = Path(self.json_file).read_bytes()
            self.digest = hashlib.sha1(blob).hexdigest()
            data = json.loads(blob)
            image_ids = {img.get("id") for img in data.get("images", []) if isinstance(img, dict)}
            unknown = [r["image_id"] for r in dicts if r["image_id"] not in image_ids]
            if unknown:
                raise ExportError(f"dataset {dataset_name!r}: image ids {unknown[:3]} are not in its json_file "
                                  f"{self.json_file} (was the file changed since registration?)")
            self.by_id, dup = {}, set()
            for i, ann in enumerate(data["annotations"]):
                key = ann.get("id", i) if isinstance(ann, dict) else i
                if key in self.by_id:
                    dup.add(key)
                if isinstance(ann, dict) and not ann.get("iscrowd", 0):
                    ann.pop("segmentation", None)  # replaced by the pseudo-mask; the bulk of a big JSON's memory
                self.by_id[key] = (i, ann)
            self.duplicates = dup
            self.num_source = len(data["annotations"])
            self.header = {k: (None if k == "annotations" else v) for k, v in data.items()}
        else:
            self.offsets = np.concatenate([[0], np.cumsum([len(r.get("annotations", [])) for r in dicts])]).tolist()
            self.num_source = None
            self.header = self._synthetic_header(dicts, meta)

    def _synthetic_header(self, dicts, meta):
        files = [r["file_name"] for r in dicts]
        root = os.path.commonpath([os.path.dirname(f) for f in files]) if files else ""
        images = [{"id": r["image_id"], "file_name": os.path.relpath(r["file_name"], root) if root else r["file_name"],
                   "height": int(r["height"]), "width": int(r["width"])} for r in dicts]
        categories = [{"id": self.inverse[c], "name": name} for c, name in enumerate(meta.thing_classes)]
        return {"images": images, "annotations": None, "categories": categories}

    def lookup(self, record_index, record, k):
        """(sort key, source annotation dict or None) of annotation ``k`` of a record."""
        ann = record["annotations"][k]
        if self.by_id is None:
            return self.offsets[record_index] + k, None
        key = ann.get("id")
        if key in self.duplicates:
            raise ExportError(f"dataset {self.dataset_name!r}: annotation id {key!r} appears more than once in "
                              f"{self.json_file}; annotation ids must be unique")
        if key not in self.by_id:
            raise ExportError(f"dataset {self.dataset_name!r}: annotation id {key!r} of image "
                              f"{record['image_id']!r} is not in {self.json_file}")
        position, source = self.by_id[key]
        return position, source

    def annotation(self, record_index, record, k, rle=None, area=0, source_kind=None):
        """The exported annotation ``k`` of ``record``: ``(sort key, dict)``."""
        order, src = self.lookup(record_index, record, k)
        ann = record["annotations"][k]
        crowd = bool(ann.get("iscrowd", 0))
        if crowd and src is not None:
            return order, src  # copied through unchanged
        out = dict(src) if src is not None else {
            "id": ann.get("id", order), "image_id": record["image_id"], "bbox": xyxy_to_xywh(ann["bbox"])}
        out["category_id"] = self.inverse[int(ann["category_id"])]
        out["iscrowd"] = 1 if crowd else 0
        if crowd:  # not COCO-format: a crowd box as the loader knew it
            x0, y0, x1, y1 = (float(v) for v in ann["bbox"])
            out["area"] = round(max(x1 - x0, 0.0) * max(y1 - y0, 0.0), 6)
            if "segmentation" in ann:
                out["segmentation"] = ann["segmentation"]
            return order, out
        out["segmentation"] = rle
        out["area"] = int(area)
        out["mask_source"] = source_kind
        return order, out
