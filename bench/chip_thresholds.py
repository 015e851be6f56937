#!/usr/bin/env python
"""Chip mode's inference thresholds, chosen on one split's true masks (train2017 for coco_tiny, never the
split a target is scored on): per-box IoU (the one scorer, evaluation/box_scorer.py) of a trained chip model's
masks for each CHIPS.THRESHOLD and, for the boxes the threshold leaves empty, each CHIPS.FALLBACK_FILL.

    python bench/chip_thresholds.py --coco-root ../shared/data/coco_tiny --split train \
        --weights output/coco_tiny_chips/transductive_seed0/model_final.pth

One forward pass per image; the thresholds are applied to the same pasted probabilities. Prints a table.
"""
import box2seg  # noqa: F401  (first: detectron2 v0.6 fixes)

import argparse

import torch
from detectron2.utils.logger import setup_logger

import box_probs
from box2seg.commands import overrides_after_separator
from box2seg.engine.data import build_test_loader
from box2seg.evaluation.mask_scoring import MaskScorer
from box2seg.modeling.box_conditioned import never_empty_masks



def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    box_probs.add_coco_split_arguments(parser, splits=("all", "train", "val"))
    parser.add_argument("--thresholds", type=float, nargs="+", default=[0.3, 0.4, 0.5, 0.6])
    parser.add_argument("--fills", type=float, nargs="+", default=[0.3, 0.5, 0.7])
    parser.add_argument("opts", nargs=argparse.REMAINDER)
    args = parser.parse_args()
    setup_logger(name="box2seg")
    opts = overrides_after_separator(args.opts)  # "--fills 0.5 -- K V"
    cfg, name, records, model = box_probs.coco_split_setup(args, opts)
    num_classes = cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES - 1
    grid = [(t, f) for t in args.thresholds for f in args.fills]
    scorers = {key: MaskScorer(num_classes, 255) for key in grid}
    filled = {key: 0 for key in grid}
    boxes_seen = 0
    with torch.no_grad():
        for (x,) in build_test_loader(cfg, name):
            record = records[x["file_name"]]
            probs, inside, keep, boxes, _ = model.chip_box_probs(x)
            height, width = inside.shape[-2:]
            boxes_seen += int(keep.sum())
            for t, f in grid:
                kept, _, was_filled = never_empty_masks(probs, inside, t, f)
                masks = torch.zeros((len(boxes), height, width), dtype=torch.bool)
                masks[keep] = kept
                scorers[(t, f)].add(record, masks.numpy())
                filled[(t, f)] += int(was_filled.sum())
    print(f"\n{name}: {boxes_seen} boxes, weights {args.weights}\n")
    print("| threshold | fallback fill | per box | small | medium | large | boxes filled |\n|---|---|---|---|---|---|---|")
    for t, f in grid:
        s = scorers[(t, f)].summary()
        print(f"| {t} | {f} | {s['instance_mIoU']:.4f} | {s['instance_mIoU-small']:.4f} | "
              f"{s['instance_mIoU-medium']:.4f} | {s['instance_mIoU-large']:.4f} | {filled[(t, f)]} |")


if __name__ == "__main__":
    main()
