"""Evaluators chosen by what a dataset's ground truth allows."""
import logging

from detectron2.data import MetadataCatalog
from detectron2.evaluation import DatasetEvaluators, SemSegEvaluator

from ..evaluation import BoxMaskIoUEvaluator

__all__ = ["NothingToEvaluateError", "SemSegEvaluatorLoggedOnce", "build_evaluator", "check_evaluable"]

_SILENT = logging.getLogger(__name__ + ".silenced")
_SILENT.disabled = True


class NothingToEvaluateError(ValueError):
    """An evaluation asked of datasets that give nothing to evaluate (none, or ground truth without masks)."""


class SemSegEvaluatorLoggedOnce(SemSegEvaluator):
    """detectron2 v0.6's SemSegEvaluator logs its results (with its mIoU, which averages over the classes
    present in the ground truth *or* the prediction) before box2seg.compat replaces the mIoU in what it
    returns, so a run's log showed two mIoU values. This one logs the returned (fixed) results only."""

    def evaluate(self):
        logger, self._logger = self._logger, _SILENT
        try:
            results = super().evaluate()
        finally:
            self._logger = logger
        if results is not None:
            logger.info(results)
        return results


def _evaluator_types(dataset_name):
    meta = MetadataCatalog.get(dataset_name)
    return meta.get("evaluator_type", None) == "sem_seg", bool(meta.get("has_masks", False))


def check_evaluable(cfg):
    """Refuse an evaluation (``--eval-only``) that would evaluate nothing and still exit 0: DATASETS.TEST
    empty, or a test dataset with neither semantic ground truth nor true masks (boxes only), which
    detectron2's ``DefaultTrainer.test`` skips with a warning."""
    if not cfg.DATASETS.TEST:
        raise NothingToEvaluateError("DATASETS.TEST is empty: nothing to evaluate; name a dataset with masks, "
                                     "e.g. DATASETS.TEST \"('my_val',)\"")
    for name in cfg.DATASETS.TEST:
        semantic, masks = _evaluator_types(name)
        if not (semantic or masks):
            raise NothingToEvaluateError(
                f"DATASETS.TEST dataset {name!r} has no masks (boxes only): no semantic ground truth to "
                "evaluate against; evaluate on a dataset whose annotations carry segmentations")


def build_evaluator(cfg, dataset_name):
    """SemSegEvaluator where the dataset has semantic ground truth, plus the box-mask IoU where it has
    true instance masks. Dispatches on the metadata's evaluator_type like detectron2's train_net."""
    semantic, masks = _evaluator_types(dataset_name)
    evaluators = []
    if semantic:
        evaluators.append(SemSegEvaluatorLoggedOnce(dataset_name, distributed=True, output_dir=None))
    if masks:
        evaluators.append(BoxMaskIoUEvaluator(dataset_name, distributed=True))
    if not evaluators:
        meta = MetadataCatalog.get(dataset_name)
        raise NotImplementedError(
            f"dataset {dataset_name!r} has neither semantic ground truth nor true masks: nothing to evaluate "
            f"(evaluator_type={meta.get('evaluator_type', None)!r})"
        )
    return DatasetEvaluators(evaluators)
