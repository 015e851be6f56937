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
rename as soon as it is done and then listed in its shard's manifest (:mod:`.grabcut_manifest`), so a resume
reads one manifest instead of every PNG.

Sharded (``shard = (I, N)``, ``--shard I/N``: records ``i % N == I``, :mod:`.shards`) for SLURM arrays and
submitit: each shard job holds only its own shard's lock, so N machines fill one cache folder at once; it
removes only its own images' temporaries; the last shard to finish writes ``summary.json``. The images are
computed by an engine: the local process pool (:class:`LocalEngine`, the default) or Ray
(:mod:`box2seg.distributed.ray_engine`, ``engine="ray"``); both run the same per-image function and write
the same files, so a job can switch engines and resume. Output bytes do not depend on ``workers``, shards,
the engine or on resumption (see :mod:`box2seg.data.grabcut`).
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

from .cache import annotations_hash, atomic_write_bytes, atomic_write_json, folder_lock, remove_stale_temps
from .grabcut import (
    GrabCutPaths,
    GrabCutSettings,
    compute_instance_map,
    encode_instance_map,
    grabcut_cache_dir,
    grabcut_file_for,
    read_png_stats,
    summarize_stats,
    warn_other_settings,
)
from .datasets.lazy import is_lazy
from .grabcut_manifest import ShardManifest, all_manifests, read_manifest
from .images import ImageReadError, read_image
from .shards import parse_shard, shard_positions

logger = logging.getLogger(__name__)

__all__ = ["prepare_dataset", "LocalEngine", "compute_image", "init_task_worker", "available_memory",
           "memory_bounded_workers", "GrabCutJobError", "WORKER_PEAK_BYTES", "FALLBACK_WARNING_SHARE",
           "fallback_warning"]

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
_IN_WORKER = False  # set in pool workers and Ray tasks: arms the test kill hook


def _init_worker():
    global _PARENT_PID
    _PARENT_PID = os.getppid()
    init_task_worker()


def init_task_worker():
    """One image per process: OpenCV's own threads would only oversubscribe (every engine's worker)."""
    global _IN_WORKER
    _IN_WORKER = True
    cv2.setNumThreads(1)


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


def compute_image(task):
    """Compute and atomically write one image's map (``task``: the tuple :func:`prepare_dataset` builds; what
    every engine's worker runs). Returns ``(position, stats or None, error or None)``."""
    position, record, settings, out_path, dataset_name, skip_bad = task
    if _PARENT_PID is not None and os.getppid() != _PARENT_PID:
        os._exit(1)  # the job was killed: an orphaned worker stops instead of writing on
    kill = os.environ.get(_KILL_ENV)
    if kill and _IN_WORKER:
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


# How long a pool whose worker died may take to report its remaining futures broken before they are counted
# lost: CPython's executor can stall after a SIGKILLed worker (its queue feeder or shutdown blocking), and the
# job must fail or retry rather than hang.
_BROKEN_POOL_GRACE_S = 10.0


def _workers(pool):
    """The worker processes of ``pool`` (a private attribute of the stdlib executor; none if it is gone)."""
    return list((getattr(pool, "_processes", None) or {}).values())


def _dead_workers(pool):
    """Workers of ``pool`` that have exited: before shutdown, only a worker killed from outside does."""
    return [p for p in _workers(pool) if p.exitcode is not None]


def _stop_pool(pool):
    """Shut a broken pool down without waiting on it: our own live workers are killed (each by its own
    pid, checked alive first), queued work cancelled."""
    for process in _workers(pool):
        if process.is_alive():
            process.kill()
    pool.shutdown(wait=False, cancel_futures=True)


def _run_pool(positions, task, workers, ctx, collect):
    """Run ``compute_image`` over ``positions`` in a fresh pool, ``collect`` each result; returns the positions
    lost to a broken pool (a worker killed from outside), in order. A worker's own exception propagates."""
    lost = []
    pool = ProcessPoolExecutor(min(workers, len(positions)), mp_context=ctx, initializer=_init_worker)
    broken_since = None
    try:
        futures = {pool.submit(compute_image, task(i)): i for i in positions}
        remaining = set(futures)
        while remaining:
            done, remaining = wait(remaining, timeout=1.0, return_when=FIRST_COMPLETED)
            for future in done:
                try:
                    result = future.result()
                except BrokenProcessPool:
                    lost.append(futures[future])
                    broken_since = broken_since or time.monotonic()
                    continue
                collect(*result)
            if remaining and broken_since is None and _dead_workers(pool):
                broken_since = time.monotonic()
            if remaining and broken_since is not None and time.monotonic() - broken_since > _BROKEN_POOL_GRACE_S:
                lost.extend(futures[f] for f in remaining)  # the executor stalled: count them lost
                remaining = set()
    finally:  # a worker's own exception too: queued work cancelled, running work finished (unless broken)
        if broken_since is None:
            pool.shutdown(wait=True, cancel_futures=True)
        else:
            _stop_pool(pool)
    return sorted(lost)


def _reusable_stats(manifest, mine, paths):
    """``{position: stats}`` of this shard's images already in the cache: from its own manifest, then from
    the manifests of other splits, and only for PNGs listed in none of them from the PNG itself."""
    found, unlisted = {}, []
    own = manifest.load()
    for i in mine:
        entry = own.get(paths[i].name)
        if entry is not None and "stats" in entry and paths[i].is_file():
            found[i] = entry["stats"]
        elif paths[i].is_file():
            unlisted.append(i)
    if unlisted:
        others = {}
        for other in all_manifests(manifest.folder, skip=manifest.path):
            others.update(read_manifest(other))
        for i in unlisted:
            entry = others.get(paths[i].name)
            stats = entry["stats"] if entry is not None and "stats" in entry else read_png_stats(paths[i])
            if stats is not None:  # None (corrupt / foreign file) -> recompute
                found[i] = stats
    return found


def _dataset_summary(dataset_name, folder, dicts, paths, settings):
    """The dataset's ``summary.json`` content when every image is done (by any shard, any split), else None
    (and how many images are done)."""
    entries = {}
    for path in all_manifests(folder):
        entries.update(read_manifest(path))
    done, bad = [], []
    for i, path in enumerate(paths):  # a lazy dataset's record is built only for a bad image
        entry = entries.get(path.name)
        if entry is None:
            return None, len(done) + len(bad)
        if "error" in entry:
            bad.append(dicts[i]["file_name"])
        else:
            done.append(entry["stats"])
    meta = MetadataCatalog.get(dataset_name)
    summary = summarize_stats(done, meta.get("thing_classes", None))
    summary.update({
        "dataset": dataset_name,
        "settings": asdict(settings),
        "settings_key": settings.key(),
        "annotations_hash": annotations_hash(dicts),
        "images_in_dataset": len(dicts),
        "bad_images": bad,
    })
    return summary, len(dicts)


class LocalEngine:
    """The per-image tasks in a ``ProcessPoolExecutor`` on this machine (in this process for one worker)."""

    name = "local"

    def run(self, pending, task, workers, collect, dataset_name, describe, start_method=None):
        if workers > 1 and len(pending) > 1:
            workers = memory_bounded_workers(min(workers, len(pending)))
        if workers <= 1 or len(pending) <= 1:
            for i in pending:
                collect(*compute_image(task(i)))
            return
        lost = _run_pool(pending, task, workers, _pool_context(start_method), collect)
        if lost:
            logger.warning("GrabCut %s: a worker died (killed from outside, e.g. by the OOM killer); "
                           "retrying its %d images in a fresh pool", dataset_name, len(lost))
            lost = _run_pool(lost, task, workers, _pool_context(start_method), collect)
        if lost:
            names = ", ".join(describe(i) for i in lost[:10])
            raise GrabCutJobError(
                f"GrabCut {dataset_name}: workers died twice (killed from outside, e.g. by the OOM "
                f"killer) while computing {len(lost)} images: {names}{' ...' if len(lost) > 10 else ''}. "
                "The images already written are kept: run the same command again to resume (with "
                "fewer --workers if memory ran out).")


def prepare_dataset(dataset_name, dataset_dicts=None, settings=None, workers=0, force=False,
                    skip_bad_images=False, progress=True, start_method=None, shard=(0, 1), engine=None):
    """Compute the missing GrabCut maps of shard ``shard = (I, N)`` of ``dataset_name`` (records ``i`` with
    ``i % N == I``); write ``summary.json`` once every image of the dataset is done.

    ``engine``: what runs the per-image tasks: None for :class:`LocalEngine` (a process pool of ``workers``),
    or another engine (``box2seg.distributed.grabcut_engine("ray", address)``: Ray tasks). Every engine
    writes the same files, so a job may switch engines and resume.

    Returns a dict: folder, shard, computed, reused, boxes, fallbacks, crowd_boxes, bad_images (this shard's),
    seconds, summary (the dataset's, or None while other shards are still missing).
    """
    start = time.perf_counter()
    settings = settings or GrabCutSettings()
    shard = parse_shard(shard)
    dicts = DatasetCatalog.get(dataset_name) if dataset_dicts is None else dataset_dicts
    folder = grabcut_cache_dir(dataset_name, dicts, settings)
    folder.mkdir(parents=True, exist_ok=True)
    if is_lazy(dicts):  # records built on access (Open Images): file names in one array, no record built
        paths = GrabCutPaths(folder, dicts)
        twice = paths.duplicate()
        if twice is not None:
            first, second = (dicts[i] for i in twice)
            raise ValueError(f"dataset {dataset_name!r}: images {first['file_name']} and {second['file_name']} have "
                             f"the same image_id {second.get('image_id')!r}; image ids must be unique")
    else:
        paths = [grabcut_file_for(folder, r) for r in dicts]
        seen = {}
        for record, path in zip(dicts, paths):
            if path.name in seen:
                raise ValueError(f"dataset {dataset_name!r}: images {seen[path.name]} and {record['file_name']} have "
                                 f"the same image_id {record.get('image_id')!r}; image ids must be unique")
            seen[path.name] = record["file_name"]
    mine = shard_positions(len(dicts), shard)
    manifest = ShardManifest(folder, shard)
    engine = engine if engine is not None else LocalEngine()
    where = f"{dataset_name}" + (f" shard {shard[0]}/{shard[1]}" if shard[1] > 1 else "")

    def sweep_temps():
        """Remove this shard's temporaries: a killed job's, or a worker's killed mid-write (or stopped with its
        broken pool). Under the folder lock, as export's on-demand GrabCut fallback writes under it."""
        with folder_lock(folder):
            remove_stale_temps(folder, {paths[i].stem for i in mine})

    with manifest.lock(busy_message=f"waiting for another prepare-grabcut job of shard {shard[0]}/{shard[1]} "
                                    f"on {folder}"):
        sweep_temps()  # left by a killed job of this shard
        stats = {} if force else _reusable_stats(manifest, mine, paths)
        pending = [i for i in mine if i not in stats]
        reused = len(stats)
        logger.info("GrabCut %s: %d images to compute, %d reused, in %s (engine %s)", where, len(pending), reused,
                    folder, engine.name)
        if pending and not reused:
            warn_other_settings(dataset_name, dicts, settings, action=f"are computed now ({len(pending)} images)")

        task = lambda i: (i, _minimal_record(dicts[i]), settings, str(paths[i]), dataset_name,  # noqa: E731
                          skip_bad_images)
        bad = {}
        bar = tqdm(total=len(pending), desc=f"GrabCut {where}", unit="img", disable=not progress,
                   mininterval=1.0)

        with contextlib.ExitStack() as stack:
            if pending:  # runs last, also when the job fails (nothing computed: nothing new to sweep)
                stack.callback(sweep_temps)
            stack.callback(bar.close)
            stack.enter_context(manifest.appending(truncate=force))

            def collect(position, image_stats, error):
                if error is not None:
                    bad[position] = error
                    logger.warning("skipped: %s", error)
                else:
                    stats[position] = image_stats
                manifest.append(position, paths[position].name, image_stats, error)
                bar.update(1)

            engine.run(pending, task, workers, collect, dataset_name, lambda i: dicts[i]["file_name"],
                       start_method=start_method)
        manifest.compact([(i, paths[i].name, stats.get(i), bad.get(i)) for i in mine if i in stats or i in bad])

    with folder_lock(folder):  # the last shard to finish sees every manifest complete and writes the summary
        summary, images_done = _dataset_summary(dataset_name, folder, dicts, paths, settings)
        if summary is not None:
            atomic_write_json(folder / "summary.json", summary)
    if summary is None:
        logger.info("GrabCut %s done; %d of %d images of the dataset are done: summary.json is written by the "
                    "last shard to finish", where, images_done, len(dicts))
    totals = summarize_stats([stats[i] for i in mine if i in stats])
    warning = fallback_warning(where, totals["boxes"], totals["fallbacks"])
    if warning:
        logger.warning(warning)
    return {
        "folder": str(folder),
        "shard": shard,
        "engine": engine.name,
        "computed": len(pending) - len(bad),
        "reused": reused,
        "boxes": totals["boxes"],
        "fallbacks": totals["fallbacks"],
        "crowd_boxes": totals["crowd_boxes"],
        "bad_images": [dicts[i]["file_name"] for i in sorted(bad)],
        "seconds": time.perf_counter() - start,
        "summary": summary,
    }
