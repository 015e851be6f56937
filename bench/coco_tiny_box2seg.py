#!/usr/bin/env python
"""Box2Seg on real photos, boxes only: the labelling use case on coco_tiny.

Trains the CPU config on the boxes (iscrowd = 0 boxes and category only; the true masks are never used
for training) of all images of a COCO-format folder, then scores, on the same images, the per-instance
IoU of the box-conditioned masks against the true masks (overall and by COCO size) beside filled boxes,
filled ellipses and GrabCut, for a loss ablation:

    gc        L_GC only
    gc+box    L_GC + L_fg + L_bg + L_fr
    full      L_GC + L_fg + L_bg + L_fr + L_A

    python bench/coco_tiny_box2seg.py --coco-root ../shared/data/coco_tiny --output output/coco_tiny \
        --variants gc gc+box full --iters 600

The folder is read in place (evaluation-only licence: never copied). Prints one markdown table.
"""
import box2seg  # noqa: F401  (first: detectron2 v0.6 fixes)

import argparse
import json
import os

from detectron2.utils.logger import setup_logger

from box2seg import engine
from box2seg.evaluation.compare import format_table

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VARIANTS = {
    "gc": ["gc"],
    "gc+box": ["gc", "fg", "bg", "fr"],
    "full": ["gc", "fg", "bg", "fr", "aff"],
}
DATASET = "coco_tiny_all"


def variant_cfg(args, variant):
    cfg = engine.setup_cfg(args.config_file, args.opts, [f"{DATASET}={args.annotations}:{args.coco_root}"],
                           freeze=False)
    cfg.DATASETS.TRAIN = (DATASET,)
    cfg.DATASETS.TEST = (DATASET,)
    cfg.MODEL.BOX2SEG.LOSS.TERMS = VARIANTS[variant]
    if "aff" not in VARIANTS[variant]:
        cfg.MODEL.BOX2SEG.PRETRAIN_ITERS = 0
    if args.iters:
        cfg.SOLVER.MAX_ITER = args.iters
    cfg.OUTPUT_DIR = os.path.join(args.output, variant)
    cfg.freeze()
    engine.check_num_classes(cfg, [DATASET])
    return cfg


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--coco-root", required=True, help="folder with annotations/instances_all.json")
    parser.add_argument("--output", default="output/coco_tiny")
    parser.add_argument("--config-file", default=os.path.join(REPO, "configs", "cpu", "box2seg_lite0_coco.yaml"))
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--iters", type=int, default=None, help="SOLVER.MAX_ITER (default: the config's)")
    parser.add_argument("--extra-box-rules", nargs="*", default=["class", "foreground"],
                        help="also score these box-conditioned rules (MODEL.BOX2SEG.TEST.BOX_RULE values)")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides KEY VALUE ...")
    args = parser.parse_args()
    args.annotations = os.path.join(args.coco_root, "annotations", "instances_all.json")
    setup_logger(name="box2seg")
    setup_logger(name="detectron2", abbrev_name="d2")

    cfgs = {variant: variant_cfg(args, variant) for variant in args.variants}
    overlays = {variant: os.path.join(args.output, f"overlays_{variant}") for variant in args.variants}
    results, seconds = engine.train_and_score(cfgs, overlay_dirs=overlays, extra_box_rules=args.extra_box_rules)
    for variant in args.variants:
        print(f"{variant}: trained in {seconds[variant] / 60:.1f} min", flush=True)

    runs = {v: results[v] for v in args.variants}
    print("\nper-instance IoU (overall / small / medium / large), coco_tiny all 160 images, boxes only:\n")
    print(format_table(runs, columns=("instance_mIoU", "instance_mIoU-small", "instance_mIoU-medium",
                                      "instance_mIoU-large")))
    print("\nsemantic mIoU:\n")
    print(format_table(runs, columns=("semantic_mIoU",)))
    with open(os.path.join(args.output, "results.json"), "w") as f:
        json.dump({"results": runs, "seconds": seconds}, f, indent=1)


if __name__ == "__main__":
    main()
