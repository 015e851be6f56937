#!/usr/bin/env python
"""Chip-scale test-time augmentation, measured on coco_tiny train2017 (session 12: no gain, not adopted).

Each box's chip is also cut with its side times 0.87 and 1.15 (the context changes, the chip size does not;
training jitters the scale by exp(U(-0.15, 0.15))); the pasted foreground probabilities of the chosen scales are
averaged, then the config's threshold and fallback fill apply. One forward pass per scale (flips as the config
says). Prints per box and painted for each scale set.

    python bench/chip_test_scales.py --coco-root ../shared/data/coco_tiny --split train \
        --weights output/coco_tiny_chips/none_seed0_masks0/model_final.pth
"""
import box2seg  # noqa: F401  (first: detectron2 v0.6 fixes)

import argparse

import torch

import box_probs
from box2seg.engine.data import build_test_loader
from box2seg.evaluation.mask_scoring import MaskScorer
from box2seg.modeling.box_conditioned import never_empty_masks
from box2seg.structures import PIXEL_CENTRES, box_pixel_masks, chip_regions
from box2seg.structures.chips import paste_chip_probs

SCALE_SETS = {"1": (1.0,), "0.87, 1, 1.15": (0.87, 1.0, 1.15), "1, 1.15": (1.0, 1.15), "0.87, 1": (0.87, 1.0)}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    box_probs.add_coco_split_arguments(parser)
    args = parser.parse_args()
    cfg, name, records, model = box_probs.coco_split_setup(args)
    num_classes = cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES - 1
    scorers = {k: MaskScorer(num_classes, 255) for k in SCALE_SETS}
    context, threshold, fill = model.chips["context"], model.chips["threshold"], model.chips["fallback_fill"]
    with torch.no_grad():
        for (x,) in build_test_loader(cfg, name):
            image = x["image"].float()
            h, w = image.shape[-2:]
            inst = x["instances"]
            boxes = inst.gt_boxes.tensor.float()
            keep = ~inst.gt_is_crowd if inst.has("gt_is_crowd") else torch.ones(len(boxes), dtype=torch.bool)
            height, width = x.get("height", h), x.get("width", w)
            scale = boxes.new_tensor([width / w, height / h]).repeat(2)
            inside = box_pixel_masks((boxes * scale)[keep], height, width, PIXEL_CENTRES)
            pasted = {}
            for s in (0.87, 1.0, 1.15):
                regions = chip_regions(boxes[keep], ((1 + 2 * context) * s - 1) / 2)
                fg = model._forward_chips(image, regions, boxes[keep])
                pasted[s] = paste_chip_probs(fg, regions * scale, height, width).float()
            for key, scales in SCALE_SETS.items():
                probs = (sum(pasted[s] for s in scales) / len(scales)).round().to(torch.uint8)
                kept, _, _ = never_empty_masks(probs, inside, threshold, fill)
                masks = torch.zeros((len(boxes), height, width), dtype=torch.bool)
                masks[keep] = kept
                scorers[key].add(records[x["file_name"]], masks.numpy())
    print(f"\n{name}, weights {args.weights}\n\n| chip scales | per box | painted | small | medium | large |\n"
          "|---|---|---|---|---|---|")
    for key, scorer in scorers.items():
        s = scorer.summary()
        print(f"| {key} | {s['instance_mIoU']:.4f} | {s['painted_mIoU']:.4f} | "
              + " | ".join(f"{s['instance_mIoU-' + b]:.4f}" for b in ("small", "medium", "large")) + " |")


if __name__ == "__main__":
    main()
