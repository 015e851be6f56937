"""Exported pseudo-masks as a training set, read lazily: several shard files, a shard folder or a merged
export, without any process parsing or holding the whole set.

:class:`IndexedCocoDataset` is a map-style ``torch.utils.data.Dataset`` of detectron2 dataset dicts (the
same dicts ``load_coco_json`` makes) over one or more indexed COCO JSONs (:mod:`.indexed`). It keeps only the
indexes in memory (about 24 bytes per annotation plus 8 for the per-image grouping) and reads an image's
entries with ``os.pread`` when it is asked for, so DataLoader workers share nothing but those arrays. Give it
to ``build_detection_train_loader(cfg, dataset=...)`` (the trainer's sampler only needs ``len``).
:func:`register_pseudo_masks` registers the files under a dataset name (metadata from the indexes; the
catalog function, for evaluation or tools that want a list, reads every entry once).
"""
import json
import os
from pathlib import Path

import numpy as np
import pycocotools.mask as mask_util
import torch
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.structures import BoxMode

from .folder import OUTPUT_FILE, ExportError, find_shards
from .indexed import CocoIndex, index_path, read_entry

__all__ = ["resolve_pseudo_mask_files", "is_indexed", "pseudo_mask_classes", "IndexedCocoDataset",
           "register_pseudo_masks", "pseudo_mask_dataset"]


def resolve_pseudo_mask_files(paths):
    """The indexed COCO JSONs named by ``paths``: files as given; a folder means its ``pseudo_masks.json`` if
    it is a merged export, else its shard files (``DIR`` or ``DIR/shards``, all of one split, none missing)."""
    paths = [paths] if isinstance(paths, (str, os.PathLike)) else list(paths)
    files = []
    for raw in paths:
        path = Path(raw).expanduser()
        if path.is_file():
            files.append(path)
            continue
        if not path.is_dir():
            raise ExportError(f"pseudo-mask file or folder {path} does not exist")
        if (path / OUTPUT_FILE).is_file():
            files.append(path / OUTPUT_FILE)
            continue
        found = find_shards(path / "shards" if (path / "shards").is_dir() else path)
        if not found:
            raise ExportError(f"{path} holds no {OUTPUT_FILE} and no shard-IIIII-of-NNNNN.json files")
        if len(found) > 1:
            raise ExportError(f"{path} mixes shard files of different N ({sorted(found)}); name the files instead")
        ((n, shards),) = found.items()
        absent = [i for i in range(n) if i not in shards]
        if absent:
            raise ExportError(f"{path}: shard(s) {', '.join(map(str, absent))} of {n} are missing")
        files.extend(shards[i] for i in range(n))
    if not files:
        raise ExportError("no pseudo-mask files given")
    return files


def is_indexed(paths):
    """Whether ``paths`` (a path or a list) name box2seg's indexed pseudo-masks (several files, a folder, or a
    JSON with its ``.index.npz``) rather than one plain COCO JSON: what train-maskrcnn should read lazily."""
    paths = [paths] if isinstance(paths, (str, os.PathLike)) else list(paths)
    if len(paths) != 1:
        return bool(paths)
    path = Path(paths[0]).expanduser()
    return path.is_dir() or index_path(path).is_file()


def pseudo_mask_classes(paths):
    """``(thing_classes, has_masks)`` of indexed pseudo-masks, from the indexes alone (the twin of
    ``coco_metadata(json)["thing_classes"], ["has_masks"]`` without parsing the JSON): has_masks when some
    annotation is not crowd (every non-crowd annotation box2seg exports has its mask)."""
    indexes = [CocoIndex(f) for f in resolve_pseudo_mask_files(paths)]
    _, names = _categories(indexes)
    return names, any(bool((~index.ann_crowd).any()) for index in indexes)


def _categories(indexes):
    """(sorted dataset category ids, names): the same in every file, else an error naming two files."""
    first = indexes[0].meta["categories"]
    for index in indexes[1:]:
        if index.meta["categories"] != first:
            raise ExportError(f"{index.json_file} and {indexes[0].json_file} have different categories; files "
                              "of one export are needed")
    by_id = sorted((c["id"], c["name"]) for c in first)
    return [c for c, _ in by_id], [n for _, n in by_id]


def _segmentation(segm):
    if isinstance(segm, dict) and isinstance(segm.get("counts"), list):
        return mask_util.frPyObjects(segm, *segm["size"])  # uncompressed RLE -> compressed, as load_coco_json
    if isinstance(segm, list):
        return [p for p in segm if len(p) % 2 == 0 and len(p) >= 6]
    return segm


class IndexedCocoDataset(torch.utils.data.Dataset):
    """Detectron2 dataset dicts of indexed COCO JSONs, read by offset (module docstring).

    Args:
        json_files: indexed COCO JSONs (:func:`resolve_pseudo_mask_files` turns folders into them).
        image_root: folder the images' ``file_name`` are relative to.
        filter_empty: leave out images without a non-crowd annotation (DATALOADER.FILTER_EMPTY_ANNOTATIONS,
            as detectron2's ``filter_images_with_only_crowd_annotations``).
    """

    def __init__(self, json_files, image_root, filter_empty=False):
        self.files = [str(f) for f in json_files]
        self.image_root = str(image_root)
        indexes = [CocoIndex(f) for f in self.files]
        self.category_ids, self.thing_classes = _categories(indexes)
        self.contiguous = {c: i for i, c in enumerate(self.category_ids)}
        self._image_spans, self._ann_spans, self._groups, items = [], [], [], []
        for f, index in enumerate(indexes):
            self._image_spans.append(np.stack([index.image_offset, index.image_length.astype(np.int64)], 1))
            self._ann_spans.append(np.stack([index.ann_offset, index.ann_length.astype(np.int64)], 1))
            order = np.argsort(index.ann_image, kind="stable")  # annotations grouped by image, in file order
            starts = np.searchsorted(index.ann_image[order], np.arange(index.num_images + 1))
            self._groups.append((order.astype(np.int64), starts.astype(np.int64)))
            keep = np.arange(index.num_images)
            if filter_empty:  # as detectron2's filter_images_with_only_crowd_annotations
                normal = np.bincount(index.ann_image[~index.ann_crowd], minlength=index.num_images)
                keep = keep[normal > 0]
            items.append(np.stack([np.full(len(keep), f), keep], 1))
        self._items = np.concatenate(items) if items else np.zeros((0, 2), np.int64)
        self._fds, self._pid = {}, None
        self.num_annotations = int(sum(index.num_annotations for index in indexes))

    def __len__(self):
        return len(self._items)

    def _fd(self, f):
        if self._pid != os.getpid():  # a forked DataLoader worker opens its own descriptors
            self._fds, self._pid = {}, os.getpid()
        if f not in self._fds:
            self._fds[f] = os.open(self.files[f], os.O_RDONLY)
        return self._fds[f]

    def __getitem__(self, k):
        f, i = (int(v) for v in self._items[k])
        fd = self._fd(f)
        image = json.loads(read_entry(fd, *self._image_spans[f][i]))
        order, starts = self._groups[f]
        annotations = []
        for a in order[starts[i]:starts[i + 1]]:
            ann = json.loads(read_entry(fd, *self._ann_spans[f][a]))
            if ann["image_id"] != image["id"]:
                raise ExportError(f"{self.files[f]}: annotation {ann.get('id')!r} indexed under image "
                                  f"{image['id']!r} belongs to image {ann['image_id']!r} (stale index)")
            obj = {key: ann[key] for key in ("iscrowd", "bbox", "keypoints") if key in ann}
            obj["bbox_mode"] = BoxMode.XYWH_ABS
            obj["category_id"] = self.contiguous[ann["category_id"]]
            if "segmentation" in ann:
                obj["segmentation"] = _segmentation(ann["segmentation"])
            annotations.append(obj)
        return {"file_name": os.path.join(self.image_root, image["file_name"]), "height": image["height"],
                "width": image["width"], "image_id": image["id"], "annotations": annotations}

    def __getstate__(self):  # descriptors stay with their process
        state = dict(self.__dict__)
        state["_fds"], state["_pid"] = {}, None
        return state

    def __del__(self):
        if getattr(self, "_pid", None) == os.getpid():
            for fd in self._fds.values():
                os.close(fd)


def register_pseudo_masks(name, paths, image_root):
    """Register shard files / folders / a merged export under ``name``: metadata (thing_classes, the
    dataset-to-contiguous id map, ``pseudo_mask_files``, ``image_root``) from the indexes alone; the catalog
    function reads every entry (for evaluation and tools that want a list; training should take
    :func:`pseudo_mask_dataset`). Returns ``name``."""
    files = [str(f) for f in resolve_pseudo_mask_files(paths)]
    image_root = str(Path(image_root).expanduser())
    probe = IndexedCocoDataset(files, image_root)
    if name in DatasetCatalog.list():
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)
    DatasetCatalog.register(name, lambda: list(IndexedCocoDataset(files, image_root)))
    MetadataCatalog.get(name).set(
        thing_classes=probe.thing_classes, json_file=files[0], pseudo_mask_files=files, image_root=image_root,
        evaluator_type="coco", thing_dataset_id_to_contiguous_id=dict(probe.contiguous))
    return name


def pseudo_mask_dataset(name, filter_empty=True):
    """The lazy :class:`IndexedCocoDataset` of a name registered by :func:`register_pseudo_masks`."""
    meta = MetadataCatalog.get(name)
    files = meta.get("pseudo_mask_files", None)
    if not files:
        raise ExportError(f"dataset {name!r} was not registered with register_pseudo_masks")
    return IndexedCocoDataset(files, meta.image_root, filter_empty=filter_empty)
