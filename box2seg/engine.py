"""What train_net.py's Trainer, the demo and the export share: config set-up, data loaders that carry
GrabCut labels, evaluators chosen by dataset, and cache preparation by rank 0 behind a barrier."""
import logging

import torch

from detectron2.config import get_cfg
from detectron2.data import (
    DatasetCatalog,
    MetadataCatalog,
    build_detection_test_loader,
    build_detection_train_loader,
)
from detectron2.evaluation import DatasetEvaluators, SemSegEvaluator
from detectron2.projects.deeplab.lr_scheduler import WarmupPolyLR
from detectron2.solver import build_lr_scheduler as build_d2_lr_scheduler
from detectron2.solver import get_default_optimizer_params
from detectron2.solver.build import maybe_add_gradient_clipping
from detectron2.utils import comm

from .config import add_box2seg_config
from .data.grabcut import GrabCutSettings, attach_grabcut_files
from .data.mapper import Box2SegDatasetMapper
from .evaluation import BoxMaskIoUEvaluator

logger = logging.getLogger(__name__)


def get_box2seg_cfg():
    cfg = get_cfg()
    add_box2seg_config(cfg)
    return cfg


def register_config_datasets(cfg):
    """Register BOX2SEG.COCO_DATASETS (NAME=JSON:IMAGE_ROOT) in this process: launch workers re-run it."""
    from .data.datasets.coco import register_coco_spec

    for spec in cfg.BOX2SEG.COCO_DATASETS:
        register_coco_spec(spec)


def check_num_classes(cfg, dataset_names):
    """MODEL.SEM_SEG_HEAD.NUM_CLASSES counts the y-branch's outputs as detectron2 does: background plus
    the L foreground classes, i.e. len(stuff_classes). Say which dataset disagrees and what to set."""
    expected = cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES
    for name in dataset_names:
        if name not in DatasetCatalog.list():
            raise KeyError(f"dataset {name!r} is not registered; known: {sorted(DatasetCatalog.list())}")
        meta = MetadataCatalog.get(name)
        if not hasattr(meta, "thing_classes"):
            raise KeyError(f"dataset {name!r} has no thing_classes in its metadata")
        if len(meta.thing_classes) + 1 != expected:
            raise ValueError(
                f"MODEL.SEM_SEG_HEAD.NUM_CLASSES={expected} but dataset {name!r} has {len(meta.thing_classes)} "
                f"foreground classes plus background; set MODEL.SEM_SEG_HEAD.NUM_CLASSES "
                f"{len(meta.thing_classes) + 1}"
            )


def prepare_caches(cfg, dataset_names, grabcut=True):
    """Build generated datasets, painted ground truth and (optionally) GrabCut labels on rank 0 only;
    the other ranks wait at a barrier and then read the finished cache."""
    if comm.is_main_process():
        for name in dataset_names:
            dicts = DatasetCatalog.get(name)  # generates / paints on first use
            if grabcut and cfg.BOX2SEG.GRABCUT.PREPARE_IF_MISSING:
                from .data.grabcut_job import prepare_dataset

                prepare_dataset(name, dicts, GrabCutSettings.from_config(cfg), workers=cfg.DATALOADER.NUM_WORKERS)
    comm.synchronize()


def train_dicts_with_grabcut(cfg):
    settings = GrabCutSettings.from_config(cfg)
    dicts = []
    for name in cfg.DATASETS.TRAIN:
        records = DatasetCatalog.get(name)
        attach_grabcut_files(name, records, settings)
        dicts.extend(records)
    if not dicts:
        raise ValueError(f"DATASETS.TRAIN={tuple(cfg.DATASETS.TRAIN)} gives no images")
    return dicts


def build_train_loader(cfg):
    mapper = Box2SegDatasetMapper(cfg, is_train=True)
    return build_detection_train_loader(cfg, mapper=mapper, dataset=train_dicts_with_grabcut(cfg))


def build_test_loader(cfg, dataset_name):
    return build_detection_test_loader(cfg, dataset_name, mapper=Box2SegDatasetMapper(cfg, is_train=False))


def build_evaluator(cfg, dataset_name):
    """SemSegEvaluator where the dataset has semantic ground truth, plus the box-mask IoU where it has
    true instance masks. Dispatches on the metadata's evaluator_type like detectron2's train_net."""
    meta = MetadataCatalog.get(dataset_name)
    evaluators = []
    if meta.get("evaluator_type", None) == "sem_seg":
        evaluators.append(SemSegEvaluator(dataset_name, distributed=True, output_dir=None))
    if meta.get("has_masks", False):
        evaluators.append(BoxMaskIoUEvaluator(dataset_name, distributed=True))
    if not evaluators:
        raise NotImplementedError(
            f"dataset {dataset_name!r} has neither semantic ground truth nor true masks: nothing to evaluate "
            f"(evaluator_type={meta.get('evaluator_type', None)!r})"
        )
    return DatasetEvaluators(evaluators)


def optimizer_param_groups(cfg, model):
    """detectron2's default parameter groups (norm / bias weight-decay rules), with the backbone's
    learning rate scaled by SOLVER.BACKBONE_MULTIPLIER: the decoders start from scratch, the backbone from
    ImageNet weights that a full-size step would wash out in a short run."""
    groups = get_default_optimizer_params(
        model,
        base_lr=cfg.SOLVER.BASE_LR,
        weight_decay=cfg.SOLVER.WEIGHT_DECAY,
        weight_decay_norm=cfg.SOLVER.WEIGHT_DECAY_NORM,
        bias_lr_factor=cfg.SOLVER.BIAS_LR_FACTOR,
        weight_decay_bias=cfg.SOLVER.WEIGHT_DECAY_BIAS,
    )
    multiplier = cfg.SOLVER.BACKBONE_MULTIPLIER
    backbone = getattr(model, "backbone", None)
    if multiplier == 1.0 or backbone is None:
        return groups
    in_backbone = {id(p) for p in backbone.parameters()}
    split = []
    for group in groups:  # one parameter per group in detectron2 v0.6, merged groups in later versions
        ours = [p for p in group["params"] if id(p) in in_backbone]
        rest = [p for p in group["params"] if id(p) not in in_backbone]
        if ours:
            split.append(dict(group, params=ours, lr=group["lr"] * multiplier))
        if rest:
            split.append(dict(group, params=rest))
    return split


def build_optimizer(cfg, model):
    """SGD (momentum, Nesterov as configured) or AdamW over :func:`optimizer_param_groups`."""
    params = optimizer_param_groups(cfg, model)
    if cfg.SOLVER.OPTIMIZER == "SGD":
        sgd = maybe_add_gradient_clipping(cfg, torch.optim.SGD)
        return sgd(params, lr=cfg.SOLVER.BASE_LR, momentum=cfg.SOLVER.MOMENTUM, nesterov=cfg.SOLVER.NESTEROV,
                   weight_decay=cfg.SOLVER.WEIGHT_DECAY)
    if cfg.SOLVER.OPTIMIZER != "AdamW":
        raise ValueError(f"SOLVER.OPTIMIZER must be 'SGD' or 'AdamW', got {cfg.SOLVER.OPTIMIZER!r}")
    adamw = maybe_add_gradient_clipping(cfg, torch.optim.AdamW)
    return adamw(params, lr=cfg.SOLVER.BASE_LR, weight_decay=cfg.SOLVER.WEIGHT_DECAY)


class ConfigPolyLR(WarmupPolyLR):
    """DeepLab's WarmupPolyLR whose checkpoint holds only its progress: the schedule's shape (MAX_ITER,
    warmup, power) comes from the config, so ``--resume`` with a larger SOLVER.MAX_ITER extends the run
    instead of restoring the old length."""

    _FROM_CONFIG = ("max_iters", "warmup_factor", "warmup_iters", "warmup_method", "power", "constant_ending")

    def state_dict(self):
        return {k: v for k, v in super().state_dict().items() if k not in self._FROM_CONFIG}


def build_lr_scheduler(cfg, optimizer):
    """detectron2's schedulers plus the UPerNet recipe's poly decay ("WarmupPolyLR")."""
    if cfg.SOLVER.LR_SCHEDULER_NAME != "WarmupPolyLR":
        return build_d2_lr_scheduler(cfg, optimizer)
    return ConfigPolyLR(
        optimizer,
        cfg.SOLVER.MAX_ITER,
        warmup_factor=cfg.SOLVER.WARMUP_FACTOR,
        warmup_iters=cfg.SOLVER.WARMUP_ITERS,
        warmup_method=cfg.SOLVER.WARMUP_METHOD,
        power=cfg.SOLVER.POLY_LR_POWER,
        constant_ending=cfg.SOLVER.POLY_LR_CONSTANT_ENDING,
    )
