"""``box2seg prepare-grabcut``: a dataset's GrabCut instance maps into the cache; see
:mod:`box2seg.data.grabcut_job`."""
import argparse
import logging
import os
from dataclasses import asdict

from detectron2.data import DatasetCatalog

from ..data.datasets import UnknownDatasetError, unknown_dataset_message
from ..data.grabcut import GrabCutSettings
from ..data.grabcut_job import prepare_dataset
from ..data.shards import ShardSpecError, parse_shard
from ..distributed import ENGINES, grabcut_engine
from ..engine import setup_cfg

__all__ = ["add_arguments", "main"]

logger = logging.getLogger(__name__)


def add_arguments(parser):
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.description = (
        "Precompute GrabCut pseudo-labels (one 16-bit instance-map PNG per image) for a registered dataset.\n"
        "Settings come from --config-file (GRABCUT) or the defaults, overridden by the flags below;\n"
        "they are part of the cache key, so training must use the same ones. Images already in the cache are\n"
        "reused (use --force to recompute); an interrupted run is resumed by running the same command.\n\n"
        "Several machines: run --shard I/N for I = 0..N-1 (a SLURM array, submitit) on a shared cache folder;\n"
        "the last shard to finish writes summary.json. Or --engine ray on a Ray cluster (docs/scale.md)."
    )
    parser.add_argument("--dataset", action="append", required=True, metavar="NAME",
                        help="registered dataset name (repeatable)")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1,
                        help="worker processes (0 or 1: run in this process; default: CPU count); with --engine ray "
                        "and no --address: the local cluster's CPUs")
    parser.add_argument("--shard", type=_shard_arg, default=(0, 1), metavar="I/N",
                        help="compute only records i with i %% N == I (default 0/1: everything)")
    parser.add_argument("--engine", choices=ENGINES, default="local",
                        help="local: a process pool on this machine (default); ray: Ray tasks, retried when a "
                        "worker dies (pip install -e '.[ray]')")
    parser.add_argument("--address", default=None, metavar="ADDR",
                        help="with --engine ray: the cluster to connect to (e.g. auto or HOST:6379); default: "
                        "start a local one with --workers CPUs")
    parser.add_argument("--config-file", default="", metavar="FILE",
                        help="config to read GRABCUT and DATASETS.COCO_FORMAT from")
    parser.add_argument("--iterations", type=int, default=None, help="GrabCut iterations (default 5)")
    parser.add_argument("--margin", type=float, default=None,
                        help="background margin around a box, relative to its side (default 0.5)")
    parser.add_argument("--min-margin", type=int, default=None, help="minimum margin in pixels (default 32)")
    parser.add_argument("--max-side", type=int, default=None,
                        help="memory cap: downscale a crop whose longer side exceeds this many image pixels "
                        "(0 = never; default 1024, which leaves images of at most 1024 px unchanged)")
    parser.add_argument("--seed", type=int, default=None, help="RNG seed of GrabCut's GMM initialisation")
    parser.add_argument("--fallback-fill", type=float, default=None,
                        help="fall back to the ellipse when GrabCut covers less than this share of the box "
                        "(default 0.4)")
    parser.add_argument("--upscale-to", type=int, default=None,
                        help="upscale a crop so the box's short side is at least this many px (0 = off; default 64)")
    parser.add_argument("--core", type=float, default=None,
                        help="central ellipse of CORE x the box marked definite foreground (0 = off; default 0.45)")
    parser.add_argument("--force", action="store_true", help="recompute images already in the cache")
    parser.add_argument(
        "--skip-bad-images", action="store_true",
        help="skip (and count) images that are missing, unreadable or of the wrong size instead of stopping "
        "with an error naming the file; skipped images get no label file, so training on the dataset still "
        "fails until they are fixed and the command is re-run; the exit status is then 1",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def _shard_arg(text):
    try:
        return parse_shard(text)
    except ShardSpecError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _settings_from_args(args):
    """The config (its datasets registered) and the GrabCut settings: the config's, overridden by the flags."""
    cfg = setup_cfg(args.config_file, coco_datasets=args.coco_dataset,
                    openimages_datasets=getattr(args, "openimages_dataset", ()))
    base = GrabCutSettings.from_config(cfg)
    overrides = {k: getattr(args, k) for k in ("iterations", "margin", "min_margin", "max_side", "seed",
                                                   "fallback_fill", "upscale_to", "core")
                 if getattr(args, k) is not None}
    return cfg, GrabCutSettings(**{**asdict(base), **overrides})


def main(args):
    _, settings = _settings_from_args(args)
    failed = 0
    for name in args.dataset:
        if name not in DatasetCatalog.list():
            raise UnknownDatasetError(unknown_dataset_message(name))
        result = prepare_dataset(name, settings=settings, workers=args.workers, force=args.force,
                                 skip_bad_images=args.skip_bad_images, progress=not args.no_progress,
                                 shard=args.shard, engine=grabcut_engine(args.engine, args.address))
        failed += len(result["bad_images"])
        index, count = args.shard
        where = f"{name} shard {index}/{count}" if count > 1 else name
        note = "" if result["summary"] is not None else " (summary.json comes when every shard is done)"
        line = (f"prepare-grabcut {where}: {result['computed']} images computed, {result['reused']} reused, "
                f"{result['boxes']} boxes, {result['fallbacks']} fallbacks, {result['crowd_boxes']} crowd boxes, "
                f"{len(result['bad_images'])} bad images skipped, {result['seconds']:.1f} s{note} -> {result['folder']}")
        logger.info(line)
        print(line, flush=True)
    return 1 if failed else 0
