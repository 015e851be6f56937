"""The export job: one shard of a dataset through the model into the export folder, resumable.

Every file is written by an atomic rename, an image's part last (after its label PNG), so a killed run
leaves finished images and no half files; running the same job again skips them. Parts carry a fingerprint
of dataset, model config, weights and GrabCut settings: a run with another model refuses to mix with them
unless ``force``. Shards (records ``i`` with ``i % N == I``) can run as separate jobs on a shared folder;
an unsharded run (N = 1) merges itself at the end.
"""
import contextlib
import hashlib
import json
import logging
import time
from pathlib import Path

import numpy as np
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.utils.file_io import PathManager
from tqdm import tqdm

from ..data import shards as data_shards
from ..data.cache import annotations_hash, atomic_write_bytes, folder_lock, safe_name, stable_hash
from ..data.datasets.common import ignore_label_for
from ..data.grabcut import GrabCutSettings
from ..data.mapper import fuses_grabcut
from ..engine import check_num_classes
from .folder import (HEADER_FILE, HEADER_IMAGES_FILE, OUTPUT_FILE, ExportError, dumps, fingerprint_diff, read_json,
                     remove_stale_temps, shard_lock, shard_name)
from .indexed import index_path, write_indexed_coco
from .inference import LocalExportEngine
from .masks import GrabCutMaps, WithGrabCutFiles, image_part, sum_stats
from .merge import SHARD_FORMAT, merge_shards
from .source import Source

logger = logging.getLogger(__name__)

__all__ = ["EXPORT_VERSION", "parse_shard", "export_config", "export_fingerprint", "export_dataset"]

EXPORT_VERSION = 2  # bump when the output format or the mask rule changes: part of the fingerprint
# 2: shard files are indexed COCO JSONs (.index.npz beside them), the header's images in header_images.jsonl


def parse_shard(text):
    """``"I/N"`` -> ``(I, N)`` with ``0 <= I < N`` (:func:`box2seg.data.shards.parse_shard`, as ExportError)."""
    try:
        return data_shards.parse_shard(text)
    except data_shards.ShardSpecError as e:
        raise ExportError(str(e)) from None


def export_config(cfg, dataset_name):
    """A frozen copy of ``cfg`` (from :func:`box2seg.engine.setup_cfg`) set up to export ``dataset_name``:
    its class count checked against the dataset's, and DATASETS.TEST = the dataset (the test mapper reads
    the dataset's ignore_label from there)."""
    try:
        check_num_classes(cfg, [dataset_name])
    except (KeyError, ValueError) as e:
        raise ExportError(str(e).strip('"')) from None
    cfg = cfg.clone()
    cfg.defrost()
    cfg.DATASETS.TEST = (dataset_name,)
    cfg.freeze()
    return cfg


def _file_sha1(path):
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


def _image_names(dataset_name, dicts):
    """File-name-safe image ids, checked unique (two records of one id would overwrite each other's files)."""
    names = [safe_name(r["image_id"]) for r in dicts]
    if len(set(names)) != len(names):
        seen = {}
        for r, n in zip(dicts, names):
            if n in seen:
                raise ExportError(f"dataset {dataset_name!r}: images {seen[n]} and {r['file_name']} have the same "
                                  f"image id {r['image_id']!r}; image ids must be unique")
            seen[n] = r["file_name"]
    return names


def _write_header(output, fingerprint, source, dicts, force):
    """Claim ``output`` for this fingerprint (under the folder lock): a folder of another export is refused,
    or with ``force`` taken over (its stale merged JSON removed). The image list goes to its own file, one
    entry a line, so that the merge streams it (the header stays small)."""
    header_path = output / HEADER_FILE
    existing = read_json(header_path) if header_path.is_file() else None
    if existing is not None and existing.get("fingerprint") != fingerprint:
        if not force:
            raise ExportError(
                f"{output} holds an export made with different inputs "
                f"({fingerprint_diff(existing.get('fingerprint') or {}, fingerprint)}); use --force to "
                "replace it or choose another --output")
        for stale in (output / OUTPUT_FILE, index_path(output / OUTPUT_FILE)):  # made by another model / dataset
            with contextlib.suppress(FileNotFoundError):
                stale.unlink()
    remove_stale_temps(output, {Path(HEADER_FILE).stem, Path(HEADER_IMAGES_FILE).stem})
    if existing is None or existing.get("fingerprint") != fingerprint:
        images = source.header.get("images") or []
        atomic_write_bytes(output / HEADER_IMAGES_FILE, b"".join(dumps(image) + b"\n" for image in images))
        atomic_write_bytes(header_path, dumps({  # last: marks the header complete
            "fingerprint": fingerprint,
            "sections": [[k, None if k in ("images", "annotations") else v] for k, v in source.header.items()],
            "images": len(images), "source_annotations": source.num_source,
            "loaded_annotations": sum(len(r.get("annotations", [])) for r in dicts)}))


def _write_shard_file(shard_file, source, dicts, mine, parts, meta):
    """The shard's own COCO JSON (its images, its annotations in source order) with its index."""
    header_images = source.header.get("images") or []
    position = {image["id"]: p for p, image in enumerate(header_images)}
    shard_images = sorted(position[dicts[i]["image_id"]] for i in mine)
    local = {p: k for k, p in enumerate(shard_images)}
    entries = sorted((order, local[position[dicts[i]["image_id"]]], bool(ann.get("iscrowd", 0)), dumps(ann))
                     for i in mine for order, ann in parts[i]["annotations"])
    return write_indexed_coco(shard_file, list(source.header.items()),
                              ((p, dumps(header_images[p])) for p in shard_images), entries, meta)


def export_dataset(cfg, dataset_name, output, shard=(0, 1), force=False, progress=True, model=None,
                   allow_partial_weights=False, engine=None):
    """Export shard ``shard = (I, N)`` of ``dataset_name`` into ``output``; returns the summary dict.

    ``cfg``: see :func:`export_config`. With N == 1 the run also writes ``output/pseudo_masks.json``.
    ``model`` replaces the one built from ``cfg`` (tests); MODEL.WEIGHTS is still what the fingerprint hashes.
    Weights that leave parameters of the model unloaded are refused (``engine.PartialWeightsError``) unless
    ``allow_partial_weights``. ``engine`` runs the model: None for this process
    (:class:`~.inference.LocalExportEngine` with ``model``), or another engine
    (``box2seg.distributed.export_engine("ray", address)``: actors holding the model, one GPU each where the
    cluster has GPUs); the job writes every file itself, so a shard can switch engines and resume.
    """
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
    names = _image_names(dataset_name, dicts)

    source = Source(dataset_name, dicts, meta)
    settings = GrabCutSettings.from_config(cfg)
    fingerprint = export_fingerprint(cfg, dataset_name, dicts, source.digest, _file_sha1(cfg.MODEL.WEIGHTS),
                                     settings.key())
    key = stable_hash(fingerprint)
    parts_dir, labels_dir, shards_dir = output / "parts", output / "labels", output / "shards"
    mine = [i for i in range(len(dicts)) if i % num_shards == index]
    shard_file = shards_dir / shard_name(index, num_shards)

    with shard_lock(output, index, num_shards):
        with folder_lock(output):
            _write_header(output, fingerprint, source, dicts, force)
        stems = {names[i] for i in mine}
        for folder in (parts_dir, labels_dir):
            remove_stale_temps(folder, stems)
        remove_stale_temps(shards_dir, {shard_file.stem, index_path(shard_file).stem})
        if force:
            for stale in (shard_file, index_path(shard_file)):
                with contextlib.suppress(FileNotFoundError):
                    stale.unlink()

        parts = {}
        if not force:
            for i in mine:
                part = read_json(parts_dir / f"{names[i]}.json")
                if part is not None and part.get("fingerprint") == key and (labels_dir / f"{names[i]}.png").is_file():
                    parts[i] = part
        pending = [i for i in mine if i not in parts]
        reused = len(parts)
        logger.info("export %s shard %d/%d: %d images to compute, %d reused, into %s", dataset_name, index,
                    num_shards, len(pending), reused, output)

        grabcut_maps = GrabCutMaps(dataset_name, dicts, settings, cfg.GRABCUT.PREPARE_IF_MISSING)
        records = dicts
        if pending and fuses_grabcut(cfg):
            # inference averages each box's own GrabCut mask in: every pending image's labels, from the cache
            records = WithGrabCutFiles(dicts, {i: str(grabcut_maps.file(dicts[i])) for i in pending})
        if pending:
            engine = engine if engine is not None else LocalExportEngine(model, allow_partial_weights)
            bar = tqdm(total=len(pending), desc=f"export {dataset_name} {index}/{num_shards}", unit="img",
                       disable=not progress, mininterval=1.0)
            with contextlib.ExitStack() as stack:
                stack.callback(bar.close)
                for i, png, masks, scores in engine.outputs(cfg, records, pending, label_dtype):
                    record = dicts[i]
                    annotations, stats = image_part(i, record, masks, source, grabcut_maps, scores)
                    atomic_write_bytes(labels_dir / f"{names[i]}.png", png)
                    part = {"fingerprint": key, "image_id": record["image_id"], "stats": stats,
                            "annotations": annotations}
                    atomic_write_bytes(parts_dir / f"{names[i]}.json", dumps(part))  # last: marks it done
                    parts[i] = part
                    bar.update(1)

        missing = [dicts[i]["image_id"] for i in mine if i not in parts]
        if missing:
            raise RuntimeError(f"export {dataset_name}: {len(missing)} images of shard {index}/{num_shards} were "
                               f"not processed (first: {missing[:3]})")
        stats = sum_stats([parts[i]["stats"] for i in mine])
        _write_shard_file(shard_file, source, dicts, mine, parts, {
            "format": SHARD_FORMAT, "fingerprint": fingerprint, "shard": index, "num_shards": num_shards,
            "images": len(mine), "stats": stats})

    summary = {"dataset": dataset_name, "shard": index, "num_shards": num_shards, "images": len(mine),
               "computed": len(pending), "reused": reused, **stats, "grabcut_computed": grabcut_maps.computed,
               "not_exported": None, "output": str(shard_file)}
    if num_shards == 1:
        merged = merge_shards(output, num_shards=1)
        summary["output"] = merged["output"]
        summary["not_exported"] = merged["not_exported"]
    summary["seconds"] = time.perf_counter() - start
    return summary
