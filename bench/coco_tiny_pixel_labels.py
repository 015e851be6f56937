#!/usr/bin/env python
"""Pixel labels where they exist (issue 14) on real photos: coco_tiny in chip mode, scored on val2017.

Every row trains on the boxes of all 160 images (coco_tiny_all); the true masks of some train2017 images are
used too (MODEL.BOX2SEG.PIXEL_LABELS, DATASETS coco_tiny_train, FRACTION with --mask-seed), never a val2017
mask:

    none          boxes only (PIXEL_LABELS off)
    ce_10 / 25 / 100        10%, 25% or all of train2017's images train on their mask, plain cross-entropy
    box2seg_10 / 25 / 100   the same images train on their mask with every Box2Seg term (MODE box2seg)

each scored on val2017 by the unified scorer (evaluation/box_scorer.py: each box's own mask and the painted
map) beside the box-only baselines. With one --mask-seed the 10% images are among the 25% ones.

    python bench/coco_tiny_pixel_labels.py --coco-root ../shared/data/coco_tiny --rows ce_25 box2seg_25

Rows run one after the other (one training process); results are merged into ``--json-out`` (default
bench/results/coco_tiny_pixel_labels.json), so rows can be run in separate invocations, and one markdown
table of every row in that file is printed. Finished runs (their model_final.pth) are scored, not retrained.
"""
import box2seg  # noqa: F401  (first: detectron2 v0.6 fixes)

import argparse
import json
import os
import subprocess

from detectron2.utils.logger import setup_logger

from box2seg import engine
from box2seg.commands import overrides_after_separator
from box2seg.data.cache import atomic_write_json
from coco_tiny_chips import BASELINE_KEYS, MODEL_ROW, dataset_specs, summary

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FRACTIONS = {"10": 0.1, "25": 0.25, "100": 1.0}
ROWS = ["none"] + [f"{mode}_{share}" for mode in ("ce", "box2seg") for share in FRACTIONS]


def row_overrides(row, mask_seed):
    """Config overrides of one row."""
    if row == "none":
        return ["MODEL.BOX2SEG.PIXEL_LABELS.ENABLED", "False"]
    mode, share = row.split("_")
    return ["MODEL.BOX2SEG.PIXEL_LABELS.ENABLED", "True", "MODEL.BOX2SEG.PIXEL_LABELS.MODE", mode,
            "MODEL.BOX2SEG.PIXEL_LABELS.DATASETS", "['coco_tiny_train']",
            "MODEL.BOX2SEG.PIXEL_LABELS.FRACTION", str(FRACTIONS[share]),
            "MODEL.BOX2SEG.PIXEL_LABELS.SEED", str(mask_seed)]


def run_cfg(args, row):
    cfg = engine.setup_cfg(args.config_file, list(args.opts) + row_overrides(row, args.mask_seed),
                           dataset_specs(args.coco_root), freeze=False)
    cfg.DATASETS.TRAIN = ("coco_tiny_all",)
    cfg.DATASETS.TEST = ("coco_tiny_val",)
    cfg.SEED = args.seed
    if args.iters:
        cfg.SOLVER.MAX_ITER = args.iters
    cfg.OUTPUT_DIR = os.path.join(args.output, f"{row}_seed{args.seed}_masks{args.mask_seed}")
    cfg.freeze()
    return cfg


def _commit():
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True,
                              check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--coco-root", required=True, help="the coco_tiny folder (annotations/, train2017/, val2017/)")
    parser.add_argument("--rows", nargs="+", default=ROWS, choices=ROWS)
    parser.add_argument("--output", default="output/coco_tiny_pixel_labels")
    parser.add_argument("--config-file", default=os.path.join(REPO, "configs", "cpu", "box2seg_lite0_coco_chips.yaml"))
    parser.add_argument("--seed", type=int, default=0, help="training seed (initialisation, chip order)")
    parser.add_argument("--mask-seed", type=int, default=0, help="PIXEL_LABELS.SEED: which train2017 images")
    parser.add_argument("--iters", type=int, default=None, help="SOLVER.MAX_ITER (default: the config's)")
    parser.add_argument("--json-out", default=os.path.join(REPO, "bench", "results", "coco_tiny_pixel_labels.json"))
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides KEY VALUE ... for every row")
    args = parser.parse_args()
    args.opts = overrides_after_separator(args.opts)
    setup_logger(name="box2seg")
    setup_logger(name="detectron2", abbrev_name="d2")

    commit = _commit()  # the code the runs start from (HEAD may move while they train)
    out = {"split": "val2017", "config": os.path.relpath(args.config_file, REPO), "rows": {}}
    if os.path.isfile(args.json_out):
        with open(args.json_out) as f:
            out = json.load(f)
    for row in args.rows:
        cfg = run_cfg(args, row)
        results, seconds = engine.train_and_score({row: cfg})
        chosen = sum(r["supervision"] != "boxes" for r in engine.train_dicts_with_grabcut(cfg))
        out["baselines"] = {key: summary(results[row][name]) for key, name in BASELINE_KEYS.items()}
        out["rows"][f"{row}_seed{args.seed}_masks{args.mask_seed}"] = dict(
            summary(results[row][MODEL_ROW]), row=row, seed=args.seed, mask_seed=args.mask_seed,
            mask_images=chosen, train_minutes=seconds[row] / 60, overrides=list(args.opts), commit=commit)
        atomic_write_json(args.json_out, out)  # after every row: an interrupted invocation keeps what it finished

    print("\n| row | mask images | per box | small | medium | large | painted | train min |\n|---|---|---|---|---|---|---|---|")
    for name, s in out.get("baselines", {}).items():
        print(f"| {name} (baseline) | - | {s['per_box']:.3f} | {s['small']:.3f} | {s['medium']:.3f} | {s['large']:.3f} | "
              f"{s['painted']:.3f} | - |")
    for name, s in out["rows"].items():
        print(f"| {name} | {s['mask_images']} | {s['per_box']:.3f} | {s['small']:.3f} | {s['medium']:.3f} | "
              f"{s['large']:.3f} | {s['painted']:.3f} | {s['train_minutes']:.1f} |")
    print(f"\nwrote {args.json_out}")


if __name__ == "__main__":
    main()
