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
import sys

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "projects", "Box2Seg"))
BINS = [0, 0.3, 0.5, 0.6, 0.7, 0.8, 0.9, 1.01]


def grabcut_classes(splits):
    from detectron2.data import DatasetCatalog

    from box2seg.data.datasets.shapes import SHAPES_CLASSES
    from box2seg.data.grabcut import GrabCutSettings, attach_grabcut_files, load_instance_map
    from box2seg.evaluation.instance_iou import annotation_mask

    for split in splits:
        name = f"box2seg_shapes_{split}"
        records = DatasetCatalog.get(name)
        attach_grabcut_files(name, records, GrabCutSettings())
        ious = {c: [] for c in range(len(SHAPES_CLASSES))}
        for record in records:
            painted = load_instance_map(record)
            for k, ann in enumerate(record["annotations"]):
                gt = annotation_mask(ann["segmentation"], record["height"], record["width"])
                mask = painted == k + 1
                ious[ann["category_id"]].append((gt & mask).sum() / max((gt | mask).sum(), 1))
        print(f"{split}: GrabCut per-instance IoU by class (painted masks)")
        for c, values in ious.items():
            print(f"  {SHAPES_CLASSES[c]:9s} {100 * np.mean(values):5.1f}  n={len(values):3d}  "
                  f"histogram over {BINS[:-1]}: {np.histogram(values, bins=BINS)[0].tolist()}")


def true_masks(demo_args):
    import demo
    from box2seg.data import mapper

    grabcut_map = mapper.Box2SegDatasetMapper._grabcut_class_map

    def true_map(self, record, classes, shape):
        labels = grabcut_map(self, record, classes, shape)
        if not self.is_train:
            return labels
        true = mapper._read_label_png(record["sem_seg_file_name"], self.ignore_label, "semantic ground truth",
                                      record["file_name"])
        return true.astype(labels.dtype)

    mapper.Box2SegDatasetMapper._grabcut_class_map = true_map
    if "--jobs" not in demo_args:
        demo_args = ["--jobs", "1"] + demo_args  # the swap lives in this process only
    return demo.main(demo_args)


def rescore(config_file, weights, opts):
    from detectron2.checkpoint import DetectionCheckpointer
    from detectron2.data import DatasetCatalog
    from train_net import Trainer

    from box2seg import engine
    from box2seg.evaluation.compare import score_model

    cfg = engine.get_box2seg_cfg()
    cfg.merge_from_file(config_file)
    cfg.merge_from_list(opts)
    model = Trainer.build_model(cfg)
    DetectionCheckpointer(model).load(weights)
    (val,) = cfg.DATASETS.TEST
    records = DatasetCatalog.get(val)
    rules = tuple(r for r in ("class", "foreground") if r != cfg.MODEL.BOX2SEG.TEST.BOX_RULE)
    scores = score_model(model, engine.build_test_loader(cfg, val), val, records, extra_box_rules=rules)
    for method, s in scores.items():
        print(f"{method}: semantic mIoU {100 * s['semantic_mIoU']:.1f}, instance IoU {100 * s['instance_mIoU']:.1f}")
    print("box-conditioned per-instance IoU by class:", _instance_iou_by_class(model, cfg, val, records))


def _instance_iou_by_class(model, cfg, dataset_name, records):
    """Mean per-instance IoU of the model's own box-conditioned masks, by class name."""
    import torch
    from detectron2.data import MetadataCatalog

    from box2seg import engine
    from box2seg.evaluation.instance_iou import annotation_mask

    names = MetadataCatalog.get(dataset_name).thing_classes
    by_file = {r["file_name"]: r for r in records}
    ious = {name: [] for name in names}
    with torch.no_grad():
        for inputs in engine.build_test_loader(cfg, dataset_name):
            for inp, out in zip(inputs, model(inputs)):
                record = by_file[inp["file_name"]]
                masks = out["box_masks"].cpu().numpy()
                for k, ann in enumerate(record["annotations"]):
                    gt = annotation_mask(ann["segmentation"], record["height"], record["width"])
                    ious[names[ann["category_id"]]].append((gt & masks[k]).sum() / max((gt | masks[k]).sum(), 1))
    return {name: round(100 * float(np.mean(v)), 1) for name, v in ious.items() if v}


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
        demo_args = args.demo_args[1:] if args.demo_args[:1] == ["--"] else args.demo_args
        return true_masks(demo_args)
    else:
        rescore(args.config_file, args.weights, args.opts)
    return 0


if __name__ == "__main__":
    sys.exit(main())
