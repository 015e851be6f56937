#!/usr/bin/env python
"""Choosing settings meant to help on unseen images, without val2017's masks: train chip mode on the boxes of
coco_tiny's val2017 (80 images) and score on train2017 (80 images the model never saw), one row per variant.

bench/coco_tiny_chips.py's inductive run is the other way round (train2017's boxes, val2017 scored); scoring
val2017 to choose a setting would choose it by the masks the targets are judged on. Here train2017's masks
choose, as they chose the threshold and flips (bench/chip_thresholds.py).

    python bench/coco_tiny_selection.py --coco-root ../shared/data/coco_tiny --seeds 0 \
        --variant jitter03 MODEL.BOX2SEG.CHIPS.COLOR_JITTER 0.3

``--adapt N ...`` then fine-tunes each seed's model on the boxes of the images it will label (train2017's boxes
and GrabCut labels, never their masks) for N iterations, and scores that: test-time adaptation, the labelling use
case's answer to "most of what the model adds over GrabCut is learnt from each image's own boxes".

Prints a markdown table (per box, small / medium / large, painted) of the baselines on train2017, the config
("base", each seed) and each variant (first seed); ``--json-out`` writes it too. The folder is read in place.
"""
import box2seg  # noqa: F401  (first: detectron2 v0.6 fixes)

import argparse
import json
import os

from detectron2.utils.logger import setup_logger

from box2seg import engine
from box2seg.commands import overrides_after_separator
from coco_tiny_chips import MODEL_ROW, summary as row  # the per-box / size / painted figures of one row

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SPLITS = {"train": ("instances_train2017.json", "train2017"), "val": ("instances_val2017.json", "val2017")}
ROWS = {"filled boxes": "filled boxes", "filled ellipses": "filled ellipses", "GrabCut": "GrabCut"}


def dataset_specs(root):
    return [f"coco_tiny_{s}={os.path.join(root, 'annotations', j)}:{os.path.join(root, f)}" for s, (j, f) in SPLITS.items()]


def run_cfg(args, seed, name, overrides=(), train="coco_tiny_val"):
    cfg = engine.setup_cfg(args.config_file, list(args.opts) + list(overrides), dataset_specs(args.coco_root),
                           freeze=False)
    cfg.DATASETS.TRAIN = (train,)
    cfg.DATASETS.TEST = ("coco_tiny_train",)
    cfg.SEED = seed
    cfg.OUTPUT_DIR = os.path.join(args.output, name)
    cfg.freeze()
    return cfg


def adapt_cfg(args, seed, iters):
    """Seed ``seed``'s base model fine-tuned on train2017's boxes for ``iters`` iterations, as ``box2seg adapt``
    does it (engine.adaptation_config), with ``--adapt-opts``."""
    name = f"adapt{iters}_seed{seed}"
    cfg = run_cfg(args, seed, name, ["ADAPT.MAX_ITER", str(iters), *args.adapt_opts], "coco_tiny_train")
    weights = engine.final_weights(os.path.join(args.output, f"base_seed{seed}"))
    return name, engine.adaptation_config(cfg, ["coco_tiny_train"], weights, cfg.OUTPUT_DIR)


def run_overrides(args, name):
    if name.startswith("base_"):
        return []
    if name.startswith("adapt"):
        return args.adapt_opts
    return next(v[1:] for v in args.variant if v[0] == name)


def add_selection_arguments(parser, output, config_file):
    """The options every selection bench shares: where runs go, the config, seeds, side-by-side jobs and
    ``--variant NAME KEY VALUE ...`` runs, ``--json-out``."""
    parser.add_argument("--output", default=output)
    parser.add_argument("--config-file", default=config_file)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--jobs", type=int, default=1, help="training processes side by side")
    parser.add_argument("--variant", nargs="+", action="append", default=[], metavar="NAME KEY VALUE",
                        help="a run with these config overrides: its name, then KEY VALUE ... (repeatable)")
    parser.add_argument("--json-out", default=None)


def parse_selection_arguments(parser):
    """Parses a selection bench's arguments (config overrides for every run last, after an optional ``--``) and
    sets up its loggers."""
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides KEY VALUE ... for every run")
    args = parser.parse_args()
    args.opts = overrides_after_separator(args.opts)
    setup_logger(name="box2seg")
    setup_logger(name="detectron2", abbrev_name="d2")
    return args


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--coco-root", required=True, help="the coco_tiny folder (annotations/, train2017/, val2017/)")
    add_selection_arguments(parser, "output/coco_tiny_selection",
                            os.path.join(REPO, "configs", "cpu", "box2seg_lite0_coco_chips.yaml"))
    parser.add_argument("--adapt", type=int, nargs="+", default=[], metavar="N",
                        help="also fine-tune each seed's model on train2017's boxes for N iterations, then score it")
    parser.add_argument("--adapt-opts", nargs="+", default=[], metavar="KEY VALUE",
                        help="config overrides for the adaptation runs only (e.g. ADAPT.BASE_LR 0.001)")
    args = parse_selection_arguments(parser)

    runs = {f"base_seed{s}": run_cfg(args, s, f"base_seed{s}") for s in args.seeds}
    for v in args.variant:
        runs[v[0]] = run_cfg(args, args.seeds[0], f"variant_{v[0]}", v[1:])
    results, seconds = engine.train_and_score(runs, jobs=args.jobs)
    adapted = dict(adapt_cfg(args, s, n) for n in args.adapt for s in args.seeds)
    if adapted:
        more, more_seconds = engine.train_and_score(adapted, jobs=args.jobs, baselines=False)
        results.update(more)
        seconds.update(more_seconds)
        runs.update(adapted)
    any_run = results[next(iter(runs))]
    table = {name: row(any_run[key]) for name, key in ROWS.items()}
    table.update({name: dict(row(results[name][MODEL_ROW]), minutes=seconds[name] / 60,
                             overrides=run_overrides(args, name))
                  for name in runs})
    write_json(args.json_out, {"trained_on": "val2017 boxes", "scored_on": "train2017", "config": args.config_file,
                               "overrides": list(args.opts), "rows": table})
    print_table("trained on val2017's boxes, scored on train2017 (unseen)", table)


def write_json(path, results):
    """``results`` written to ``path`` (atomically) when a path is given."""
    if not path:
        return
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path + ".tmp", "w") as f:
        json.dump(results, f, indent=1)
    os.replace(path + ".tmp", path)


def print_table(title, table):
    """The selection table: one row per baseline and run (per box, sizes, painted, training minutes)."""
    print(f"\n{title}\n")
    print("| row | per box | small | medium | large | painted | training min |\n|---|---|---|---|---|---|---|")
    for name, s in table.items():
        minutes = f"{s['minutes']:.1f}" if "minutes" in s else ""
        print(f"| {name} | {s['per_box']:.4f} | {s['small']:.4f} | {s['medium']:.4f} | {s['large']:.4f} | "
              f"{s['painted']:.4f} | {minutes} |")


if __name__ == "__main__":
    main()
