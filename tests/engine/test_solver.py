"""box2seg.engine.solver: optimiser parameter groups (backbone learning-rate multiplier, norm / bias rules)."""
import box2seg  # noqa: F401  (compat fixes before any detectron2 import)
import pytest
import torch
from torch import nn

from box2seg.engine import ConfigPolyLR, build_lr_scheduler, build_optimizer, setup_cfg


class TinyModel(nn.Module):
    def __init__(self):
        super().__init__()
        self.backbone = nn.Sequential(nn.Conv2d(3, 4, 3), nn.GroupNorm(2, 4))
        self.head = nn.Conv2d(4, 2, 1)
        self.backbone[0].weight.requires_grad_(False)  # a frozen stage stays out of the optimiser


@pytest.mark.parametrize("optimizer", ["SGD", "AdamW"])
def test_backbone_multiplier_scales_only_backbone_parameters(optimizer):
    cfg = setup_cfg(freeze=False)
    cfg.SOLVER.OPTIMIZER = optimizer
    cfg.SOLVER.BASE_LR = 0.01
    cfg.SOLVER.WEIGHT_DECAY = 1e-4
    cfg.SOLVER.WEIGHT_DECAY_NORM = 0.0
    cfg.SOLVER.BACKBONE_MULTIPLIER = 0.1
    model = TinyModel()
    opt = build_optimizer(cfg, model)
    assert type(opt).__name__.startswith(optimizer)
    lr = {id(p): g["lr"] for g in opt.param_groups for p in g["params"]}
    wd = {id(p): g["weight_decay"] for g in opt.param_groups for p in g["params"]}
    assert id(model.backbone[0].weight) not in lr
    for p in [model.backbone[0].bias, model.backbone[1].weight, model.backbone[1].bias]:
        assert lr[id(p)] == pytest.approx(0.001)
    for p in model.head.parameters():
        assert lr[id(p)] == pytest.approx(0.01)
    assert wd[id(model.backbone[1].weight)] == 0.0 and wd[id(model.head.weight)] == pytest.approx(1e-4)
    # Each parameter exactly once.
    ids = [id(p) for g in opt.param_groups for p in g["params"]]
    assert len(ids) == len(set(ids)) == 5

    cfg.SOLVER.BACKBONE_MULTIPLIER = 1.0
    lr = {id(p): g["lr"] for g in build_optimizer(cfg, model).param_groups for p in g["params"]}
    assert set(lr.values()) == {0.01}


def test_unknown_optimizer_is_refused():
    cfg = setup_cfg(freeze=False)
    cfg.SOLVER.OPTIMIZER = "Adam"
    with pytest.raises(ValueError, match="SOLVER.OPTIMIZER"):
        build_optimizer(cfg, TinyModel())


def test_poly_schedule_checkpoint_holds_only_progress():
    """--resume with a larger SOLVER.MAX_ITER extends the run: the schedule's shape is not in the checkpoint."""
    cfg = setup_cfg(freeze=False)
    cfg.SOLVER.LR_SCHEDULER_NAME = "WarmupPolyLR"
    cfg.SOLVER.MAX_ITER = 10
    cfg.SOLVER.WARMUP_ITERS = 0
    optimizer = torch.optim.SGD(TinyModel().head.parameters(), lr=0.1)
    scheduler = build_lr_scheduler(cfg, optimizer)
    assert isinstance(scheduler, ConfigPolyLR)
    for _ in range(5):
        optimizer.step()
        scheduler.step()
    state = scheduler.state_dict()
    assert "max_iters" not in state and state["last_epoch"] == 5

    cfg.SOLVER.MAX_ITER = 20
    longer = build_lr_scheduler(cfg, torch.optim.SGD(TinyModel().head.parameters(), lr=0.1))
    longer.load_state_dict(state)
    assert longer.max_iters == 20 and longer.last_epoch == 5
