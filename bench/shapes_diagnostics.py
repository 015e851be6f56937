#!/usr/bin/env python
"""Diagnostics behind the demo's numbers on box2seg_shapes (bench/RESULTS.md, session 3).

    # GrabCut's per-instance IoU by class, with histograms for rings and crescents
    python bench/shapes_diagnostics.py grabcut-classes --splits train val
    # train the demo on the TRUE masks instead of GrabCut's (what the architecture and budget allow with
    # perfect labels); everything after --  goes to projects/Box2Seg/demo.py
    python bench/shapes_diagnostics.py true-masks -- --jobs 1 --seeds 0 --output /tmp/oracle --opts ...
    # score a checkpoint with the class and the foreground box rules, and by class
    python bench/shapes_diagnostics.py rescore CONFIG WEIGHTS [KEY VALUE ...]

``true-masks`` is a diagnostic, not a training mode: it swaps the mapper's GrabCut map for the dataset's
semantic ground truth in this process only (hence ``--jobs 1``).
"""
import box2seg  # noqa: F401  (first: detectron2 v0.6 fixes)

import argparse
import os
import runpy
import sys

import numpy as np
from detectron2.data import DatasetCatalog, MetadataCatalog

from box2seg import engine
from box2seg.commands import overrides_after_separator
from box2seg.data import mapper
from box2seg.data.datasets.shapes import SHAPES_CLASSES
from box2seg.data.grabcut import GrabCutSettings, attach_grabcut_files, load_instance_map
from box2seg.data.semseg_gt import read_label_map
from box2seg.evaluation.instance_iou import mask_ious
from box2seg.structures import decode_segmentation

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEMO = os.path.join(REPO, "projects", "Box2Seg", "demo.py")
BINS = [0, 0.3, 0.5, 0.6, 0.7, 0.8, 0.9, 1.01]


def grabcut_classes(splits):
    for split in splits:
        name = f"box2seg_shapes_{split}"
        records = DatasetCatalog.get(name)
        attach_grabcut_files(name, records, GrabCutSettings())
        ious = {c: [] for c in range(len(SHAPES_CLASSES))}
        for record in records:
            anns = record["annotations"]
            painted = load_instance_map(record)[None] == (np.arange(len(anns)) + 1)[:, None, None]
            gt = np.stack([decode_segmentation(a["segmentation"], record["height"], record["width"]) for a in anns])
            for ann, iou in zip(anns, mask_ious(painted, gt)):
                ious[ann["category_id"]].append(iou)
        print(f"{split}: GrabCut per-instance IoU by class (painted masks)")
        for c, values in ious.items():
            print(f"  {SHAPES_CLASSES[c]:9s} {100 * np.mean(values):5.1f}  n={len(values):3d}  "
                  f"histogram over {BINS[:-1]}: {np.histogram(values, bins=BINS)[0].tolist()}")


def true_masks(demo_args):
    grabcut_map = mapper.Box2SegDatasetMapper._grabcut_class_map

    def true_map(self, record, classes, shape):
        labels = grabcut_map(self, record, classes, shape)
        if not self.is_train:
            return labels
        return read_label_map(record["sem_seg_file_name"]).astype(labels.dtype)

    mapper.Box2SegDatasetMapper._grabcut_class_map = true_map
    if "--jobs" not in demo_args:
        demo_args = ["--jobs", "1"] + demo_args  # the swap lives in this process only
    # demo.py is a script, not a module: run its main (its argparse included) in this process.
    return runpy.run_path(DEMO)["main"](demo_args)


def rescore(config_file, weights, opts):
    cfg = engine.setup_cfg(config_file, list(opts) + ["MODEL.WEIGHTS", weights])
    results, _ = engine.train_and_score({"rescore": cfg}, train=False, baselines=False,
                                        extra_box_rules=("class", "foreground"))
    scores = results["rescore"]
    for method, s in scores.items():
        print(f"{method}: semantic mIoU {100 * s['semantic_mIoU']:.1f}, instance IoU {100 * s['instance_mIoU']:.1f}")
    names = MetadataCatalog.get(cfg.DATASETS.TEST[0]).thing_classes
    by_class = scores["Box2Seg box-conditioned"]["instance_mIoU-by-class"]
    print("box-conditioned per-instance IoU by class:", {names[c]: round(100 * v, 1) for c, v in by_class.items()})


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    g = sub.add_parser("grabcut-classes")
    g.add_argument("--splits", nargs="+", default=["train", "val"])
    t = sub.add_parser("true-masks")
    t.add_argument("demo_args", nargs=argparse.REMAINDER)
    r = sub.add_parser("rescore")
    r.add_argument("config_file")
    r.add_argument("weights")
    r.add_argument("opts", nargs=argparse.REMAINDER)
    args = parser.parse_args()
    if args.command == "grabcut-classes":
        grabcut_classes(args.splits)
    elif args.command == "true-masks":
        demo_args = overrides_after_separator(args.demo_args)
        return true_masks(demo_args)
    else:
        rescore(args.config_file, args.weights, args.opts)
    return 0


if __name__ == "__main__":
    sys.exit(main())
