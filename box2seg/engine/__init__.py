"""Box2Seg's engine: the one config set-up and dataset registration (``defaults``), data loaders that carry
GrabCut labels and cache preparation (``data``), evaluators (``evaluators``), the solver (``solver``), the
Trainer (``trainer``), the train-and-score loop shared by the demo and the benchmarks (``runs``) and test-time
adaptation (``adaptation``)."""
from .adaptation import AdaptationError, adaptation_config, adaptation_dir, adapt_weights, adapts
from .data import (GrabCutNotPreparedError, build_test_loader, build_train_loader, evaluation_records, prepare_caches,
                   train_dicts_with_grabcut)
from .defaults import check_num_classes, default_setup, register_datasets, setup_cfg
from .evaluators import NothingToEvaluateError, build_evaluator, check_evaluable
from .runs import final_weights, load_model, train_and_score, train_runs, train_unless_finished
from .solver import ConfigPolyLR, build_lr_scheduler, build_optimizer, optimizer_param_groups
from .trainer import Trainer, TrainOnlyTrainer
from .weights import PartialWeightsError, load_weights


__all__ = [
    "AdaptationError",
    "ConfigPolyLR",
    "GrabCutNotPreparedError",
    "NothingToEvaluateError",
    "PartialWeightsError",
    "TrainOnlyTrainer",
    "Trainer",
    "adapt_weights",
    "adaptation_config",
    "adaptation_dir",
    "adapts",
    "build_evaluator",
    "build_lr_scheduler",
    "build_optimizer",
    "build_test_loader",
    "build_train_loader",
    "check_evaluable",
    "check_num_classes",
    "default_setup",
    "evaluation_records",
    "final_weights",
    "load_weights",
    "load_model",
    "optimizer_param_groups",
    "prepare_caches",
    "register_datasets",
    "setup_cfg",
    "train_and_score",
    "train_dicts_with_grabcut",
    "train_runs",
    "train_unless_finished",
]
