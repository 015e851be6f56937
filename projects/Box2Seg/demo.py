#!/usr/bin/env python
"""`make demo`: the whole Box2Seg job on the embedded default data, on a CPU, in minutes.

1. builds box2seg_shapes (generated, cached), 2. prepares GrabCut labels, 3. trains the CPU Box2Seg
config once per seed, 4. evaluates on box2seg_shapes_val and prints one table -- semantic mIoU and
per-instance mask IoU for filled boxes, filled ellipses, GrabCut, Box2Seg's image-only prediction and
Box2Seg's box-conditioned masks -- and 5. writes overlays (image + boxes | prediction) to the output folder.

Finished training runs are reused (delete OUTPUT/seed*/model_final.pth to retrain). Exits non-zero when
Box2Seg's box-conditioned masks do not beat the best baseline by --margin points on every seed.
"""
import box2seg  # noqa: F401  (first: detectron2 v0.6 fixes)

import argparse
import json
import logging
import os
import sys
import time

import numpy as np
import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.utils.logger import setup_logger
from PIL import Image

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from train_net import Trainer  # noqa: E402

from box2seg import engine  # noqa: E402
from box2seg.data.grabcut import GrabCutSettings, attach_grabcut_files, load_instance_map  # noqa: E402
from box2seg.evaluation.mask_scoring import MaskScorer, filled_box_masks, filled_ellipse_masks  # noqa: E402
from box2seg.modeling.box_conditioned import boxes_inside  # noqa: E402
from box2seg.visualize import write_overlay  # noqa: E402

logger = logging.getLogger("box2seg.demo")
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DEFAULT_CONFIG = os.path.join(REPO, "configs", "cpu", "box2seg_lite0_shapes.yaml")
METHODS = ("filled boxes", "filled ellipses", "GrabCut", "Box2Seg image-only", "Box2Seg box-conditioned")


def build_cfg(config_file, opts, seed, output_dir):
    cfg = engine.get_box2seg_cfg()
    cfg.merge_from_file(config_file)
    cfg.merge_from_list(opts)
    cfg.SEED = seed
    cfg.OUTPUT_DIR = os.path.join(output_dir, f"seed{seed}")
    cfg.MODEL.DEVICE = "cpu" if not torch.cuda.is_available() else cfg.MODEL.DEVICE
    cfg.freeze()
    engine.register_config_datasets(cfg)
    engine.check_num_classes(cfg, list(cfg.DATASETS.TRAIN) + list(cfg.DATASETS.TEST))
    return cfg


def train(cfg):
    final = os.path.join(cfg.OUTPUT_DIR, "model_final.pth")
    if os.path.exists(final):
        logger.info(f"reusing {final}")
    else:
        os.makedirs(cfg.OUTPUT_DIR, exist_ok=True)
        trainer = Trainer(cfg)
        trainer.resume_or_load(resume=True)
        trainer.train()
    model = Trainer.build_model(cfg)
    DetectionCheckpointer(model).load(final)
    model.eval()
    return model


def read_gt(record):
    return np.asarray(Image.open(record["sem_seg_file_name"]), dtype=np.int64)


def score_baselines(cfg, dataset_name, records):
    meta = MetadataCatalog.get(dataset_name)
    scorers = {m: MaskScorer(len(meta.thing_classes), meta.ignore_label) for m in METHODS[:3]}
    for record in records:
        anns = record["annotations"]
        h, w = record["height"], record["width"]
        boxes = np.array([a["bbox"] for a in anns], dtype=np.float64).reshape(-1, 4)
        gt = read_gt(record)
        scorers["filled boxes"].add(record, filled_box_masks(boxes, h, w), gt)
        scorers["filled ellipses"].add(record, filled_ellipse_masks(boxes, h, w), gt)
        instance_map = load_instance_map(record)
        grabcut = instance_map[None] == (np.arange(len(anns)) + 1)[:, None, None]
        scorers["GrabCut"].add(record, grabcut, gt)
    return {m: s.summary() for m, s in scorers.items()}


@torch.no_grad()
def score_model(cfg, model, dataset_name, records, overlay_dir=None, num_overlays=8):
    meta = MetadataCatalog.get(dataset_name)
    by_file = {r["file_name"]: r for r in records}
    image_only = MaskScorer(len(meta.thing_classes), meta.ignore_label)
    conditioned = MaskScorer(len(meta.thing_classes), meta.ignore_label)
    written = 0
    for inputs in engine.build_test_loader(cfg, dataset_name):
        for inp, out in zip(inputs, model(inputs)):
            record = by_file[inp["file_name"]]
            gt = read_gt(record)
            labels = out["sem_seg"].argmax(0)
            boxes = torch.tensor([a["bbox"] for a in record["annotations"]], dtype=torch.float32).reshape(-1, 4)
            classes = torch.tensor([a["category_id"] for a in record["annotations"]], dtype=torch.long)
            inside = boxes_inside(boxes, *labels.shape)
            plain = (inside & (labels[None] == classes[:, None, None] + 1)).numpy()
            image_only.add(record, plain, gt, semantic_labels=labels.numpy())
            conditioned.add(record, out["box_masks"].numpy(), gt)
            if overlay_dir and written < num_overlays:
                write_overlay(os.path.join(overlay_dir, f"{written:02d}.png"), record, labels.numpy(),
                              out["box_masks"].numpy(), meta)
                written += 1
    return {"Box2Seg image-only": image_only.summary(), "Box2Seg box-conditioned": conditioned.summary()}


def format_table(results, seeds):
    header = f"| method | {' | '.join(f'semantic mIoU (seed {s}) | instance IoU (seed {s})' for s in seeds)} |"
    lines = [header, "|" + "---|" * (1 + 2 * len(seeds))]
    for method in METHODS:
        cells = []
        for s in seeds:
            r = results[s][method]
            cells += [f"{100 * r['semantic_mIoU']:.1f}", f"{100 * r['instance_mIoU']:.1f}"]
        lines.append(f"| {method} | {' | '.join(cells)} |")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config-file", default=DEFAULT_CONFIG)
    parser.add_argument("--output", default="demo_output")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--margin", type=float, default=2.0, help="points Box2Seg must win by (semantic mIoU)")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides KEY VALUE ...")
    args = parser.parse_args(argv)
    setup_logger(name="box2seg")
    setup_logger(name="detectron2", abbrev_name="d2")
    start = time.time()
    results = {}
    for seed in args.seeds:
        cfg = build_cfg(args.config_file, args.opts, seed, args.output)
        (val,) = cfg.DATASETS.TEST
        engine.prepare_caches(cfg, list(cfg.DATASETS.TRAIN) + [val], grabcut=True)
        records = DatasetCatalog.get(val)
        attach_grabcut_files(val, records, GrabCutSettings.from_config(cfg))
        model = train(cfg)
        results[seed] = score_baselines(cfg, val, records)
        results[seed].update(score_model(cfg, model, val, records, os.path.join(args.output, f"overlays_seed{seed}")))
    elapsed = time.time() - start
    table = format_table(results, args.seeds)
    print(f"\nbox2seg_shapes_val, {os.path.relpath(args.config_file, REPO)}, {elapsed / 60:.1f} min in all\n")
    print(table)
    verdicts = []
    for seed in args.seeds:
        best = max(results[seed][m]["semantic_mIoU"] for m in METHODS[:3])
        ours = results[seed]["Box2Seg box-conditioned"]["semantic_mIoU"]
        verdicts.append(100 * (ours - best) >= args.margin)
        print(f"seed {seed}: Box2Seg box-conditioned {100 * ours:.1f} vs best baseline {100 * best:.1f} "
              f"({100 * (ours - best):+.1f} points)")
    with open(os.path.join(args.output, "results.json"), "w") as f:
        json.dump({"results": results, "seconds": elapsed, "table": table}, f, indent=1)
    print(f"overlays: {os.path.join(args.output, 'overlays_seed*')}")
    if not all(verdicts):
        print(f"FAIL: Box2Seg did not beat the best baseline by {args.margin} points on every seed")
        return 1
    print(f"PASS: Box2Seg beats the best baseline by at least {args.margin} points on every seed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
