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
import multiprocessing
import os
import sys
import time

import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.data import DatasetCatalog
from detectron2.utils.env import seed_all_rng
from detectron2.utils.logger import setup_logger

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from train_net import Trainer, TrainOnlyTrainer  # noqa: E402

from box2seg import engine  # noqa: E402
from box2seg.data.grabcut import GrabCutSettings, attach_grabcut_files  # noqa: E402
from box2seg.evaluation.compare import BASELINES, format_table, score_baselines, score_model  # noqa: E402

logger = logging.getLogger("box2seg.demo")
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DEFAULT_CONFIG = os.path.join(REPO, "configs", "cpu", "box2seg_lite0_shapes.yaml")


def seed_dir(output_dir, seed):
    return os.path.join(output_dir, f"seed{seed}")


def final_weights(run_dir):
    """A finished run's checkpoint; its presence is what marks the run finished."""
    return os.path.join(run_dir, "model_final.pth")


def build_cfg(config_file, opts, seed, output_dir):
    cfg = engine.get_box2seg_cfg()
    cfg.merge_from_file(config_file)
    cfg.merge_from_list(opts)
    cfg.SEED = seed
    cfg.OUTPUT_DIR = seed_dir(output_dir, seed)
    cfg.MODEL.DEVICE = "cpu" if not torch.cuda.is_available() else cfg.MODEL.DEVICE
    cfg.freeze()
    engine.register_config_datasets(cfg)
    engine.check_num_classes(cfg, list(cfg.DATASETS.TRAIN) + list(cfg.DATASETS.TEST))
    return cfg


def train(cfg):
    """Trains ``cfg`` unless its ``model_final.pth`` exists (finished runs are reused)."""
    final = final_weights(cfg.OUTPUT_DIR)
    if os.path.exists(final):
        logger.info(f"reusing {final}")
        return
    os.makedirs(cfg.OUTPUT_DIR, exist_ok=True)
    seed_all_rng(cfg.SEED)  # what train_net's default_setup does: the seed decides initialisation and data order
    trainer = TrainOnlyTrainer(cfg)
    trainer.resume_or_load(resume=True)
    trainer.train()


def load_trained(cfg):
    model = Trainer.build_model(cfg)
    DetectionCheckpointer(model).load(final_weights(cfg.OUTPUT_DIR))
    model.eval()
    return model


def _train_seed_process(config_file, opts, seed, output_dir, threads):
    """One seed's training in its own process: on 2 cores, two seeds side by side with one thread each run
    1.28x more iterations per minute than one after the other with two threads (PyTorch's CPU kernels scale
    poorly from 1 to 2 threads at these tensor sizes; bench/train_speed.py, bench/RESULTS.md)."""
    torch.set_num_threads(threads)
    cfg = build_cfg(config_file, opts, seed, output_dir)
    os.makedirs(cfg.OUTPUT_DIR, exist_ok=True)
    log_file = os.path.join(cfg.OUTPUT_DIR, "log.txt")
    setup_logger(log_file, name="box2seg", abbrev_name=f"seed{seed}")
    setup_logger(log_file, name="detectron2", abbrev_name=f"seed{seed}")
    train(cfg)


def train_seeds(config_file, opts, seeds, output_dir, jobs):
    """Trains the seeds whose runs are not finished, ``jobs`` processes at a time (1 = in this process)."""
    pending = [s for s in seeds if not os.path.exists(final_weights(seed_dir(output_dir, s)))]
    if jobs <= 1 or len(pending) <= 1:
        for seed in pending:
            train(build_cfg(config_file, opts, seed, output_dir))
        return
    threads = max(1, torch.get_num_threads() // jobs)
    # Not a Pool: pool workers are daemonic and could not start DataLoader workers of their own.
    ctx = multiprocessing.get_context("spawn")
    for i in range(0, len(pending), jobs):
        procs = [ctx.Process(target=_train_seed_process, args=(config_file, opts, s, output_dir, threads))
                 for s in pending[i:i + jobs]]
        for proc in procs:
            proc.start()
        for proc in procs:
            proc.join()
        failed = [s for s, proc in zip(pending[i:i + jobs], procs) if proc.exitcode != 0]
        if failed:
            raise RuntimeError(f"training failed for seed(s) {failed}; see {output_dir}/seed*/log.txt")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config-file", default=DEFAULT_CONFIG)
    parser.add_argument("--output", default="demo_output")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--margin", type=float, default=2.0, help="points Box2Seg must win by (semantic mIoU)")
    parser.add_argument("--jobs", type=int, default=0,
                        help="seeds trained side by side, one process each (default on a CPU: one per seed, at most "
                             "the number of threads torch uses; on a GPU: 1 = one after the other)")
    parser.add_argument("--opts", nargs=argparse.REMAINDER, default=[], help="config overrides KEY VALUE ... (last)")
    args = parser.parse_args(argv)
    setup_logger(name="box2seg")
    setup_logger(name="detectron2", abbrev_name="d2")
    start = time.time()
    results = {}
    cfgs = {seed: build_cfg(args.config_file, args.opts, seed, args.output) for seed in args.seeds}
    first = cfgs[args.seeds[0]]
    (val,) = first.DATASETS.TEST
    # Datasets and GrabCut labels are built once, here, before any training process reads them.
    engine.prepare_caches(first, list(first.DATASETS.TRAIN) + [val], grabcut=True)
    records = DatasetCatalog.get(val)
    attach_grabcut_files(val, records, GrabCutSettings.from_config(first))
    jobs = args.jobs or (1 if torch.cuda.is_available() else min(len(args.seeds), torch.get_num_threads()))
    train_seeds(args.config_file, args.opts, args.seeds, args.output, jobs)
    baselines = score_baselines(val, records)
    for seed, cfg in cfgs.items():
        results[f"seed {seed}"] = dict(baselines)
        overlays = os.path.join(args.output, f"overlays_seed{seed}")
        results[f"seed {seed}"].update(
            score_model(load_trained(cfg), engine.build_test_loader(cfg, val), val, records, overlays))
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
