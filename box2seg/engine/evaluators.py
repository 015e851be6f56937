"""Evaluators chosen by what a dataset's ground truth allows."""
from detectron2.data import MetadataCatalog
from detectron2.evaluation import DatasetEvaluators, SemSegEvaluator

from ..evaluation import BoxMaskIoUEvaluator

__all__ = ["build_evaluator"]


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
