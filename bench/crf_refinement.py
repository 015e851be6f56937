#!/usr/bin/env python
"""Does a colour CRF on each box's fused probability pull the mask's edge onto the image's edges?

The chip model's masks are smooth blobs at the decoder's stride 4 (bench/RESULTS.md, session 13's overlays:
thin parts and holes filled). A guided filter (bench/guided_refinement.py) smooths and loses; a CRF instead
pushes each pixel towards the label of similar-coloured neighbours. Per box, the fused probability
(1 - w) p + w g (CHIPS.GRABCUT_WEIGHT) and the image are cut to the box's chip region (S x S, chip geometry),
a few mean-field steps of a binary CRF with a local appearance kernel (Krähenbühl and Koltun's bilateral kernel
on a k x k window, as ConvCRF does) run on all boxes at once, and the result is pasted back and thresholded
(never-empty fallback as the model's), the model's own ``MODEL.BOX2SEG.CHIPS.CRF`` (modeling/colour_crf.py) on a
grid of its settings, with the CRF's time per image. Settings are chosen on splits whose masks are not a target's
(coco_tiny train2017 with a model trained on val2017: bench/coco_tiny_selection.py's base_seed0; box2seg_scenes dev
with a model trained on the demo's training boxes: bench/scenes_selection.py's), never per image. Session 17 chose
the configs' CRF here (bench/RESULTS.md).

    python bench/crf_refinement.py --coco-root ../shared/data/coco_tiny --split train \
        --weights output/s15/sel/base_seed0/model_final.pth
"""
import box2seg  # noqa: F401  (first: detectron2 v0.6 fixes)

import argparse
import itertools
import time
from collections import defaultdict

import numpy as np
import torch

import box_probs
from box2seg.data.images import read_image
from box2seg.evaluation.mask_scoring import MaskScorer
from box2seg.modeling.box_conditioned import fuse_grabcut
from box2seg.modeling.colour_crf import colour_crf
from box2seg.structures.chips import chip_regions, crop_chips, crop_own_chips, paste_chip_probs


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    box_probs.add_arguments(parser)
    parser.add_argument("--weights-crf", type=float, nargs="+", default=[0.5, 1.0, 2.0])
    parser.add_argument("--theta-colour", type=float, nargs="+", default=[5.0, 10.0, 20.0])
    parser.add_argument("--theta-space", type=float, nargs="+", default=[3.0])
    parser.add_argument("--k", type=int, default=7, help="the window side")
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--size", type=int, default=128, help="the chip side the CRF runs at")
    parser.add_argument("--thresholds", type=float, nargs="+", default=[0.4, 0.5])
    args, cfg, title, dicts, model = box_probs.setup(parser)
    num_classes = cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES - 1
    fill = cfg.MODEL.BOX2SEG.CHIPS.FALLBACK_FILL
    w = cfg.MODEL.BOX2SEG.CHIPS.GRABCUT_WEIGHT
    context = cfg.MODEL.BOX2SEG.CHIPS.CONTEXT
    settings = [None] + list(itertools.product(args.weights_crf, args.theta_colour, args.theta_space))
    grid = [(s, t) for s in settings for t in args.thresholds]
    scorers = {key: MaskScorer(num_classes, 255) for key in grid}
    seconds, images = defaultdict(float), 0  # the CRF's own time per setting (cut, refine, paste back)
    for record, p, inside, keep, boxes, own in box_probs.box_probabilities(cfg, dicts, model):
        height, width = inside.shape[-2:]
        images += 1
        fused = fuse_grabcut(p, torch.from_numpy(own[keep.numpy()]), w)
        kept_boxes = boxes[keep].float()
        regions = chip_regions(kept_boxes, context)
        rgb = torch.from_numpy(np.ascontiguousarray(read_image(record["file_name"], "RGB").transpose(2, 0, 1)))
        chips = crop_chips(rgb, regions, args.size)
        refined = {}
        for key in grid:
            s, t = key
            if s is None:
                prob = fused
            else:
                if s not in refined:
                    wc, tc, ts = s
                    start = time.perf_counter()
                    q = colour_crf(crop_own_chips(fused, regions, args.size), chips, weight=wc, theta_colour=tc,
                                   theta_space=ts, window=args.k, steps=args.steps)
                    # each box's region holds its box: the mask reads the pasted map inside the box only
                    refined[s] = paste_chip_probs(q, regions, height, width).float() / 255.0
                    seconds[s] += time.perf_counter() - start
                prob = refined[s]
            box_probs.add_thresholded(scorers[key], record, prob, inside, keep, t, fill)
    print(f"\n{title}, GrabCut weight {w}, k {args.k}, steps {args.steps}, size {args.size}\n")
    print(f"| weight | theta colour | theta space | threshold | {box_probs.SCORE_HEADER} | CRF ms / image |\n"
          "|---|---|---|---|---|---|---|---|---|---|")
    for key in grid:
        s, t = key
        wc, tc, ts = s if s is not None else ("-", "-", "-")
        ms = f"{1000 * seconds[s] / max(images, 1):.0f}" if s is not None else "-"
        print(f"| {wc} | {tc} | {ts} | {t} | {box_probs.score_cells(scorers[key].summary())} | {ms} |")


if __name__ == "__main__":
    main()
