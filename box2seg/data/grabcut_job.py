"""``box2seg prepare-grabcut``: compute a dataset's GrabCut instance maps into the cache.

Parallel over images (a ``multiprocessing`` pool, chunked ``imap_unordered``, "forkserver" start method
where available; the worker is a top-level function taking only picklable arguments, so any start method
works), resumable (an image whose file exists
is reused unless ``--force``) and safe to interrupt at any point: every image is written by an atomic
rename as soon as it is done, a lock file keeps two jobs off the same folder, and a new run first removes
the temporary files a killed run left. Output bytes do not depend on ``--workers`` or on resumption (see
:mod:`box2seg.data.grabcut`). :func:`prepare_dataset` is the same job for code (training's
``PREPARE_IF_MISSING``).
"""
import argparse
import contextlib
import logging
import os
import time
from dataclasses import asdict

from .grabcut import GrabCutSettings

logger = logging.getLogger(__name__)

__all__ = ["add_arguments", "main", "prepare_dataset"]


def add_arguments(parser):
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.description = (
        "Precompute GrabCut pseudo-labels (one 16-bit instance-map PNG per image) for a registered dataset.\n"
        "Settings come from --config-file (BOX2SEG.GRABCUT) or the defaults, overridden by the flags below;\n"
        "they are part of the cache key, so training must use the same ones. Images already in the cache are\n"
        "reused (use --force to recompute); an interrupted run is resumed by running the same command."
    )
    parser.add_argument("--dataset", action="append", required=True, metavar="NAME",
                        help="registered dataset name (repeatable)")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1,
                        help="worker processes (0 or 1: run in this process; default: CPU count)")
    parser.add_argument("--config-file", default="", metavar="FILE",
                        help="config to read BOX2SEG.GRABCUT and BOX2SEG.COCO_DATASETS from")
    parser.add_argument("--iterations", type=int, default=None, help="GrabCut iterations (default 5)")
    parser.add_argument("--margin", type=float, default=None,
                        help="background margin around a box, relative to its side (default 0.5)")
    parser.add_argument("--min-margin", type=int, default=None, help="minimum margin in pixels (default 32)")
    parser.add_argument("--max-side", type=int, default=None,
                        help="downscale a crop whose longer side exceeds this (0 = never; default 0)")
    parser.add_argument("--seed", type=int, default=None, help="RNG seed of GrabCut's GMM initialisation")
    parser.add_argument("--force", action="store_true", help="recompute images already in the cache")
    parser.add_argument(
        "--skip-bad-images", action="store_true",
        help="skip (and count) images that are missing, unreadable or of the wrong size instead of stopping "
        "with an error naming the file; skipped images get no label file, so training on the dataset still "
        "fails until they are fixed and the command is re-run; the exit status is then 1",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def _settings_from_args(args):
    from detectron2.config import get_cfg

    from box2seg.config import add_box2seg_config

    cfg = get_cfg()
    add_box2seg_config(cfg)
    if args.config_file:
        cfg.merge_from_file(args.config_file)
    base = GrabCutSettings.from_config(cfg)
    overrides = {k: getattr(args, k) for k in ("iterations", "margin", "min_margin", "max_side", "seed")
                 if getattr(args, k) is not None}
    return cfg, GrabCutSettings(**{**asdict(base), **overrides})


def main(args):
    from detectron2.data import DatasetCatalog

    from box2seg.cli import register_cli_datasets

    cfg, settings = _settings_from_args(args)
    register_cli_datasets(cfg.BOX2SEG.COCO_DATASETS)  # the same spec twice (flag and config) is a no-op
    failed = 0
    for name in args.dataset:
        if name not in DatasetCatalog.list():
            raise SystemExit(f"prepare-grabcut: dataset {name!r} is not registered (register your own COCO-format "
                             "dataset with --coco-dataset NAME=JSON:IMAGE_ROOT)")
        result = prepare_dataset(name, settings=settings, workers=args.workers, force=args.force,
                                 skip_bad_images=args.skip_bad_images, progress=not args.no_progress)
        failed += len(result["bad_images"])
        line = (f"prepare-grabcut {name}: {result['computed']} images computed, {result['reused']} reused, "
                f"{result['boxes']} boxes, {result['fallbacks']} fallbacks, {result['crowd_boxes']} crowd boxes, "
                f"{len(result['bad_images'])} bad images skipped, {result['seconds']:.1f} s -> {result['folder']}")
        logger.info(line)
        print(line, flush=True)
    return 1 if failed else 0


# ----------------------------------------------------------------------------------------------------------
# The job


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
    import cv2

    _PARENT_PID = os.getppid()
    cv2.setNumThreads(1)  # one image per process: OpenCV's own threads would only oversubscribe


def _pool_context(start_method):
    """"forkserver" where available: workers fork from a fresh server process that has imported this module
    once, so they are cheap to start and inherit no threads or locks (plain "fork" of a process that has run
    OpenCV or torch threads can deadlock; "spawn" re-imports torch in every worker)."""
    import multiprocessing

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
    import cv2

    from .cache import atomic_write_bytes
    from .grabcut import compute_instance_map, encode_instance_map

    image = cv2.imread(record["file_name"], cv2.IMREAD_COLOR)
    error = None
    if image is None:
        error = f"cannot read image {record['file_name']} (image_id {record['image_id']!r}) of dataset " \
                f"{dataset_name!r}: missing or corrupt"
    elif record["height"] is not None and image.shape[:2] != (record["height"], record["width"]):
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


@contextlib.contextmanager
def _folder_lock(folder):
    """Exclusive lock on the cache folder (released by the OS if the job dies)."""
    import fcntl

    with open(folder / ".lock", "a") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            logger.info("waiting for another prepare-grabcut job on %s", folder)
            fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def prepare_dataset(dataset_name, dataset_dicts=None, settings=None, workers=0, force=False,
                    skip_bad_images=False, progress=True, start_method=None):
    """Compute the missing GrabCut maps of ``dataset_name`` and write ``summary.json``.

    Returns a dict: folder, computed, reused, boxes, fallbacks, crowd_boxes, bad_images, seconds, summary.
    """
    from detectron2.data import DatasetCatalog, MetadataCatalog
    from tqdm import tqdm

    from .cache import annotations_hash, atomic_write_json
    from .grabcut import grabcut_cache_dir, grabcut_file_for, read_png_stats, summarize_stats

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

    with _folder_lock(folder):
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
