"""The GrabCut job (``box2seg prepare-grabcut``, training's ``PREPARE_IF_MISSING``): a dataset's GrabCut
instance maps computed into the cache.

Parallel over images (a ``concurrent.futures.ProcessPoolExecutor``, "forkserver" start method where
available; the worker is a top-level function taking only picklable arguments, so any start method works).
A worker killed from outside (the OOM killer's SIGKILL) breaks the pool: the images it lost are retried once
in a fresh pool, then the job fails naming them; whatever was written stays, so a rerun resumes
(``multiprocessing.Pool`` waited for the lost chunk for ever). When more than ``FALLBACK_WARNING_SHARE`` of
the boxes fell back to the ellipse, the job warns: those labels are ellipses, not object shapes. The worker count is lowered to what the
available memory holds at ``WORKER_PEAK_BYTES`` per worker (the per-worker peak GrabCut's ``max_side`` cap
guarantees; bench/grabcut_memory.py), with a log line saying so. Resumable (an image whose file exists
is reused unless ``force``) and safe to interrupt at any point: every image is written by an atomic
rename as soon as it is done, the cache folder's lock (``cache.folder_lock``) keeps two jobs off the same
folder, and a new run first removes the temporary files a killed run left. Output bytes do not depend on
``workers`` or on resumption (see :mod:`box2seg.data.grabcut`).
"""
import contextlib
import logging
import multiprocessing
import os
import signal
import time
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
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

__all__ = ["prepare_dataset", "available_memory", "memory_bounded_workers", "GrabCutJobError", "WORKER_PEAK_BYTES",
           "FALLBACK_WARNING_SHARE", "fallback_warning"]

# Peak memory of one worker with the default GRABCUT.MAX_SIDE cap: bench/grabcut_memory.py measures an
# 8000 x 6000 photo under this (docs/grabcut.md).
WORKER_PEAK_BYTES = 2 * 1024**3
# Share of a dataset's (non-crowd) boxes falling back to the ellipse above which the job warns: GrabCut then
# labels few of the objects (57.5% fell back on coco_tiny with the settings of 0e10efa; docs/grabcut.md).
FALLBACK_WARNING_SHARE = 0.4
# Test hook: a worker given an image whose file name contains this kills itself with SIGKILL, as the OOM
# killer would ("NAME" or "NAME:MARKER": only while the file MARKER does not exist yet; it is created first).
_KILL_ENV = "BOX2SEG_TEST_KILL_GRABCUT_WORKER"


class GrabCutJobError(RuntimeError):
    """The job could not compute some images (lost workers twice); the message names them."""


def available_memory():
    """Bytes of memory available to new processes (Linux MemAvailable; else free physical pages)."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def memory_bounded_workers(workers):
    """``workers`` lowered to what the available memory holds at WORKER_PEAK_BYTES each (at least 1)."""
    available = available_memory()
    if available is None or workers <= 1:
        return workers
    fit = max(1, int(available // WORKER_PEAK_BYTES))
    if fit < workers:
        logger.warning("GrabCut: %d workers asked for, but %.1f GiB of memory is available and one worker may "
                       "peak at %.1f GiB (GRABCUT.MAX_SIDE cap): using %d workers", workers, available / 2**30,
                       WORKER_PEAK_BYTES / 2**30, fit)
        return fit
    return workers


def fallback_warning(dataset_name, boxes, fallbacks):
    """The warning to log when more than FALLBACK_WARNING_SHARE of ``boxes`` fell back, else None."""
    if boxes == 0 or fallbacks / boxes <= FALLBACK_WARNING_SHARE:
        return None
    return (f"GrabCut {dataset_name}: {fallbacks} of {boxes} boxes ({100 * fallbacks / boxes:.1f}%, more than "
            f"{100 * FALLBACK_WARNING_SHARE:.0f}%) fell back to the ellipse: GrabCut could not separate those "
            "objects from their background, so their pseudo-labels are the ellipses inscribed in the boxes, not "
            "object shapes. Typical of small objects or low contrast; see docs/grabcut.md for the settings "
            "(GRABCUT.UPSCALE_TO, GRABCUT.CORE, GRABCUT.FALLBACK_FILL) and what they score")


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
    kill = os.environ.get(_KILL_ENV)
    if kill and _PARENT_PID is not None:
        name, _, marker = kill.partition(":")
        if name in os.path.basename(record["file_name"]) and not (marker and os.path.exists(marker)):
            if marker:
                open(marker, "w").close()
            os.kill(os.getpid(), signal.SIGKILL)
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


def _run_pool(positions, task, workers, ctx, collect):
    """Run ``_work`` over ``positions`` in a fresh pool, ``collect`` each result; returns the positions lost
    to a broken pool (a worker killed from outside), in order. A worker's own exception propagates."""
    lost = []
    with ProcessPoolExecutor(min(workers, len(positions)), mp_context=ctx, initializer=_init_worker) as pool:
        futures = {pool.submit(_work, task(i)): i for i in positions}
        try:
            remaining = set(futures)
            while remaining:
                done, remaining = wait(remaining, return_when=FIRST_COMPLETED)
                for future in done:
                    try:
                        result = future.result()
                    except BrokenProcessPool:
                        lost.append(futures[future])
                        continue
                    collect(*result)
        except BaseException:
            for future in futures:
                future.cancel()
            raise
    return sorted(lost)


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

        task = lambda i: (i, _minimal_record(dicts[i]), settings, str(paths[i]), dataset_name,  # noqa: E731
                          skip_bad_images)
        bad = {}
        bar = tqdm(total=len(pending), desc=f"GrabCut {dataset_name}", unit="img", disable=not progress,
                   mininterval=1.0)

        def collect(position, image_stats, error):
            if error is not None:
                bad[position] = error
                logger.warning("skipped: %s", error)
            else:
                stats[position] = image_stats
            bar.update(1)

        with contextlib.ExitStack() as stack:
            stack.callback(bar.close)
            if workers > 1 and len(pending) > 1:
                workers = memory_bounded_workers(min(workers, len(pending)))
            if workers > 1 and len(pending) > 1:
                lost = _run_pool(pending, task, workers, _pool_context(start_method), collect)
                if lost:
                    logger.warning("GrabCut %s: a worker died (killed from outside, e.g. by the OOM killer); "
                                   "retrying its %d images in a fresh pool", dataset_name, len(lost))
                    lost = _run_pool(lost, task, workers, _pool_context(start_method), collect)
                if lost:
                    names = ", ".join(dicts[i]["file_name"] for i in lost[:10])
                    raise GrabCutJobError(
                        f"GrabCut {dataset_name}: workers died twice (killed from outside, e.g. by the OOM "
                        f"killer) while computing {len(lost)} images: {names}{' ...' if len(lost) > 10 else ''}. "
                        "The images already written are kept: run the same command again to resume (with "
                        "fewer --workers if memory ran out).")
            else:
                for i in pending:
                    collect(*_work(task(i)))

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
    warning = fallback_warning(dataset_name, summary["boxes"], summary["fallbacks"])
    if warning:
        logger.warning(warning)
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
