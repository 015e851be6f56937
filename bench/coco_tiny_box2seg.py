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
import sys
import time

from detectron2.checkpoint import DetectionCheckpointer
from detectron2.data import DatasetCatalog
from detectron2.utils.logger import setup_logger

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "projects", "Box2Seg"))
from train_net import Trainer, TrainOnlyTrainer  # noqa: E402

from box2seg import engine  # noqa: E402
from box2seg.data.datasets.coco import register_coco_boxes  # noqa: E402
from box2seg.data.grabcut import GrabCutSettings, attach_grabcut_files  # noqa: E402
from box2seg.evaluation.compare import format_table, score_baselines, score_model  # noqa: E402

VARIANTS = {
    "gc": ["gc"],
    "gc+box": ["gc", "fg", "bg", "fr"],
    "full": ["gc", "fg", "bg", "fr", "aff"],
}
DATASET = "coco_tiny_all"


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
    setup_logger(name="box2seg")
    setup_logger(name="detectron2", abbrev_name="d2")
    register_coco_boxes(DATASET, os.path.join(args.coco_root, "annotations", "instances_all.json"), args.coco_root)

    results, seconds = {}, {}
    for variant in args.variants:
        cfg = engine.get_box2seg_cfg()
        cfg.merge_from_file(args.config_file)
        cfg.merge_from_list(args.opts)
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
        engine.prepare_caches(cfg, [DATASET], grabcut=True)
        records = DatasetCatalog.get(DATASET)
        attach_grabcut_files(DATASET, records, GrabCutSettings.from_config(cfg))
        if not results:
            results["baselines"] = score_baselines(DATASET, records)
        start = time.time()
        final = os.path.join(cfg.OUTPUT_DIR, "model_final.pth")
        if not os.path.exists(final):
            trainer = TrainOnlyTrainer(cfg)
            trainer.resume_or_load(resume=True)
            trainer.train()
        seconds[variant] = time.time() - start
        model = Trainer.build_model(cfg)
        DetectionCheckpointer(model).load(final)
        scores = score_model(model, engine.build_test_loader(cfg, DATASET), DATASET, records,
                             os.path.join(args.output, f"overlays_{variant}"),
                             extra_box_rules=args.extra_box_rules)
        results[variant] = dict(results["baselines"], **{f"{k}": v for k, v in scores.items()})
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
