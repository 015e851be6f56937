"""Test-time adaptation: a short fine-tune of a trained model on the boxes of the images it is about to label.

Chip mode learns much of what it adds over GrabCut from each image's own boxes: on coco_tiny, a model trained
on val2017's boxes is far closer to GrabCut on train2017's unseen images than one whose training saw their
boxes (bench/RESULTS.md, sessions 13 and 14). Whoever labels new images has their boxes, and GrabCut labels
for them, but never their masks, so a few iterations of the ordinary training (same losses, GrabCut labels
as targets) on exactly those images are open to every labelling run. ``ADAPT.MAX_ITER`` sets how many
(0: off). The adapted weights live in a folder named by a hash of what they come from (weights file,
datasets, adaptation settings), so a retrained model or another dataset never reuses a stale adaptation.
"""
import json
import os

from detectron2.utils.file_io import PathManager

from ..data.cache import stable_hash
from .data import prepare_caches
from .defaults import check_num_classes
from .runs import final_weights, train_unless_finished

__all__ = ["AdaptationError", "adaptation_config", "adaptation_dir", "adapt_weights", "adapts"]

_RECORD = "adaptation.json"


class AdaptationError(ValueError):
    """A request that cannot adapt: no weights file, no iterations, a dataset of other classes."""

    user_error = True  # box2seg's command line prints the message without a traceback


def adapts(cfg):
    """Whether ``cfg`` asks for test-time adaptation."""
    return cfg.ADAPT.MAX_ITER > 0


def _source(cfg, dataset_names, weights):
    stat = os.stat(PathManager.get_local_path(weights))
    return {"weights": os.path.abspath(weights), "weights_size": stat.st_size, "weights_mtime_ns": stat.st_mtime_ns,
            "datasets": list(dataset_names), "adapt": json.loads(json.dumps(cfg.ADAPT)), "seed": cfg.SEED}


def _dir(root, source):
    return os.path.join(root, "adapt-" + stable_hash(source)[:12])


def adaptation_dir(root, cfg, dataset_names, weights):
    """``root/adapt-<hash>``: the folder of ``weights`` adapted to ``dataset_names`` under ``cfg.ADAPT``."""
    return _dir(root, _source(cfg, dataset_names, weights))


def adaptation_config(cfg, dataset_names, weights, output_dir):
    """A frozen copy of ``cfg`` that fine-tunes ``weights`` on ``dataset_names``' boxes and GrabCut labels for
    ADAPT.MAX_ITER iterations into ``output_dir``: the config's losses and solver on a schedule that long
    (warm-up an eighth of it), at ADAPT.BASE_LR where set."""
    if not adapts(cfg):
        raise AdaptationError(f"ADAPT.MAX_ITER is {cfg.ADAPT.MAX_ITER}: nothing to adapt "
                              "(set it, e.g. ADAPT.MAX_ITER 100)")
    acfg = cfg.clone()
    acfg.defrost()
    acfg.DATASETS.TRAIN = tuple(dataset_names)
    acfg.MODEL.WEIGHTS = weights
    acfg.SOLVER.MAX_ITER = cfg.ADAPT.MAX_ITER
    acfg.SOLVER.WARMUP_ITERS = max(1, cfg.ADAPT.MAX_ITER // 8)
    acfg.SOLVER.STEPS = tuple(s for s in cfg.SOLVER.STEPS if s < cfg.ADAPT.MAX_ITER)
    acfg.SOLVER.CHECKPOINT_PERIOD = cfg.ADAPT.MAX_ITER + 1  # only model_final
    if cfg.ADAPT.BASE_LR > 0:
        acfg.SOLVER.BASE_LR = cfg.ADAPT.BASE_LR
    acfg.MODEL.BOX2SEG.PRETRAIN_ITERS = 0
    acfg.TEST.EVAL_PERIOD = 0
    acfg.OUTPUT_DIR = output_dir
    acfg.freeze()
    return acfg


def adapt_weights(cfg, dataset_names, weights, root):
    """``weights`` fine-tuned on ``dataset_names`` (their GrabCut labels prepared first if missing), in
    :func:`adaptation_dir` under ``root``; a finished adaptation there is reused. Returns the adapted
    ``model_final.pth``, or ``weights`` itself when ``cfg`` does not adapt."""
    if not adapts(cfg):
        return weights
    if not weights or not os.path.isfile(PathManager.get_local_path(weights)):
        raise AdaptationError(f"MODEL.WEIGHTS {weights!r} is not a file: adaptation starts from a trained "
                              "model_final.pth")
    try:
        check_num_classes(cfg, list(dataset_names))
    except (KeyError, ValueError) as e:
        raise AdaptationError(str(e).strip('"')) from None
    source = _source(cfg, dataset_names, weights)  # the folder's name and its record, from one stat
    output_dir = _dir(root, source)
    acfg = adaptation_config(cfg, dataset_names, weights, output_dir)
    if not os.path.exists(final_weights(output_dir)):
        prepare_caches(acfg, list(dataset_names), grabcut=True)
        os.makedirs(output_dir, exist_ok=True)
        with open(os.path.join(output_dir, _RECORD), "w") as f:
            json.dump(source, f, indent=1)
    return train_unless_finished(acfg)
