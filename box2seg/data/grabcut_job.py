"""The GrabCut job (``box2seg prepare-grabcut``, training's ``PREPARE_IF_MISSING``): a dataset's GrabCut
instance maps computed into the cache.

Parallel over images (a ``multiprocessing`` pool, chunked ``imap_unordered``, "forkserver" start method
where available; the worker is a top-level function taking only picklable arguments, so any start method
works), resumable (an image whose file exists
is reused unless ``force``) and safe to interrupt at any point: every image is written by an atomic
rename as soon as it is done, the cache folder's lock (``cache.folder_lock``) keeps two jobs off the same
folder, and a new run first removes the temporary files a killed run left. Output bytes do not depend on
``workers`` or on resumption (see :mod:`box2seg.data.grabcut`).
"""
import contextlib
import logging
import multiprocessing
import os
import time
from dataclasses import asdict

import cv2
from detectron2.data import DatasetCatalog, MetadataCatalog
from tqdm import tqdm

from .cache import annotations_hash, atomic_write_bytes, atomic_write_json, folder_lock
from .grabcut import (
    GrabCutSettings,
    compute_instance_map,
    encode_instance_map,
    grabcut_cache_dir,
    grabcut_file_for,
    read_png_stats,
    summarize_stats,
    warn_other_settings,
)
from .images import ImageReadError, read_image

logger = logging.getLogger(__name__)

__all__ = ["prepare_dataset"]

def _minimal_record(record):
    """What a worker needs of a record (keeps pickling cheap)."""
    return {
        "file_name": record["file_name"],
        "image_id": record.get("image_id"),
        "height": record.get("height"),
        "width": record.get("width"),
        "annotations": [
            {k: a[k] for k in ("bbox", "bbox_mode", "category_id", "iscrowd") if k in a}
            for a in record.get("annotations", [])
        ],
    }


_PARENT_PID = None  # set in pool workers: the process that started them


def _init_worker():
    global _PARENT_PID
    _PARENT_PID = os.getppid()
    cv2.setNumThreads(1)  # one image per process: OpenCV's own threads would only oversubscribe


def _pool_context(start_method):
    """"forkserver" where available: workers fork from a fresh server process that has imported this module
    once, so they are cheap to start and inherit no threads or locks (plain "fork" of a process that has run
    OpenCV or torch threads can deadlock; "spawn" re-imports torch in every worker)."""
    if start_method is None:
        start_method = "forkserver" if "forkserver" in multiprocessing.get_all_start_methods() else "spawn"
    ctx = multiprocessing.get_context(start_method)
    if start_method == "forkserver":
        ctx.set_forkserver_preload([__name__])
    return ctx


def _work(task):
    """Compute and atomically write one image's map. Returns ``(position, stats or None, error or None)``."""
    position, record, settings, out_path, dataset_name, skip_bad = task
    if _PARENT_PID is not None and os.getppid() != _PARENT_PID:
        os._exit(1)  # the job was killed: an orphaned worker stops instead of writing on
    error, image = None, None
    try:
        image = read_image(record["file_name"], format="BGR")
    except ImageReadError as e:
        error = f"{e} (image_id {record['image_id']!r} of dataset {dataset_name!r})"
    if image is not None and record["height"] is not None and image.shape[:2] != (record["height"], record["width"]):
        error = (f"image {record['file_name']} (image_id {record['image_id']!r}) of dataset {dataset_name!r} is "
                 f"{image.shape[1]}x{image.shape[0]} but its annotations say {record['width']}x{record['height']}")
    if error is not None:
        if skip_bad:
            return position, None, error
        raise RuntimeError(error + " (use --skip-bad-images to skip such images)")
    try:
        instance_map, stats = compute_instance_map(image, record, settings)
    except Exception as e:
        raise RuntimeError(f"GrabCut failed on image {record['file_name']} of dataset {dataset_name!r}: {e}") from e
    atomic_write_bytes(out_path, encode_instance_map(instance_map, stats))
    return position, stats, None


def prepare_dataset(dataset_name, dataset_dicts=None, settings=None, workers=0, force=False,
                    skip_bad_images=False, progress=True, start_method=None):
    """Compute the missing GrabCut maps of ``dataset_name`` and write ``summary.json``.

    Returns a dict: folder, computed, reused, boxes, fallbacks, crowd_boxes, bad_images, seconds, summary.
    """
    start = time.perf_counter()
    settings = settings or GrabCutSettings()
    dicts = DatasetCatalog.get(dataset_name) if dataset_dicts is None else dataset_dicts
    folder = grabcut_cache_dir(dataset_name, dicts, settings)
    folder.mkdir(parents=True, exist_ok=True)
    paths = [grabcut_file_for(folder, r) for r in dicts]
    seen = {}
    for record, path in zip(dicts, paths):
        if path.name in seen:
            raise ValueError(f"dataset {dataset_name!r}: images {seen[path.name]} and {record['file_name']} have "
                             f"the same image_id {record.get('image_id')!r}; image ids must be unique")
        seen[path.name] = record["file_name"]

    with folder_lock(folder, busy_message=f"waiting for another prepare-grabcut job on {folder}"):
        for stale in folder.glob(".*.tmp*"):  # left by a killed run; the lock says no writer is active
            stale.unlink(missing_ok=True)
        stats = [None] * len(dicts)
        if not force:
            for i, path in enumerate(paths):
                if path.is_file():
                    stats[i] = read_png_stats(path)  # None (corrupt / foreign file) -> recompute
        pending = [i for i, s in enumerate(stats) if s is None]
        reused = len(dicts) - len(pending)
        logger.info("GrabCut %s: %d images to compute, %d reused, in %s", dataset_name, len(pending), reused, folder)
        if pending and not reused:
            warn_other_settings(dataset_name, dicts, settings, action=f"are computed now ({len(pending)} images)")

        tasks = ((i, _minimal_record(dicts[i]), settings, str(paths[i]), dataset_name, skip_bad_images)
                 for i in pending)
        bad = {}
        bar = tqdm(total=len(pending), desc=f"GrabCut {dataset_name}", unit="img", disable=not progress,
                   mininterval=1.0)
        with contextlib.ExitStack() as stack:
            stack.callback(bar.close)
            if workers > 1 and len(pending) > 1:
                ctx = _pool_context(start_method)
                pool = stack.enter_context(ctx.Pool(min(workers, len(pending)), initializer=_init_worker))
                chunksize = max(1, min(8, len(pending) // (4 * workers)))
                results = pool.imap_unordered(_work, tasks, chunksize=chunksize)
            else:
                results = map(_work, tasks)
            for position, image_stats, error in results:
                if error is not None:
                    bad[position] = error
                    logger.warning("skipped: %s", error)
                else:
                    stats[position] = image_stats
                bar.update(1)

        done = [s for s in stats if s is not None]
        meta = MetadataCatalog.get(dataset_name)
        summary = summarize_stats(done, meta.get("thing_classes", None))
        summary.update({
            "dataset": dataset_name,
            "settings": asdict(settings),
            "settings_key": settings.key(),
            "annotations_hash": annotations_hash(dicts),
            "images_in_dataset": len(dicts),
            "bad_images": [dicts[i]["file_name"] for i in sorted(bad)],
        })
        atomic_write_json(folder / "summary.json", summary)
    return {
        "folder": str(folder),
        "computed": len(pending) - len(bad),
        "reused": reused,
        "boxes": summary["boxes"],
        "fallbacks": summary["fallbacks"],
        "crowd_boxes": summary["crowd_boxes"],
        "bad_images": summary["bad_images"],
        "seconds": time.perf_counter() - start,
        "summary": summary,
    }
