"""``box2seg export``: pseudo-masks for Mask R-CNN from a trained Box2Seg model.

Every input box gets one mask, by the box-conditioned rule (:mod:`box2seg.modeling.box_conditioned`, the
model's ``"box_masks"``). A box whose mask comes out empty falls back to its own GrabCut mask (instance map
value ``k + 1``), and, if GrabCut left it nothing either (a smaller box took all its pixels), to the ellipse
inscribed in the box; both fallbacks are counted. Crowd annotations are copied through unchanged.

The result is a COCO instances JSON that a Mask R-CNN config can train on directly: the input's images and
categories sections, and per annotation the input's id, image id, original ``bbox`` (XYWH, read back from
the source JSON for COCO-format datasets, so clipping at load time does not leak into it), the dataset's own
category id, ``iscrowd``, a compressed RLE ``segmentation``, ``area`` = mask area and ``mask_source``
(``box2seg`` / ``grabcut`` / ``ellipse``). Annotations the dataset loader skipped (invalid box, unknown
category) are not exported; the summary counts them.

Output folder::

    DIR/pseudo_masks.json          the COCO JSON (unsharded run: at its end; sharded: ``--merge DIR``)
    DIR/summary.json               counts over the whole export (written with pseudo_masks.json)
    DIR/labels/<image id>.png      argmax of ``sem_seg``: 0 background, class + 1 (uint8; uint16 when the
                                   dataset's ignore_label is 65535)
    DIR/parts/<image id>.json      one image's annotations: the resume state
    DIR/shards/shard-I-of-N.json   one shard's annotations, written when all its images are done
    DIR/header.json                the run's fingerprint and the JSON's non-annotation sections

Resumable and interrupt-safe: every file is written by an atomic rename, an image's part last (after its
label PNG), so a killed run leaves finished images and no half files; running the same command again skips
them. Parts carry a fingerprint of dataset, model config, weights and GrabCut settings: a run with another
model refuses to mix with them unless ``--force``. Shards (``--shard I/N``: records ``i`` with
``i % N == I``) can run as separate jobs on a shared folder; ``--merge DIR`` joins them and refuses a
missing or inconsistent set. The merged file is byte-identical to an unsharded run's: both are assembled
by the same function from annotations sorted by their position in the source annotation list.
"""
import argparse
import contextlib
import hashlib
import json
import logging
import os
import re
import time
from pathlib import Path

import numpy as np

from .data.cache import annotations_hash, atomic_write_bytes, safe_name, stable_hash

logger = logging.getLogger(__name__)

__all__ = [
    "ExportError",
    "add_arguments",
    "main",
    "setup_cfg",
    "export_dataset",
    "merge_shards",
    "fill_empty_masks",
    "encode_masks",
    "parse_shard",
]

EXPORT_VERSION = 1  # bump when the output format or the mask rule changes: part of the fingerprint
OUTPUT_FILE = "pseudo_masks.json"
MASK_SOURCES = ("box2seg", "grabcut", "ellipse")
_SHARD_FILE = re.compile(r"^shard-(\d+)-of-(\d+)\.json$")


class ExportError(RuntimeError):
    """A user-facing export problem (bad arguments, inconsistent folder, missing GrabCut labels)."""


# ----------------------------------------------------------------------------------------------------------
# Command line


def add_arguments(parser):
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.description = (
        "Export one mask per input box (COCO instances JSON with RLE masks) and a semantic label PNG per image\n"
        "from a trained Box2Seg model, for training Mask R-CNN. Resumable: re-run the same command after an\n"
        "interruption. Cluster arrays: run --shard I/N for I = 0..N-1 on a shared --output, then --merge DIR.\n\n"
        "  box2seg export --config-file CFG --dataset NAME --output DIR MODEL.WEIGHTS model_final.pth\n"
        "  box2seg export ... --shard 3/8      (one job of eight)\n"
        "  box2seg export --merge DIR          (-> DIR/pseudo_masks.json)"
    )
    parser.add_argument("--config-file", default="", metavar="FILE", help="the model's training config")
    parser.add_argument("--dataset", default="", metavar="NAME", help="registered dataset to export")
    parser.add_argument("--output", default="", metavar="DIR", help="output folder")
    parser.add_argument("--shard", default="0/1", metavar="I/N",
                        help="export only records i with i %% N == I (default 0/1: everything)")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--resume", action="store_true",
                      help="reuse the images already exported to DIR (the default; the flag only documents it)")
    mode.add_argument("--force", action="store_true",
                      help="recompute this shard's images, replacing an export made with another model/config")
    parser.add_argument("--merge", default="", metavar="DIR",
                        help="join the shard outputs in DIR into DIR/pseudo_masks.json (no other option)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("opts", nargs=argparse.REMAINDER, metavar="KEY VALUE",
                        help="config overrides, e.g. MODEL.WEIGHTS out/model_final.pth MODEL.DEVICE cpu")


def parse_shard(text):
    """``"I/N"`` -> ``(I, N)`` with ``0 <= I < N``."""
    match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", str(text))
    if not match or int(match.group(2)) < 1 or int(match.group(1)) >= int(match.group(2)):
        raise ExportError(f"--shard {text!r}: expected I/N with 0 <= I < N, e.g. 0/4")
    return int(match.group(1)), int(match.group(2))


def setup_cfg(config_file, opts=(), dataset_name=None, coco_datasets=()):
    """The Box2Seg config for exporting ``dataset_name`` (frozen; its datasets registered)."""
    from .cli import register_cli_datasets
    from .engine import check_num_classes, get_box2seg_cfg, register_config_datasets

    cfg = get_box2seg_cfg()
    cfg.merge_from_file(config_file)
    cfg.merge_from_list(list(opts))
    cfg.BOX2SEG.COCO_DATASETS = list(cfg.BOX2SEG.COCO_DATASETS) + list(coco_datasets)
    register_cli_datasets(coco_datasets)
    register_config_datasets(cfg)
    if dataset_name:
        try:
            check_num_classes(cfg, [dataset_name])
        except (KeyError, ValueError) as e:
            raise ExportError(str(e).strip('"')) from None
        cfg.DATASETS.TEST = (dataset_name,)  # the test mapper reads the dataset's ignore_label from here
    cfg.freeze()
    return cfg


def main(args):
    try:
        if args.merge:
            extra = [flag for flag, value in (("--config-file", args.config_file), ("--dataset", args.dataset),
                                              ("--output", args.output), ("--force", args.force),
                                              ("--shard", args.shard != "0/1"), ("KEY VALUE", args.opts))
                     if value]
            if extra:
                raise ExportError(f"--merge DIR takes no other option (got {', '.join(extra)})")
            summary = merge_shards(args.merge)
            print(format_summary(summary), flush=True)
            return 0
        missing = [flag for flag, value in (("--config-file", args.config_file), ("--dataset", args.dataset),
                                            ("--output", args.output)) if not value]
        if missing:
            raise ExportError(f"missing {', '.join(missing)} (or use --merge DIR)")
        shard = parse_shard(args.shard)
        cfg = setup_cfg(args.config_file, args.opts, args.dataset, getattr(args, "coco_dataset", []))
        summary = export_dataset(cfg, args.dataset, args.output, shard=shard, force=args.force,
                                 progress=not args.no_progress)
        print(format_summary(summary), flush=True)
        return 0
    except ExportError as e:
        print(f"box2seg export: error: {e}", flush=True)
        return 2


def format_summary(s):
    where = f"shard {s['shard']}/{s['num_shards']}" if "shard" in s else f"{s['num_shards']} shard(s) merged"
    line = (f"export {s['dataset']} ({where}): {s['images']} images"
            + (f" ({s['computed']} computed, {s['reused']} reused)" if "computed" in s else "")
            + f", {s['boxes']} boxes: {s['box2seg']} box-conditioned masks, {s['grabcut']} empty -> GrabCut, "
            f"{s['ellipse']} empty -> ellipse; {s['crowd']} crowd copied")
    if s.get("not_exported"):
        line += f"; {s['not_exported']} source annotations not exported (skipped by the dataset loader)"
    line += f"; {s['seconds']:.1f} s"
    if s.get("output"):
        line += f" -> {s['output']}"
    return line


# ----------------------------------------------------------------------------------------------------------
# Masks


def fill_empty_masks(masks, boxes, crowd, instance_map_fn):
    """Give every non-crowd box a non-empty mask where its own fallbacks allow.

    Args:
        masks: (N, H, W) bool box-conditioned masks (crowd rows are ignored).
        boxes: (N, 4) XYXY in the masks' frame; crowd: (N,) bool.
        instance_map_fn: () -> (H, W) uint16 GrabCut instance map; only called when a mask is empty.
    Returns:
        (masks, sources): masks with empty ones replaced; sources (N,) index into MASK_SOURCES, -1 for crowd.
    """
    from .data.grabcut import box_pixel_extent, ellipse_mask

    masks = np.array(masks, dtype=bool, copy=True)
    crowd = np.asarray(crowd, dtype=bool).reshape(-1)
    n, height, width = masks.shape
    masks[crowd] = False
    sources = np.where(crowd, -1, 0)
    empty = ~crowd & ~masks.reshape(n, -1).any(1)
    if not empty.any():
        return masks, sources
    instance_map = np.asarray(instance_map_fn())
    if instance_map.shape != (height, width):
        raise ValueError(f"GrabCut instance map is {instance_map.shape} but the masks are {(height, width)}")
    idx = np.flatnonzero(empty)
    masks[idx] = instance_map[None] == (idx + 1)[:, None, None].astype(instance_map.dtype)
    sources[idx] = 1
    still = idx[~masks[idx].reshape(len(idx), -1).any(1)]
    for k in still:  # boxes GrabCut left nothing of: rare, a loop over them is fine
        x0, y0, x1, y1 = box_pixel_extent(boxes[k], height, width)
        masks[k, y0:y1, x0:x1] = ellipse_mask(y1 - y0, x1 - x0)
        sources[k] = 2
    return masks, sources


def encode_masks(masks):
    """(N, H, W) bool -> N compressed COCO RLEs with ``counts`` as str (JSON-ready)."""
    import pycocotools.mask as mask_util

    masks = np.asarray(masks, dtype=bool)
    if len(masks) == 0:
        return []
    rles = mask_util.encode(np.asfortranarray(masks.transpose(1, 2, 0).astype(np.uint8)))
    return [{"size": [int(r["size"][0]), int(r["size"][1])], "counts": r["counts"].decode("ascii")} for r in rles]


def _xyxy_to_xywh(box):
    x0, y0, x1, y1 = (float(v) for v in box)
    return [x0, y0, round(x1 - x0, 6), round(y1 - y0, 6)]


# ----------------------------------------------------------------------------------------------------------
# Source annotations and header


class _Source:
    """Where each exported annotation comes from and where it sorts.

    COCO-format datasets (metadata ``json_file``): the source JSON gives the header (every top-level section
    but ``annotations``, unchanged), each annotation's original dict (original XYWH bbox, extra fields,
    crowd segmentation) and its sort key, its position in the source list. Other datasets: a header built
    from the records and metadata, and the annotation's running position in the dataset as sort key.
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
            "id": ann.get("id", order), "image_id": record["image_id"], "bbox": _xyxy_to_xywh(ann["bbox"])}
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


def _file_sha1(path):
    from detectron2.utils.file_io import PathManager

    digest = hashlib.sha1()
    with open(PathManager.get_local_path(path), "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def export_fingerprint(cfg, dataset_name, dicts, source_digest, weights_digest, grabcut_key):
    """What the exported masks depend on. Device and weight *paths* are left out (jobs on other machines)."""
    model = json.loads(json.dumps(cfg.MODEL))
    model.pop("WEIGHTS", None)
    model.pop("DEVICE", None)
    inputs = {k: cfg.INPUT[k] for k in ("MIN_SIZE_TEST", "MAX_SIZE_TEST", "FORMAT")}
    return {
        "version": EXPORT_VERSION,
        "dataset": dataset_name,
        "images": len(dicts),
        "annotations_hash": annotations_hash(dicts),
        "source_sha1": source_digest,
        "config_hash": stable_hash({"MODEL": model, "INPUT": inputs}),
        "weights_sha1": weights_digest,
        "grabcut": grabcut_key,
    }


# ----------------------------------------------------------------------------------------------------------
# GrabCut fallback


class _GrabCutMaps:
    """GrabCut instance maps from the shared cache; a missing image is computed on demand (the same bytes
    ``prepare-grabcut`` writes, under its folder lock) when BOX2SEG.GRABCUT.PREPARE_IF_MISSING is set, so a
    shard job never has to GrabCut the whole dataset for the few boxes that need a fallback."""

    def __init__(self, dataset_name, dicts, settings, compute_missing):
        from .data.grabcut import grabcut_cache_dir

        self.dataset_name = dataset_name
        self.settings = settings
        self.compute_missing = compute_missing
        self.folder = grabcut_cache_dir(dataset_name, dicts, settings)
        self.computed = 0

    def __call__(self, record):
        import fcntl

        import cv2

        from .data.grabcut import (compute_instance_map, encode_instance_map, grabcut_file_for, load_instance_map,
                                   prepare_command)

        path = grabcut_file_for(self.folder, record)
        if not path.is_file():
            if not self.compute_missing:
                raise ExportError(
                    f"image {record['file_name']} (image_id {record['image_id']!r}) has an empty box-conditioned "
                    f"mask and no GrabCut labels in {self.folder}; compute them with:\n    "
                    f"{prepare_command(self.dataset_name, self.settings)}\n(or set "
                    "BOX2SEG.GRABCUT.PREPARE_IF_MISSING True to compute them on demand)")
            self.folder.mkdir(parents=True, exist_ok=True)
            with open(self.folder / ".lock", "a") as lock:
                fcntl.flock(lock, fcntl.LOCK_EX)  # prepare-grabcut may be writing this folder
                try:
                    if not path.is_file():
                        image = cv2.imread(record["file_name"], cv2.IMREAD_COLOR)
                        if image is None:
                            raise ExportError(f"cannot read image {record['file_name']} for its GrabCut fallback")
                        instance_map, stats = compute_instance_map(image, record, self.settings)
                        atomic_write_bytes(path, encode_instance_map(instance_map, stats))
                        self.computed += 1
                finally:
                    fcntl.flock(lock, fcntl.LOCK_UN)
        return load_instance_map({**record, "grabcut_file_name": str(path)})


# ----------------------------------------------------------------------------------------------------------
# Folder


@contextlib.contextmanager
def _lock(path, blocking=True, busy_message=None):
    import fcntl

    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
        except BlockingIOError:
            raise ExportError(busy_message or f"{path} is locked by another process") from None
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _temp_stem(name):
    """The final file's stem of an ``atomic_path`` temporary name ``.{stem}.{random}.tmp{suffix}``, or None."""
    if not name.startswith(".") or ".tmp" not in name:
        return None
    body = name[1:name.rindex(".tmp")]
    return body.rsplit(".", 1)[0] if "." in body else None


def _remove_stale_temps(folder, stems):
    """Remove temporaries a killed run left for files named ``stems`` (only this job's own files, so a
    concurrent shard's in-flight temporaries are never touched)."""
    if not folder.is_dir():
        return 0
    removed = 0
    with os.scandir(folder) as entries:
        for entry in entries:
            stem = _temp_stem(entry.name)
            if stem is not None and stem in stems:
                with contextlib.suppress(FileNotFoundError):
                    os.remove(entry.path)
                    removed += 1
    return removed


def _dumps(obj):
    """Deterministic compact JSON (insertion order kept: the source JSON's key order)."""
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode("utf-8")


def _read_json(path):
    try:
        return json.loads(Path(path).read_bytes())
    except (OSError, ValueError):
        return None


def _shard_name(shard, num_shards):
    return f"shard-{shard:05d}-of-{num_shards:05d}.json"


def _sum_stats(items):
    keys = ("boxes",) + MASK_SOURCES + ("crowd",)
    return {k: int(sum(s[k] for s in items)) for k in keys}


def _fingerprint_diff(a, b):
    return ", ".join(f"{k}: {a.get(k)!r} != {b.get(k)!r}" for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k))


# ----------------------------------------------------------------------------------------------------------
# The job


def _image_part(record_index, record, box_masks, source, grabcut_maps):
    """One image's exported annotations (sorted by source order) and counts."""
    anns = record.get("annotations", [])
    height, width = record["height"], record["width"]
    boxes = np.array([a["bbox"] for a in anns], np.float64).reshape(-1, 4)
    crowd = np.array([bool(a.get("iscrowd", 0)) for a in anns], bool)
    masks = np.asarray(box_masks, dtype=bool).reshape(len(anns), height, width)
    masks, sources = fill_empty_masks(masks, boxes, crowd, lambda: grabcut_maps(record))
    normal = np.flatnonzero(~crowd)
    rles = dict(zip(normal.tolist(), encode_masks(masks[normal])))
    areas = masks.reshape(len(anns), -1).sum(1)
    items = []
    for k in range(len(anns)):
        if crowd[k]:
            items.append(source.annotation(record_index, record, k))
        else:
            items.append(source.annotation(record_index, record, k, rles[k], areas[k], MASK_SOURCES[sources[k]]))
    items.sort(key=lambda item: item[0])
    stats = {"boxes": int(len(normal)), "crowd": int(crowd.sum())}
    stats.update({name: int((sources == i).sum()) for i, name in enumerate(MASK_SOURCES)})
    return [list(item) for item in items], stats


def _record_masks(record, inp, out, rule="class"):
    """The model's box masks when they line up with the record's annotations; otherwise (the test mapper
    dropped a sub-pixel box, or MODEL.BOX2SEG.TEST.BOX_MASKS is off) the same rule on the record's boxes."""
    from .modeling.box_conditioned import annotation_box_masks

    anns = record.get("annotations", [])
    masks = out.get("box_masks")
    if masks is not None and len(masks) == len(anns) and not inp.get("num_dropped_boxes", 0):
        return masks.to("cpu").numpy()
    return annotation_box_masks(out["sem_seg"], anns, rule).numpy()


def _build_model(cfg):
    from detectron2.checkpoint import DetectionCheckpointer
    from detectron2.modeling import build_model

    model = build_model(cfg)
    DetectionCheckpointer(model).load(cfg.MODEL.WEIGHTS)
    model.eval()
    return model


def export_dataset(cfg, dataset_name, output, shard=(0, 1), force=False, progress=True, model=None):
    """Export shard ``shard = (I, N)`` of ``dataset_name`` into ``output``; returns the summary dict.

    With N == 1 the run also writes ``output/pseudo_masks.json``. ``model`` replaces the one built from
    ``cfg`` (tests); MODEL.WEIGHTS is still what the fingerprint hashes.
    """
    import cv2
    import torch
    from detectron2.data import DatasetCatalog, MetadataCatalog, build_detection_test_loader
    from tqdm import tqdm

    from .data.datasets.common import ignore_label_for
    from .data.grabcut import GrabCutSettings
    from .data.mapper import Box2SegDatasetMapper

    start = time.perf_counter()
    index, num_shards = shard
    output = Path(output).expanduser()
    if dataset_name not in DatasetCatalog.list():
        raise ExportError(f"dataset {dataset_name!r} is not registered (register a COCO-format dataset with "
                          "--coco-dataset NAME=JSON:IMAGE_ROOT)")
    if not cfg.MODEL.WEIGHTS:
        raise ExportError("no model weights: add MODEL.WEIGHTS path/to/model_final.pth")
    dicts = DatasetCatalog.get(dataset_name)
    meta = MetadataCatalog.get(dataset_name)
    ignore_label = meta.get("ignore_label", ignore_label_for(len(meta.thing_classes)))
    label_dtype = np.uint8 if ignore_label == 255 else np.uint16
    names = [safe_name(r["image_id"]) for r in dicts]
    if len(set(names)) != len(names):
        seen = {}
        for r, n in zip(dicts, names):
            if n in seen:
                raise ExportError(f"dataset {dataset_name!r}: images {seen[n]} and {r['file_name']} have the same "
                                  f"image id {r['image_id']!r}; image ids must be unique")
            seen[n] = r["file_name"]

    source = _Source(dataset_name, dicts, meta)
    settings = GrabCutSettings.from_config(cfg)
    fingerprint = export_fingerprint(cfg, dataset_name, dicts, source.digest, _file_sha1(cfg.MODEL.WEIGHTS),
                                     settings.key())
    key = stable_hash(fingerprint)
    parts_dir, labels_dir, shards_dir = output / "parts", output / "labels", output / "shards"
    mine = [i for i in range(len(dicts)) if i % num_shards == index]
    shard_file = shards_dir / _shard_name(index, num_shards)
    busy = f"another export of shard {index}/{num_shards} is running on {output}"

    with _lock(output / f".shard-{index}-of-{num_shards}.lock", blocking=False, busy_message=busy):
        with _lock(output / ".lock"):
            header_path = output / "header.json"
            existing = _read_json(header_path) if header_path.is_file() else None
            if existing is not None and existing.get("fingerprint") != fingerprint:
                if not force:
                    raise ExportError(
                        f"{output} holds an export made with different inputs "
                        f"({_fingerprint_diff(existing.get('fingerprint') or {}, fingerprint)}); use --force to "
                        "replace it or choose another --output")
                with contextlib.suppress(FileNotFoundError):
                    (output / OUTPUT_FILE).unlink()  # stale: made by another model / dataset
            _remove_stale_temps(output, {"header"})
            if existing is None or existing.get("fingerprint") != fingerprint:
                atomic_write_bytes(header_path, _dumps({
                    "fingerprint": fingerprint, "header": source.header, "source_annotations": source.num_source,
                    "loaded_annotations": sum(len(r.get("annotations", [])) for r in dicts)}))
        stems = {names[i] for i in mine}
        for folder in (parts_dir, labels_dir):
            _remove_stale_temps(folder, stems)
        _remove_stale_temps(shards_dir, {shard_file.stem})
        if force:
            with contextlib.suppress(FileNotFoundError):
                shard_file.unlink()

        parts = {}
        if not force:
            for i in mine:
                part = _read_json(parts_dir / f"{names[i]}.json")
                if part is not None and part.get("fingerprint") == key and (labels_dir / f"{names[i]}.png").is_file():
                    parts[i] = part
        pending = [i for i in mine if i not in parts]
        reused = len(parts)
        logger.info("export %s shard %d/%d: %d images to compute, %d reused, into %s", dataset_name, index,
                    num_shards, len(pending), reused, output)

        grabcut_maps = _GrabCutMaps(dataset_name, dicts, settings, cfg.BOX2SEG.GRABCUT.PREPARE_IF_MISSING)
        if pending:
            model = model if model is not None else _build_model(cfg)
            mapper = Box2SegDatasetMapper(cfg, is_train=False)
            loader = build_detection_test_loader([dicts[i] for i in pending], mapper=mapper,
                                                 num_workers=cfg.DATALOADER.NUM_WORKERS)
            bar = tqdm(total=len(pending), desc=f"export {dataset_name} {index}/{num_shards}", unit="img",
                       disable=not progress, mininterval=1.0)
            with contextlib.ExitStack() as stack, torch.no_grad():
                stack.callback(bar.close)
                for i, inputs in zip(pending, loader):
                    record = dicts[i]
                    (inp,) = inputs
                    if inp["image_id"] != record["image_id"]:
                        raise RuntimeError(f"loader order broke: expected image {record['image_id']!r}, got "
                                           f"{inp['image_id']!r}")
                    (out,) = model(inputs)
                    labels = out["sem_seg"].argmax(0).to("cpu").numpy().astype(label_dtype)
                    masks = _record_masks(record, inp, out, cfg.MODEL.BOX2SEG.TEST.BOX_RULE)
                    annotations, stats = _image_part(i, record, masks, source, grabcut_maps)
                    ok, png = cv2.imencode(".png", labels)
                    if not ok:
                        raise RuntimeError(f"cannot encode the label PNG of image {record['file_name']}")
                    atomic_write_bytes(labels_dir / f"{names[i]}.png", png.tobytes())
                    part = {"fingerprint": key, "image_id": record["image_id"], "stats": stats,
                            "annotations": annotations}
                    atomic_write_bytes(parts_dir / f"{names[i]}.json", _dumps(part))  # last: marks it done
                    parts[i] = part
                    bar.update(1)

        missing = [dicts[i]["image_id"] for i in mine if i not in parts]
        if missing:
            raise RuntimeError(f"export {dataset_name}: {len(missing)} images of shard {index}/{num_shards} were "
                               f"not processed (first: {missing[:3]})")
        annotations = sorted((a for i in mine for a in parts[i]["annotations"]), key=lambda item: item[0])
        stats = _sum_stats([parts[i]["stats"] for i in mine])
        atomic_write_bytes(shard_file, _dumps({
            "format": "box2seg-export-shard", "fingerprint": fingerprint, "shard": index,
            "num_shards": num_shards, "images": len(mine), "stats": stats, "annotations": annotations}))

    summary = {"dataset": dataset_name, "shard": index, "num_shards": num_shards, "images": len(mine),
               "computed": len(pending), "reused": reused, **stats, "grabcut_computed": grabcut_maps.computed,
               "not_exported": None, "output": str(shard_file)}
    if num_shards == 1:
        merged = merge_shards(output, num_shards=1)
        summary["output"] = merged["output"]
        summary["not_exported"] = merged["not_exported"]
    summary["seconds"] = time.perf_counter() - start
    return summary


# ----------------------------------------------------------------------------------------------------------
# Merge


def merge_shards(output, num_shards=None):
    """Join ``output/shards/*`` into ``output/pseudo_masks.json`` (atomic) and ``summary.json``.

    Refuses a missing header, shard files of different N (unless ``num_shards`` picks one), missing shards
    and shards made with different inputs. Returns the summary dict.
    """
    start = time.perf_counter()
    output = Path(output).expanduser()
    header_path = output / "header.json"
    with _lock(output / ".lock"):
        header = _read_json(header_path) if header_path.is_file() else None
        if header is None:
            raise ExportError(f"{output} holds no export ({header_path} is missing or unreadable): run "
                              "`box2seg export --config-file ... --dataset ... --output DIR --shard I/N` first")
        found = {}
        for path in sorted((output / "shards").glob("shard-*-of-*.json")):
            match = _SHARD_FILE.match(path.name)
            if match:
                found.setdefault(int(match.group(2)), {})[int(match.group(1))] = path
        if num_shards is not None:
            found = {n: v for n, v in found.items() if n == num_shards}
        if not found:
            raise ExportError(f"no shard outputs in {output / 'shards'}: run the export jobs first")
        if len(found) > 1:
            listing = "; ".join(f"N={n}: {len(v)} file(s)" for n, v in sorted(found.items()))
            raise ExportError(f"{output / 'shards'} mixes shard outputs of different N ({listing}); remove the ones "
                              "of the other split")
        ((n, files),) = found.items()
        absent = [i for i in range(n) if i not in files]
        if absent:
            raise ExportError(f"cannot merge {output}: missing shard(s) {', '.join(map(str, absent))} of {n} "
                              f"(run `box2seg export ... --shard I/{n}` for them)")
        _remove_stale_temps(output, {Path(OUTPUT_FILE).stem, "summary"})
        fingerprint = header["fingerprint"]
        annotations, stats, images = [], [], 0
        for i in range(n):
            data = _read_json(files[i])
            if data is None or data.get("format") != "box2seg-export-shard":
                raise ExportError(f"shard file {files[i]} is unreadable or not a box2seg export shard")
            if data.get("fingerprint") != fingerprint or data.get("shard") != i or data.get("num_shards") != n:
                diff = _fingerprint_diff(data.get("fingerprint") or {}, fingerprint)
                raise ExportError(f"shard file {files[i]} is inconsistent with {header_path}: "
                                  f"{diff or 'shard index / count differ from its name'} (re-run that shard)")
            annotations.extend(data["annotations"])
            stats.append(data["stats"])
            images += data["images"]
        if images != fingerprint["images"]:
            raise ExportError(f"shards of {output} cover {images} images but the dataset has {fingerprint['images']}")
        annotations.sort(key=lambda item: item[0])
        orders = [item[0] for item in annotations]
        if len(set(orders)) != len(orders):
            raise ExportError(f"shards of {output} export some annotation more than once")
        coco = dict(header["header"])
        coco["annotations"] = [item[1] for item in annotations]
        final = output / OUTPUT_FILE
        atomic_write_bytes(final, _dumps(coco))
        totals = _sum_stats(stats)
        source_count = header.get("source_annotations")
        not_exported = None if source_count is None else source_count - header["loaded_annotations"]
        summary = {"dataset": fingerprint["dataset"], "num_shards": n, "images": images, **totals,
                   "not_exported": not_exported, "annotations": len(annotations), "output": str(final)}
        atomic_write_bytes(output / "summary.json", json.dumps(summary, indent=1, sort_keys=True).encode())
    summary["seconds"] = time.perf_counter() - start
    return summary
