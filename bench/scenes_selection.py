#!/usr/bin/env python
"""Choosing settings for the demo's scenes without the demo's val masks: train chip mode on box2seg_scenes
train's boxes (the demo's training set) and score a third split of scenes, ``dev``, drawn by the same generator
with its own seed (64 images by default), one row per variant.

The demo's val split is what its target is judged on, and coco_tiny (bench/coco_tiny_selection.py) is real
photos, where a setting can help and not here or the other way round (FREEZE_AT 4, session 14). Here the dev
split's masks choose, so the demo's val column stays an unseen test.

    python bench/scenes_selection.py --seeds 0 --jobs 2 --variant pair1 MODEL.BOX2SEG.LOSS.PAIR_WEIGHT 1.0
    python bench/scenes_selection.py --seeds 0 --train-images 320 --output output/scenes_selection_320

Prints a markdown table (per box, small / medium / large, painted) of the baselines on dev, the config ("base",
each seed) and each variant (first seed); ``--json-out`` writes it too.
"""
import box2seg  # noqa: F401  (first: detectron2 v0.6 fixes)

import argparse
import copy
import os

from box2seg import engine
from box2seg.data.datasets import scenes
from coco_tiny_chips import MODEL_ROW, summary as row  # the per-box / size / painted figures of one row
from coco_tiny_selection import add_selection_arguments, parse_selection_arguments, print_table, write_json

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEV_SEED = 15150003  # train 15150001, val 15150002 (scenes.PARAMS)
DEV_DATASET = "box2seg_scenes_dev"
ROWS = ("filled boxes", "filled ellipses", "GrabCut")


def register_dev(num_images=64):
    """``box2seg_scenes_dev`` (DEV_DATASET): the shipped generator's parameters with one split, dev, of its own
    seed; returns its name and parameter hash."""
    params = copy.deepcopy(scenes.PARAMS)
    params["splits"] = {"dev": {"num_images": int(num_images), "seed": DEV_SEED}}
    (name,) = scenes.register_scenes(prefix="box2seg_scenes", params=params)
    return name, scenes.params_hash(params)


def register_train(num_images=None):
    """The training split: the demo's own ``box2seg_scenes_train``, or with ``num_images`` a longer or shorter
    one of the same generator and seed (every image has its own RNG, so 320 images are the shipped 160 and 160
    more)."""
    if num_images is None:
        return "box2seg_scenes_train"
    prefix = f"scenes_selection_train{int(num_images)}"
    scenes.register_scenes(prefix=prefix, num_images={"train": int(num_images)})
    return f"{prefix}_train"


def run_cfg(args, dev, seed, name, overrides=()):
    cfg = engine.setup_cfg(args.config_file, list(args.opts) + list(overrides), freeze=False)
    cfg.DATASETS.TRAIN = (args.train,)
    cfg.DATASETS.TEST = (dev,)
    cfg.SEED = seed
    cfg.OUTPUT_DIR = os.path.join(args.output, name)
    cfg.freeze()
    return cfg


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_selection_arguments(parser, "output/scenes_selection",
                            os.path.join(REPO, "configs", "cpu", "box2seg_lite0_scenes_chips.yaml"))
    parser.add_argument("--dev-images", type=int, default=64)
    parser.add_argument("--train-images", type=int, default=None,
                        help="training images (default: the demo's box2seg_scenes train, 160)")
    args = parse_selection_arguments(parser)

    dev, dev_hash = register_dev(args.dev_images)
    args.train = register_train(args.train_images)
    runs = {f"base_seed{s}": run_cfg(args, dev, s, f"base_seed{s}") for s in args.seeds}
    overrides = {name: [] for name in runs}
    for v in args.variant:
        runs[v[0]] = run_cfg(args, dev, args.seeds[0], f"variant_{v[0]}", v[1:])
        overrides[v[0]] = v[1:]
    results, seconds = engine.train_and_score(runs, jobs=args.jobs)
    any_run = results[next(iter(runs))]
    table = {name: row(any_run[name]) for name in ROWS}
    table.update({name: dict(row(results[name][MODEL_ROW]), minutes=seconds[name] / 60, overrides=overrides[name])
                  for name in runs})
    write_json(args.json_out, {"trained_on": f"{args.train} boxes", "scored_on": f"{dev} (params {dev_hash})",
                               "config": args.config_file, "overrides": list(args.opts), "rows": table})
    print_table(f"trained on {args.train}'s boxes, scored on {dev} ({args.dev_images} images, seed "
                f"{DEV_SEED}, params {dev_hash})", table)


if __name__ == "__main__":
    main()
