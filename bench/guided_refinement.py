#!/usr/bin/env python
"""Does an image-guided filter on each box's probability recover the edges an unseen image's chip model blurs?

Transductive training gains over GrabCut mostly from each image's own boxes (the colour-pairwise term fits the
masks to that image's edges; bench/RESULTS.md, session 13). This asks whether the same colour cue applied at
inference does part of it: per box, the fused probability (1 - w) p + w g (CHIPS.GRABCUT_WEIGHT) is smoothed by
He et al.'s guided filter with the image as guide (radius r, regulariser eps; grey guide), inside the box and a
margin, then thresholded (never-empty fallback as the model's). Settings are chosen on a split whose masks are
not the target's (coco_tiny train2017 with a model trained on val2017: bench/coco_tiny_selection.py's
base_seed0), never per image.

    python bench/guided_refinement.py --coco-root ../shared/data/coco_tiny --split train \
        --weights output/s14/sel/base_seed0/model_final.pth
"""
import box2seg  # noqa: F401  (first: detectron2 v0.6 fixes)

import argparse

import cv2
import numpy as np
import torch

import box_probs
from box2seg.data.images import read_image
from box2seg.evaluation.mask_scoring import MaskScorer
from box2seg.modeling.box_conditioned import fuse_grabcut


def guided_filter(guide, p, radius, eps):
    """He et al.'s guided filter, grey guide: the locally linear fit a * I + b of p, averaged over windows."""
    size = (2 * radius + 1, 2 * radius + 1)

    def mean(x):
        return cv2.boxFilter(x, cv2.CV_32F, size, borderType=cv2.BORDER_REFLECT)

    mi, mp = mean(guide), mean(p)
    a = (mean(guide * p) - mi * mp) / (mean(guide * guide) - mi * mi + eps)
    b = mp - a * mi
    return mean(a) * guide + mean(b)


def refine(prob, grey, boxes, radius, eps):
    """Each box's probability map filtered inside its box plus a margin of 2 radius (outside it unchanged)."""
    out = prob.copy()
    height, width = grey.shape
    for k, (x0, y0, x1, y1) in enumerate(boxes):
        m = 2 * radius
        xa, ya = max(int(x0) - m, 0), max(int(y0) - m, 0)
        xb, yb = min(int(np.ceil(x1)) + m, width), min(int(np.ceil(y1)) + m, height)
        if xb - xa < 2 or yb - ya < 2:
            continue
        out[k, ya:yb, xa:xb] = np.clip(guided_filter(grey[ya:yb, xa:xb], prob[k, ya:yb, xa:xb], radius, eps), 0, 1)
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    box_probs.add_arguments(parser)
    parser.add_argument("--radii", type=int, nargs="+", default=[2, 4, 8])
    parser.add_argument("--eps", type=float, nargs="+", default=[1e-3, 1e-2, 1e-1])
    parser.add_argument("--thresholds", type=float, nargs="+", default=[0.4, 0.5])
    args, cfg, title, dicts, model = box_probs.setup(parser)
    num_classes = cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES - 1
    fill = cfg.MODEL.BOX2SEG.CHIPS.FALLBACK_FILL
    w = cfg.MODEL.BOX2SEG.CHIPS.GRABCUT_WEIGHT
    grid = [(None, None, t) for t in args.thresholds] + [(r, e, t) for r in args.radii for e in args.eps
                                                          for t in args.thresholds]
    scorers = {key: MaskScorer(num_classes, 255) for key in grid}
    for record, p, inside, keep, boxes, own in box_probs.box_probabilities(cfg, dicts, model):
        height, width = inside.shape[-2:]
        fused = fuse_grabcut(p, torch.from_numpy(own[keep.numpy()]), w).numpy().astype(np.float32)
        grey = read_image(record["file_name"], "L")[..., 0].astype(np.float32) / 255.0
        kept_boxes = boxes[keep].cpu().numpy()
        filtered = {}
        for key in grid:
            r, e, t = key
            if r is None:
                prob = fused
            else:
                if (r, e) not in filtered:
                    filtered[(r, e)] = refine(fused, grey, kept_boxes, r, e)
                prob = filtered[(r, e)]
            box_probs.add_thresholded(scorers[key], record, torch.from_numpy(prob), inside, keep, t, fill)
    print(f"\n{title}, GrabCut weight {w}\n")
    print(f"| radius | eps | threshold | {box_probs.SCORE_HEADER} |\n|---|---|---|---|---|---|---|---|")
    for key in grid:
        r, e, t = ("-" if v is None else v for v in key)
        print(f"| {r} | {e} | {t} | {box_probs.score_cells(scorers[key].summary())} |")


if __name__ == "__main__":
    main()
