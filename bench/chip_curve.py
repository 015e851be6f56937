#!/usr/bin/env python
"""A chip-mode run's learning curve on real photos: every checkpoint of a run folder (model_*.pth, written every
SOLVER.CHECKPOINT_PERIOD iterations, and model_final.pth) scored per box with the unified scorer
(evaluation/box_scorer.py) on one coco_tiny split, beside the training loss logged around that iteration.

    python bench/chip_curve.py --coco-root ../shared/data/coco_tiny --run output/coco_tiny_chips/transductive_seed0 \
        [--split val] [--config-file CONFIG] [KEY VALUE ...]

The run's config.yaml is read where the run wrote one (train_net.py does), else ``--config-file`` (default: the
chip CPU config) with the run's overrides given after it (bench/coco_tiny_chips.py's runs write none); e.g.
MODEL.BOX2SEG.TEST.FLIP True on top scores the flipped pass too.
Prints one markdown table; the folder is read in place.
"""
import box2seg  # noqa: F401  (first: detectron2 v0.6 fixes)

import argparse
import glob
import json
import os
import re

import torch
from detectron2.data import DatasetCatalog
from detectron2.utils.logger import setup_logger

from box2seg import engine
from box2seg.engine.data import build_test_loader
from box2seg.engine.runs import load_model
from box2seg.evaluation.mask_scoring import MaskScorer

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SPLITS = {"all": ("instances_all.json", ""), "train": ("instances_train2017.json", "train2017"),
          "val": ("instances_val2017.json", "val2017")}


def checkpoints(run):
    """[(iteration, path)] in order; model_final.pth counts as the run's last iteration."""
    found = []
    for path in glob.glob(os.path.join(run, "model_*.pth")):
        m = re.fullmatch(r"model_(\d+)\.pth", os.path.basename(path))
        if m:
            found.append((int(m.group(1)) + 1, path))
    final = os.path.join(run, "model_final.pth")
    if os.path.exists(final):
        last = max([i for i, _ in found], default=0)
        found = [(i, p) for i, p in found if i != last] + [(last if found else -1, final)]
    return sorted(found)


def training_loss(run):
    """{iteration: total_loss} from the run's metrics.json (detectron2's JSONWriter)."""
    path = os.path.join(run, "metrics.json")
    out = {}
    if os.path.exists(path):
        with open(path) as f:
            for line in f:
                row = json.loads(line)
                if "total_loss" in row:
                    out[row["iteration"] + 1] = row["total_loss"]
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--coco-root", required=True)
    parser.add_argument("--run", required=True, help="a chip-mode run folder (config.yaml, model_*.pth)")
    parser.add_argument("--split", default="val", choices=list(SPLITS))
    parser.add_argument("--config-file", default=os.path.join(REPO, "configs", "cpu", "box2seg_lite0_coco_chips.yaml"),
                        help="the run's config when the run folder has no config.yaml")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides on top of the run's config")
    args = parser.parse_args()
    setup_logger(name="box2seg")
    json_file, folder = SPLITS[args.split]
    name = f"coco_tiny_{args.split}"
    spec = f"{name}={os.path.join(args.coco_root, 'annotations', json_file)}:{os.path.join(args.coco_root, folder)}"
    run_config = os.path.join(args.run, "config.yaml")
    config = run_config if os.path.exists(run_config) else args.config_file
    cfg = engine.setup_cfg(config, list(args.opts), [spec.rstrip("/")], freeze=False)
    cfg.DATASETS.TEST = (name,)
    cfg.freeze()
    records = {r["file_name"]: r for r in DatasetCatalog.get(name)}
    losses = training_loss(args.run)
    num_classes = cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES - 1
    rows = []
    for iteration, path in checkpoints(args.run):
        model = load_model(cfg, path)
        scorer = MaskScorer(num_classes, 255)
        with torch.no_grad():
            for (x,) in build_test_loader(cfg, name):
                scorer.add(records[x["file_name"]], model([x])[0]["box_masks"].cpu().numpy())
        near = [losses[i] for i in losses if abs(i - iteration) <= 10]
        rows.append((iteration, os.path.basename(path), scorer.summary(), sum(near) / len(near) if near else float("nan")))
        print(f"{os.path.basename(path)}: per box {rows[-1][2]['instance_mIoU']:.4f}", flush=True)
    print(f"\n{args.run} on {name} ({' '.join(args.opts) or 'the run config'})\n")
    print("| iteration | checkpoint | per box | small | medium | large | training loss (+-10 it) |\n|---|---|---|---|---|---|---|")
    for iteration, ckpt, s, loss in rows:
        print(f"| {iteration} | {ckpt} | {s['instance_mIoU']:.4f} | {s['instance_mIoU-small']:.4f} | "
              f"{s['instance_mIoU-medium']:.4f} | {s['instance_mIoU-large']:.4f} | {loss:.3f} |")


if __name__ == "__main__":
    main()
