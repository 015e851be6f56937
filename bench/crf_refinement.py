#!/usr/bin/env python
"""Does a colour CRF on each box's fused probability pull the mask's edge onto the image's edges?

The chip model's masks are smooth blobs at the decoder's stride 4 (bench/RESULTS.md, session 13's overlays:
thin parts and holes filled). A guided filter (bench/guided_refinement.py) smooths and loses; a CRF instead
pushes each pixel towards the label of similar-coloured neighbours. Per box, the fused probability
(1 - w) p + w g (CHIPS.GRABCUT_WEIGHT) and the image are cut to the box's chip region (S x S, chip geometry),
a few mean-field steps of a binary CRF with a local appearance kernel (Krähenbühl and Koltun's bilateral kernel
on a k x k window, as ConvCRF does) run on all boxes at once, and the result is pasted back and thresholded
(never-empty fallback as the model's). Settings are chosen on a split whose masks are not the target's (coco_tiny
train2017 with a model trained on val2017: bench/coco_tiny_selection.py's base_seed0), never per image.

    python bench/crf_refinement.py --coco-root ../shared/data/coco_tiny --split train \
        --weights output/s15/sel/base_seed0/model_final.pth
"""
import box2seg  # noqa: F401  (first: detectron2 v0.6 fixes)

import argparse
import itertools

import numpy as np
import torch
import torch.nn.functional as F
from torchvision.ops import roi_align

import box_probs
from box2seg.data.images import read_image
from box2seg.evaluation.mask_scoring import MaskScorer
from box2seg.modeling.box_conditioned import fuse_grabcut
from box2seg.modeling.losses import lab_colours
from box2seg.structures.chips import chip_regions, crop_chips, paste_chip_probs


def window(x, k, dilation):
    """(N, C, k*k, H, W) each pixel's k x k neighbourhood (0 beyond the edge)."""
    n, c, h, w = x.shape
    pad = dilation * (k // 2)
    return F.unfold(x, kernel_size=k, dilation=dilation, padding=pad).view(n, c, k * k, h, w)


def mean_field(prob, rgb, *, weight, theta_colour, theta_space, k=7, dilation=1, steps=5):
    """Binary mean-field CRF: (N, S, S) foreground probabilities -> refined ones. Kernel between pixel i and a
    window neighbour j: weight * exp(-|dx|^2 / (2 theta_space^2) - |dLab|^2 / (2 theta_colour^2)) (dx in chip
    pixels, Lab of the chip's colours). Each step: logit_i = unary_i + sum_j k_ij (2 q_j - 1)."""
    p = prob.clamp(1e-4, 1 - 1e-4)
    unary = torch.log(p) - torch.log1p(-p)
    lab = lab_colours(rgb)
    ones = torch.ones_like(prob[:, None])
    valid = window(ones, k, dilation)[:, 0]  # neighbours inside the chip
    dlab = ((window(lab, k, dilation) - lab[:, :, None]) ** 2).sum(1)
    offsets = torch.arange(k, dtype=torch.float32) - k // 2
    dxy = ((offsets[:, None] ** 2 + offsets[None, :] ** 2) * dilation ** 2).reshape(1, k * k, 1, 1)
    kernel = weight * torch.exp(-dxy / (2 * theta_space ** 2) - dlab / (2 * theta_colour ** 2)) * valid
    kernel[:, (k * k) // 2] = 0  # no self-message
    q = p
    for _ in range(steps):
        message = (kernel * window(2 * q[:, None] - 1, k, dilation)[:, 0]).sum(1)
        q = torch.sigmoid(unary + message)
    return q


def own_chips(maps, regions, size):
    """(N, size, size): map i cut to region i (the chip geometry of ``crop_chips``), all in one roi_align."""
    rois = torch.cat([torch.arange(len(regions), dtype=torch.float32)[:, None], regions.float()], dim=1)
    return roi_align(maps[:, None].float(), rois, (size, size), spatial_scale=1.0, sampling_ratio=2, aligned=True)[:, 0]


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    box_probs.add_arguments(parser)
    parser.add_argument("--weights-crf", type=float, nargs="+", default=[0.5, 1.0, 2.0])
    parser.add_argument("--theta-colour", type=float, nargs="+", default=[5.0, 10.0, 20.0])
    parser.add_argument("--theta-space", type=float, nargs="+", default=[3.0])
    parser.add_argument("--k", type=int, default=7)
    parser.add_argument("--dilation", type=int, default=1)
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
    for record, p, inside, keep, boxes, own in box_probs.box_probabilities(cfg, dicts, model):
        height, width = inside.shape[-2:]
        fused = fuse_grabcut(p, torch.from_numpy(own[keep.numpy()]), w)
        kept_boxes = boxes[keep].float()
        regions = chip_regions(kept_boxes, context)
        rgb = torch.from_numpy(np.ascontiguousarray(read_image(record["file_name"], "RGB").transpose(2, 0, 1)))
        chips = crop_chips(rgb, regions, args.size)
        chip_p = own_chips(fused, regions, args.size)
        refined = {}
        for key in grid:
            s, t = key
            if s is None:
                prob = fused
            else:
                if s not in refined:
                    wc, tc, ts = s
                    q = mean_field(chip_p, chips, weight=wc, theta_colour=tc, theta_space=ts, k=args.k,
                                   dilation=args.dilation, steps=args.steps)
                    # each box's region holds its box: the mask reads the pasted map inside the box only
                    refined[s] = paste_chip_probs(q, regions, height, width).float() / 255.0
                prob = refined[s]
            box_probs.add_thresholded(scorers[key], record, prob, inside, keep, t, fill)
    print(f"\n{title}, GrabCut weight {w}, k {args.k}, dilation {args.dilation}, steps {args.steps}, size {args.size}\n")
    print(f"| weight | theta colour | theta space | threshold | {box_probs.SCORE_HEADER} |\n|---|---|---|---|---|---|---|---|---|")
    for key in grid:
        s, t = key
        wc, tc, ts = s if s is not None else ("-", "-", "-")
        print(f"| {wc} | {tc} | {ts} | {t} | {box_probs.score_cells(scorers[key].summary())} |")


if __name__ == "__main__":
    main()
