#!/usr/bin/env python
"""Chip mode on real photos (issue 12's targets): coco_tiny, boxes only, scored on val2017.

Runs, each seed separately, every run trained on boxes only (iscrowd = 0 boxes and their category; the
true masks are only read to score):

    transductive  train on the boxes of all 160 images, score val2017 ("box2seg")
    inductive     train on train2017's boxes, score val2017 ("box2seg_inductive")

beside the box-only baselines on val2017 (filled boxes, filled ellipses, GrabCut with the default settings),
all under the one scorer (evaluation/box_scorer.py): each box's own mask (the headline) and the painted map.

    python bench/coco_tiny_chips.py --coco-root ../shared/data/coco_tiny --seeds 0 1

Writes bench/results/coco_tiny.json (``--json-out``) and prints one markdown table; GrabCut labels missing
from the cache are computed first and timed ("grabcut_minutes"). ``--variant NAME KEY VALUE ...`` adds an
ablation row (transductive, first seed) with those config overrides, e.g.
``--variant gc_only MODEL.BOX2SEG.LOSS.TERMS '["gc"]'``. The folder is read in place (never copied).
"""
import box2seg  # noqa: F401  (first: detectron2 v0.6 fixes)

import argparse
import json
import os
import time

from detectron2.utils.logger import setup_logger

from box2seg import engine
from box2seg.commands import overrides_after_separator
from box2seg.engine.data import prepare_caches

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SPLITS = {"all": "instances_all.json", "train": "instances_train2017.json", "val": "instances_val2017.json"}
FOLDERS = {"all": "", "train": "train2017", "val": "val2017"}
BASELINE_KEYS = {"box": "filled boxes", "ellipse": "filled ellipses", "grabcut": "GrabCut"}
MODEL_ROW = "Box2Seg box-conditioned"


def dataset_specs(root):
    return [f"coco_tiny_{s}={os.path.join(root, 'annotations', f)}:{os.path.join(root, FOLDERS[s])}".rstrip("/")
            for s, f in SPLITS.items()]


def run_cfg(args, train_split, seed, name, overrides=()):
    cfg = engine.setup_cfg(args.config_file, list(args.opts) + list(overrides), dataset_specs(args.coco_root),
                           freeze=False)
    cfg.DATASETS.TRAIN = (f"coco_tiny_{train_split}",)
    cfg.DATASETS.TEST = ("coco_tiny_val",)
    cfg.SEED = seed
    if args.iters:
        cfg.SOLVER.MAX_ITER = args.iters
    cfg.OUTPUT_DIR = os.path.join(args.output, name)
    cfg.freeze()
    return cfg


def summary(scores):
    return {"per_box": scores["instance_mIoU"], "small": scores["instance_mIoU-small"],
            "medium": scores["instance_mIoU-medium"], "large": scores["instance_mIoU-large"],
            "painted": scores["painted_mIoU"]}


def mean_of_seeds(rows):
    out = {k: sum(r[k] for r in rows) / len(rows) for k in rows[0]}
    out["per_seed"] = [r["per_box"] for r in rows]
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--coco-root", required=True, help="the coco_tiny folder (annotations/, train2017/, val2017/)")
    parser.add_argument("--output", default="output/coco_tiny_chips")
    parser.add_argument("--config-file", default=os.path.join(REPO, "configs", "cpu", "box2seg_lite0_coco_chips.yaml"))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--iters", type=int, default=None, help="SOLVER.MAX_ITER (default: the config's)")
    parser.add_argument("--jobs", type=int, default=1, help="training processes side by side")
    parser.add_argument("--skip-inductive", action="store_true")
    parser.add_argument("--skip-transductive", action="store_true",
                        help="only the inductive runs (e.g. in a second process beside a transductive one)")
    parser.add_argument("--variant", nargs="+", action="append", default=[], metavar="NAME KEY VALUE",
                        help="an ablation run: its name, then config overrides (repeatable)")
    parser.add_argument("--json-out", default=os.path.join(REPO, "bench", "results", "coco_tiny.json"))
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides KEY VALUE ... for every run")
    args = parser.parse_args()
    args.opts = overrides_after_separator(args.opts)  # "--variant NAME K V -- K V": every run's after a "--"
    setup_logger(name="box2seg")
    setup_logger(name="detectron2", abbrev_name="d2")

    first = run_cfg(args, "all", args.seeds[0], "probe")
    start = time.time()
    needed = ["coco_tiny_all"] * (not args.skip_transductive) + ["coco_tiny_train"] * (not args.skip_inductive)
    prepare_caches(first, needed + ["coco_tiny_val"], grabcut=True)  # only the splits these runs read
    grabcut_minutes = (time.time() - start) / 60

    transductive = {}
    if not args.skip_transductive:
        transductive = {f"seed{s}": run_cfg(args, "all", s, f"transductive_seed{s}") for s in args.seeds}
        for v in args.variant:
            transductive[v[0]] = run_cfg(args, "all", args.seeds[0], f"variant_{v[0]}", v[1:])
        results, seconds = engine.train_and_score(transductive, jobs=args.jobs)
    inductive = {}
    if not args.skip_inductive:
        inductive = {f"seed{s}": run_cfg(args, "train", s, f"inductive_seed{s}") for s in args.seeds}
        results_ind, seconds_ind = engine.train_and_score(inductive, jobs=args.jobs, baselines=bool(not transductive))
    if not transductive:  # inductive only: the baselines come with its results
        results, seconds, transductive = results_ind, seconds_ind, inductive
    any_run = results[next(iter(transductive))]
    methods = {key: summary(any_run[row]) for key, row in BASELINE_KEYS.items()}
    if not args.skip_transductive:
        methods["box2seg"] = mean_of_seeds([summary(results[f"seed{s}"][MODEL_ROW]) for s in args.seeds])
    if inductive:
        methods["box2seg_inductive"] = mean_of_seeds([summary(results_ind[f"seed{s}"][MODEL_ROW]) for s in args.seeds])
    variants = {v[0]: dict(summary(results[v[0]][MODEL_ROW]), overrides=v[1:]) for v in args.variant}
    train_minutes = [seconds[f"seed{s}"] / 60 for s in args.seeds]
    out = {
        "split": "val2017",
        "seeds": args.seeds,
        # One run: GrabCut labels of the training images from an empty cache (the training split and val2017
        # were timed together here, an upper bound) plus the mean training time of a seed.
        "minutes": grabcut_minutes + sum(train_minutes) / len(train_minutes),
        "grabcut_minutes": grabcut_minutes,
        "train_minutes": train_minutes,
        "config": os.path.relpath(args.config_file, REPO),
        "overrides": list(args.opts),
        "methods": methods,
        "variants": variants,
    }
    os.makedirs(os.path.dirname(args.json_out), exist_ok=True)
    with open(args.json_out + ".tmp", "w") as f:
        json.dump(out, f, indent=1)
    os.replace(args.json_out + ".tmp", args.json_out)

    print(f"\nGrabCut {grabcut_minutes:.1f} min; training {', '.join(f'{m:.1f}' for m in train_minutes)} min per seed\n")
    print("| method | per box | small | medium | large | painted |\n|---|---|---|---|---|---|")
    for name, s in list(methods.items()) + list(variants.items()):
        seeds = f" (seeds {', '.join(f'{x:.3f}' for x in s['per_seed'])})" if "per_seed" in s else ""
        print(f"| {name} | {s['per_box']:.3f}{seeds} | {s['small']:.3f} | {s['medium']:.3f} | {s['large']:.3f} | "
              f"{s['painted']:.3f} |")
    print(f"\nwrote {args.json_out}")


if __name__ == "__main__":
    main()
