"""The solver, as detectron2's DeepLab project builds it (``build_solver.py``): SGD or AdamW over
detectron2's parameter groups with a backbone learning-rate factor, and the poly schedule."""
import torch
from detectron2.projects.deeplab.lr_scheduler import WarmupPolyLR
from detectron2.solver import build_lr_scheduler as build_d2_lr_scheduler
from detectron2.solver import get_default_optimizer_params
from detectron2.solver.build import maybe_add_gradient_clipping

__all__ = ["ConfigPolyLR", "build_lr_scheduler", "build_optimizer", "optimizer_param_groups"]


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
