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

coco_tiny reads the GrabCut labels of ``coco_tiny_all`` (what bench/coco_tiny_chips.py's transductive run
computes) and scores the images of one split folder; labels missing from the cache are computed first.
"""
import box2seg  # noqa: F401  (first: detectron2 v0.6 fixes)

import argparse
import os

import numpy as np
import torch
from detectron2.data import build_detection_test_loader
from detectron2.utils.logger import setup_logger

from box2seg import engine
from box2seg.commands import overrides_after_separator
from box2seg.data.grabcut import load_instance_map, own_grabcut_masks, read_png_stats
from box2seg.data.mapper import Box2SegDatasetMapper
from box2seg.engine.data import evaluation_records, prepare_caches
from box2seg.engine.runs import load_model
from box2seg.evaluation.mask_scoring import MaskScorer
from box2seg.modeling.box_conditioned import never_empty_masks

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
COCO_SPLITS = {"train": "train2017", "val": "val2017"}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--coco-root", help="coco_tiny's folder (with --split)")
    parser.add_argument("--split", default="train", choices=list(COCO_SPLITS))
    parser.add_argument("--dataset", help="a registered dataset instead of coco_tiny (e.g. box2seg_scenes_val)")
    parser.add_argument("--weights", required=True)
    parser.add_argument("--config-file", default=os.path.join(REPO, "configs", "cpu", "box2seg_lite0_coco_chips.yaml"))
    parser.add_argument("--fusion-weights", type=float, nargs="+", default=[0.0, 0.1, 0.2, 0.3, 0.4, 0.5])
    parser.add_argument("--thresholds", type=float, nargs="+", default=[0.3, 0.4, 0.5])
    parser.add_argument("opts", nargs=argparse.REMAINDER)
    args = parser.parse_args()
    if bool(args.coco_root) == bool(args.dataset):
        parser.error("give --coco-root (with --split) or --dataset")
    setup_logger(name="box2seg")
    specs = []
    if args.coco_root:
        name = "coco_tiny_all"
        specs = [f"{name}={os.path.join(args.coco_root, 'annotations', 'instances_all.json')}:{args.coco_root}"]
    else:
        name = args.dataset
    cfg = engine.setup_cfg(args.config_file, overrides_after_separator(args.opts), specs, freeze=False)
    cfg.DATASETS.TRAIN = (name,)
    cfg.DATASETS.TEST = (name,)
    cfg.freeze()
    prepare_caches(cfg, [name])  # GrabCut labels computed where missing
    dicts = evaluation_records(cfg, name)
    if args.coco_root:
        folder = os.sep + COCO_SPLITS[args.split] + os.sep
        dicts = [r for r in dicts if folder in r["file_name"]]
    if not dicts:
        raise SystemExit(f"no images of {name} to score")
    model = load_model(cfg, args.weights)
    num_classes = cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES - 1
    fill = cfg.MODEL.BOX2SEG.CHIPS.FALLBACK_FILL
    grid = [(w, t) for w in args.fusion_weights for t in args.thresholds]
    grid.append(("grabcut", None))
    scorers = {key: MaskScorer(num_classes, 255) for key in grid}
    loader = build_detection_test_loader(dicts, mapper=Box2SegDatasetMapper(cfg, is_train=False),
                                         num_workers=cfg.DATALOADER.NUM_WORKERS)
    with torch.no_grad():
        for record, (x,) in zip(dicts, loader):
            probs, inside, keep, boxes, _ = model.chip_box_probs(x)
            height, width = inside.shape[-2:]
            if (height, width) != (record["height"], record["width"]) or len(boxes) != len(record["annotations"]):
                raise RuntimeError(f"{record['file_name']}: the model's output does not line up with the record")
            own = own_grabcut_masks(load_instance_map(record), read_png_stats(record["grabcut_file_name"]), len(boxes))
            g = torch.from_numpy(own[keep.numpy()]).float()
            p = probs.float() / 255.0
            for key in grid:
                if key[0] == "grabcut":
                    masks = own
                else:
                    w, t = key
                    kept, _, _ = never_empty_masks((1 - w) * p + w * g, inside, t, fill)
                    masks = np.zeros((len(boxes), height, width), dtype=bool)
                    masks[keep.numpy()] = kept.numpy()
                scorers[key].add(record, masks)
    print(f"\n{name}" + (f" ({args.split})" if args.coco_root else "") + f": {len(dicts)} images, weights "
          f"{args.weights}\n")
    print("| GrabCut weight | threshold | per box | small | medium | large | painted |\n|---|---|---|---|---|---|---|")
    for key in grid:
        s = scorers[key].summary()
        w, t = ("GrabCut own", "-") if key[0] == "grabcut" else key
        print(f"| {w} | {t} | {s['instance_mIoU']:.4f} | {s['instance_mIoU-small']:.4f} | "
              f"{s['instance_mIoU-medium']:.4f} | {s['instance_mIoU-large']:.4f} | {s['painted_mIoU']:.4f} |")


if __name__ == "__main__":
    main()
