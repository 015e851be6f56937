#!/usr/bin/env python
"""Does averaging a chip model's probabilities with each box's own GrabCut mask beat either alone?

For every box, ``fused = (1 - w) * p + w * g`` (p the model's pasted foreground probability, g the box's own
GrabCut mask before painting, 0 / 1), thresholded as CHIPS.THRESHOLD does (never-empty fallback as the model's).
w = 0 is the model's own masks, w = 1 GrabCut's (at a threshold under 1). The weight and threshold are to be
chosen on a split whose masks are not the target's (coco_tiny train2017), never per image. One forward pass per
image; every (weight, threshold) is applied to the same probabilities. Prints a table (per box and painted).

    python bench/grabcut_fusion.py --coco-root ../shared/data/coco_tiny --split train \
        --weights output/s13/coco/transductive_seed0/model_final.pth
    python bench/grabcut_fusion.py --dataset box2seg_scenes_val \
        --config-file configs/cpu/box2seg_lite0_scenes_chips.yaml --weights demo_output/box2seg/model_final.pth

Data, model and probabilities: bench/box_probs.py.
"""
import box2seg  # noqa: F401  (first: detectron2 v0.6 fixes)

import argparse

import torch

import box_probs
from box2seg.evaluation.mask_scoring import MaskScorer
from box2seg.modeling.box_conditioned import fuse_grabcut


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    box_probs.add_arguments(parser)
    parser.add_argument("--fusion-weights", type=float, nargs="+", default=[0.0, 0.1, 0.2, 0.3, 0.4, 0.5])
    parser.add_argument("--thresholds", type=float, nargs="+", default=[0.3, 0.4, 0.5])
    args, cfg, title, dicts, model = box_probs.setup(parser)
    num_classes = cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES - 1
    fill = cfg.MODEL.BOX2SEG.CHIPS.FALLBACK_FILL
    grid = [(w, t) for w in args.fusion_weights for t in args.thresholds]
    grid.append(("grabcut", None))
    scorers = {key: MaskScorer(num_classes, 255) for key in grid}
    for record, p, inside, keep, boxes, own in box_probs.box_probabilities(cfg, dicts, model):
        g = torch.from_numpy(own[keep.numpy()])
        for key in grid:
            if key[0] == "grabcut":
                scorers[key].add(record, own)
            else:
                w, t = key
                box_probs.add_thresholded(scorers[key], record, fuse_grabcut(p, g, w), inside, keep, t, fill)
    print(f"\n{title}\n")
    print(f"| GrabCut weight | threshold | {box_probs.SCORE_HEADER} |\n|---|---|---|---|---|---|---|")
    for key in grid:
        w, t = ("GrabCut own", "-") if key[0] == "grabcut" else key
        print(f"| {w} | {t} | {box_probs.score_cells(scorers[key].summary())} |")


if __name__ == "__main__":
    main()
