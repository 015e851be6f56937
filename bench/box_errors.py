#!/usr/bin/env python
"""Where a chip model's per-box masks go wrong, by true-mask size (COCO buckets): each box's error pixels split
into three kinds, as a share of its true mask's area, beside GrabCut's own masks on the same boxes:

- ``missed``: pixels of the box's own object left out (false negatives);
- ``other object``: pixels claimed inside the box that belong to another object's true mask (an occluder, a
  neighbour);
- ``background``: pixels claimed inside the box that belong to no object.

The model's masks are the config's rule (GrabCut weight and threshold, never-empty fallback). The true masks
only score; nothing here chooses a setting. Used to ask why large boxes lag (bench/RESULTS.md, session 16):

    python bench/box_errors.py --dataset box2seg_scenes_dev \
        --config-file configs/cpu/box2seg_lite0_scenes_chips.yaml --weights output/s16/scn/base_seed0/model_final.pth

Data, model and probabilities: bench/box_probs.py.
"""
import box2seg  # noqa: F401  (first: detectron2 v0.6 fixes)

import argparse
from collections import defaultdict

import numpy as np
import torch

import box_probs
from box2seg.evaluation.box_scorer import SIZE_BUCKETS
from box2seg.modeling.box_conditioned import fuse_grabcut, never_empty_masks
from box2seg.structures import decode_segmentation

KINDS = ("IoU", "missed", "other object", "background")


def size_bucket(area):
    return next(name for name, low, high in SIZE_BUCKETS if low <= area < high)


def box_errors(masks, truth, objects, in_box):
    """Per box {kind: (N,) values}: IoU and the three error kinds as shares of the true mask's area. ``masks``,
    ``truth`` and ``in_box`` (N, H, W) bool (each box's mask, its own true mask and its box's pixels),
    ``objects`` (H, W) bool the union of all of the image's true masks."""
    area = truth.sum((1, 2)).clip(min=1)
    wrong = masks & in_box & ~truth
    return {"IoU": (masks & truth).sum((1, 2)) / (masks | truth).sum((1, 2)).clip(min=1),
            "missed": (truth & ~masks).sum((1, 2)) / area,
            "other object": (wrong & objects[None]).sum((1, 2)) / area,
            "background": (wrong & ~objects[None]).sum((1, 2)) / area}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    box_probs.add_arguments(parser)
    args, cfg, title, records, model = box_probs.setup(parser)
    chips = cfg.MODEL.BOX2SEG.CHIPS
    rows = {"model": defaultdict(list), "GrabCut": defaultdict(list)}
    for record, p, inside, keep, _, own in box_probs.box_probabilities(cfg, records, model):
        g = torch.from_numpy(own[keep.numpy()])
        kept, _, _ = never_empty_masks(fuse_grabcut(p, g, chips.GRABCUT_WEIGHT), inside, chips.THRESHOLD,
                                       chips.FALLBACK_FILL)
        annotations = record["annotations"]
        normal = np.flatnonzero(keep.numpy())  # the non-crowd boxes, the rows of p, inside and kept
        rows_kept = [k for k, i in enumerate(normal) if "segmentation" in annotations[i]]
        if not rows_kept:
            continue
        scored = normal[rows_kept]
        truth = np.stack([decode_segmentation(annotations[i]["segmentation"], record["height"], record["width"])
                          for i in scored])
        objects = truth.any(0)  # the scenes annotate every object; on photos unannotated things count as background
        in_box = inside.numpy()[rows_kept]  # the scored boxes' pixels (model.chip_box_probs)
        for name, masks in (("model", kept.numpy()[rows_kept]), ("GrabCut", own[scored])):
            stats = box_errors(masks, truth, objects, in_box)
            for k, area in enumerate(truth.sum((1, 2))):
                for kind in KINDS:
                    rows[name][(size_bucket(area), kind)].append(float(stats[kind][k]))
    print(f"\n{title}\n")
    print("| masks | size | boxes | " + " | ".join(KINDS) + " |\n|---|---|---|" + "---|" * len(KINDS))
    for bucket, _, _ in SIZE_BUCKETS:
        for name, values in rows.items():
            count = len(values[(bucket, "IoU")])
            cells = " | ".join(f"{np.mean(values[(bucket, kind)]):.3f}" for kind in KINDS)
            print(f"| {name} | {bucket} | {count} | {cells} |")


if __name__ == "__main__":
    main()
