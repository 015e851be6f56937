"""detectron2's DefaultTrainer with Box2Seg's data, solver and evaluators."""
from detectron2.engine import DefaultTrainer, hooks

from .data import build_test_loader, build_train_loader
from .evaluators import build_evaluator
from .solver import build_lr_scheduler, build_optimizer

__all__ = ["TrainOnlyTrainer", "Trainer"]


class Trainer(DefaultTrainer):
    """DefaultTrainer with Box2Seg's data (boxes + GrabCut labels) and evaluators."""

    @classmethod
    def build_train_loader(cls, cfg):
        return build_train_loader(cfg)

    @classmethod
    def build_test_loader(cls, cfg, dataset_name):
        return build_test_loader(cfg, dataset_name)

    @classmethod
    def build_optimizer(cls, cfg, model):
        return build_optimizer(cfg, model)

    @classmethod
    def build_lr_scheduler(cls, cfg, optimizer):
        return build_lr_scheduler(cfg, optimizer)

    @classmethod
    def build_evaluator(cls, cfg, dataset_name, output_folder=None):
        return build_evaluator(cfg, dataset_name)


class TrainOnlyTrainer(Trainer):
    """The Trainer without its end-of-training evaluation, for scripts that score the model themselves
    (the demo, the benchmarks) and would otherwise run inference over the test set twice."""

    def build_hooks(self):
        return [h for h in super().build_hooks() if not isinstance(h, hooks.EvalHook)]
