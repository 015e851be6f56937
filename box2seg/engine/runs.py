"""The train-and-score loop the demo and the benchmarks share: train each run unless its
``model_final.pth`` exists, load it, and score it beside the box-only baselines on the test dataset.

A *run* is one config (its OUTPUT_DIR holds the run); ``train_and_score`` takes several, named, that share
their data (DATASETS, GRABCUT) and differ in the model or solver (seeds, loss ablations)."""
import logging
import os
import time

import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.data import DatasetCatalog
from detectron2.utils.env import seed_all_rng
from detectron2.utils.logger import setup_logger

from ..evaluation.compare import score_baselines, score_model
from ..utils.processes import run_side_by_side
from .data import build_test_loader, evaluation_records, prepare_caches
from .defaults import register_datasets
from .trainer import Trainer, TrainOnlyTrainer

__all__ = ["final_weights", "load_model", "train_and_score", "train_runs", "train_unless_finished"]

logger = logging.getLogger(__name__)


def final_weights(output_dir):
    """A finished run's checkpoint; its presence is what marks the run finished."""
    return os.path.join(output_dir, "model_final.pth")


def train_unless_finished(cfg):
    """Trains ``cfg`` in this process unless its ``model_final.pth`` exists (finished runs are reused);
    returns the checkpoint's path. A non-negative SEED seeds initialisation and data order, as train_net's
    default_setup does."""
    final = final_weights(cfg.OUTPUT_DIR)
    if os.path.exists(final):
        logger.info(f"reusing {final}")
        return final
    os.makedirs(cfg.OUTPUT_DIR, exist_ok=True)
    if cfg.SEED >= 0:
        seed_all_rng(cfg.SEED)
    trainer = TrainOnlyTrainer(cfg)
    trainer.resume_or_load(resume=True)
    trainer.train()
    return final


def _train_process(cfg, threads):
    """One run's training in its own process: on 2 cores, two seeds side by side with one thread each run
    1.28x more iterations per minute than one after the other with two threads (PyTorch's CPU kernels scale
    poorly from 1 to 2 threads at these tensor sizes; bench/train_speed.py, bench/RESULTS.md)."""
    torch.set_num_threads(threads)
    register_datasets(cfg)  # a spawned process starts with the built-in datasets only
    os.makedirs(cfg.OUTPUT_DIR, exist_ok=True)
    log_file = os.path.join(cfg.OUTPUT_DIR, "log.txt")
    abbrev = os.path.basename(os.path.normpath(cfg.OUTPUT_DIR))
    setup_logger(log_file, name="box2seg", abbrev_name=abbrev)
    setup_logger(log_file, name="detectron2", abbrev_name=abbrev)
    train_unless_finished(cfg)


def train_runs(cfgs, jobs=1):
    """Trains the runs of ``cfgs`` ({name: cfg}) whose checkpoints do not exist, ``jobs`` processes at a
    time (1 = one after the other in this process). Returns {name: seconds spent training} (0 if reused)."""
    pending = [name for name, cfg in cfgs.items() if not os.path.exists(final_weights(cfg.OUTPUT_DIR))]
    seconds = {name: 0.0 for name in cfgs}
    if jobs <= 1 or len(pending) <= 1:
        for name in pending:
            start = time.time()
            train_unless_finished(cfgs[name])
            seconds[name] = time.time() - start
        return seconds
    threads = max(1, torch.get_num_threads() // jobs)
    spent = run_side_by_side(_train_process, [(cfgs[name], threads) for name in pending], jobs,
                             describe=lambda args: f"training, see {os.path.join(args[0].OUTPUT_DIR, 'log.txt')}")
    seconds.update(zip(pending, spent))
    return seconds


def load_model(cfg, weights=None):
    """The model of ``cfg`` with ``weights`` (default: the run's model_final.pth), in eval mode."""
    model = Trainer.build_model(cfg)
    DetectionCheckpointer(model).load(weights or final_weights(cfg.OUTPUT_DIR))
    model.eval()
    return model


def _test_dataset(cfgs):
    """The one test dataset the runs share, and the data settings they must agree on."""
    first = next(iter(cfgs.values()))
    if len(first.DATASETS.TEST) != 1:
        raise ValueError(f"train_and_score scores one test dataset, got DATASETS.TEST={tuple(first.DATASETS.TEST)}")
    for name, cfg in cfgs.items():
        for key in ("DATASETS", "GRABCUT"):
            if cfg[key] != first[key]:
                raise ValueError(f"run {name!r}: cfg.{key} differs from the first run's; runs share their data")
    return first, first.DATASETS.TEST[0]


def train_and_score(cfgs, *, train=True, jobs=1, baselines=True, overlay_dirs=None, extra_box_rules=()):
    """Trains the runs of ``cfgs`` ({name: cfg}) unless finished (``jobs`` side by side, see
    :func:`train_runs`), then scores each on its DATASETS.TEST dataset. ``train=False`` scores the
    checkpoint MODEL.WEIGHTS of each config instead.

    Returns ``(results, train_seconds)``: ``results[name]`` = {method: scores} with the box-only baselines
    (scored once; ``baselines=False`` leaves them out and needs no GrabCut labels of the test set) and the
    model's rows (``evaluation.compare.score_model``, with ``extra_box_rules``; overlays written to
    ``overlay_dirs[name]`` where given): one column group of ``compare.format_table``.
    """
    first, dataset = _test_dataset(cfgs)
    seconds = {name: 0.0 for name in cfgs}
    if train:
        # Datasets and GrabCut labels are built once, here, before any training process reads them.
        names = list(dict.fromkeys(list(first.DATASETS.TRAIN) + [dataset]))
        prepare_caches(first, names, grabcut=True)
        records = evaluation_records(first, dataset)
        seconds = train_runs(cfgs, jobs)
    elif baselines:
        prepare_caches(first, [dataset], grabcut=True)
        records = evaluation_records(first, dataset)
    else:
        records = DatasetCatalog.get(dataset)
    rows = score_baselines(dataset, records) if baselines else {}
    results = {}
    for name, cfg in cfgs.items():
        model = load_model(cfg, None if train else cfg.MODEL.WEIGHTS)
        scores = score_model(model, build_test_loader(cfg, dataset), dataset, records,
                             (overlay_dirs or {}).get(name), extra_box_rules=extra_box_rules)
        results[name] = dict(rows, **scores)
    return results, seconds
