#!/usr/bin/env python
"""`make demo`: the whole Box2Seg job on the embedded default data, on a CPU, in minutes.

1. builds box2seg_shapes (generated, cached), 2. prepares GrabCut labels, 3. trains the CPU Box2Seg
config once per seed, 4. evaluates on box2seg_shapes_val and prints one table -- semantic mIoU and
per-instance mask IoU for filled boxes, filled ellipses, GrabCut, Box2Seg's image-only prediction and
Box2Seg's box-conditioned masks -- and 5. writes overlays (image + boxes | prediction) to the output folder.

Finished training runs are reused (delete OUTPUT/seed*/model_final.pth to retrain). Exits non-zero when
Box2Seg's box-conditioned masks do not beat the best baseline by --margin points on every seed.
The work is box2seg.engine.train_and_score; this script sets up one run per seed and reports.
"""
import box2seg  # noqa: F401  (first: detectron2 v0.6 fixes)

import argparse
import json
import os
import sys
import time

import torch
from detectron2.utils.logger import setup_logger

from box2seg import engine
from box2seg.evaluation.compare import BASELINES, format_table

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DEFAULT_CONFIG = os.path.join(REPO, "configs", "cpu", "box2seg_lite0_shapes.yaml")


def seed_cfg(config_file, opts, seed, output_dir):
    """The run of one seed, in OUTPUT/seed{seed}; on a machine without a GPU it runs on the CPU."""
    cfg = engine.setup_cfg(config_file, opts, freeze=False)
    cfg.SEED = seed
    cfg.OUTPUT_DIR = os.path.join(output_dir, f"seed{seed}")
    cfg.MODEL.DEVICE = "cpu" if not torch.cuda.is_available() else cfg.MODEL.DEVICE
    cfg.freeze()
    engine.check_num_classes(cfg, list(cfg.DATASETS.TRAIN) + list(cfg.DATASETS.TEST))
    return cfg


def argument_parser():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config-file", default=DEFAULT_CONFIG)
    parser.add_argument("--output", default="demo_output")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--margin", type=float, default=2.0, help="points Box2Seg must win by (semantic mIoU)")
    parser.add_argument("--jobs", type=int, default=0,
                        help="seeds trained side by side, one process each (default on a CPU: one per seed, at most "
                             "the number of threads torch uses; on a GPU: 1 = one after the other)")
    parser.add_argument("--opts", nargs=argparse.REMAINDER, default=[], help="config overrides KEY VALUE ... (last)")
    return parser


def main(argv=None):
    args = argument_parser().parse_args(argv)
    setup_logger(name="box2seg")
    setup_logger(name="detectron2", abbrev_name="d2")
    start = time.time()
    cfgs = {f"seed {seed}": seed_cfg(args.config_file, args.opts, seed, args.output) for seed in args.seeds}
    jobs = args.jobs or (1 if torch.cuda.is_available() else min(len(args.seeds), torch.get_num_threads()))
    overlays = {f"seed {seed}": os.path.join(args.output, f"overlays_seed{seed}") for seed in args.seeds}
    results, _ = engine.train_and_score(cfgs, jobs=jobs, overlay_dirs=overlays)
    elapsed = time.time() - start
    table = format_table(results)
    print(f"\nbox2seg_shapes_val, {os.path.relpath(args.config_file, REPO)}, {elapsed / 60:.1f} min in all\n")
    print(table)
    verdicts = []
    for seed in args.seeds:
        best = max(results[f"seed {seed}"][m]["semantic_mIoU"] for m in BASELINES)
        ours = results[f"seed {seed}"]["Box2Seg box-conditioned"]["semantic_mIoU"]
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
