"""Data for training and testing: generated datasets, painted ground truth and GrabCut labels prepared by
rank 0 behind a barrier, and loaders whose records carry the GrabCut files the mapper reads."""
from detectron2.data import DatasetCatalog, build_detection_test_loader, build_detection_train_loader
from detectron2.utils import comm

from ..data.grabcut import GrabCutSettings, attach_grabcut_files
from ..data.grabcut_job import prepare_dataset
from ..data.mapper import Box2SegDatasetMapper

__all__ = [
    "build_test_loader",
    "build_train_loader",
    "evaluation_records",
    "prepare_caches",
    "train_dicts_with_grabcut",
]


def prepare_caches(cfg, dataset_names, grabcut=True):
    """Build generated datasets, painted ground truth and (optionally) GrabCut labels on rank 0 only;
    the other ranks wait at a barrier and then read the finished cache."""
    if comm.is_main_process():
        for name in dataset_names:
            dicts = DatasetCatalog.get(name)  # generates / paints on first use
            if grabcut and cfg.GRABCUT.PREPARE_IF_MISSING:
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


def evaluation_records(cfg, dataset_name):
    """``dataset_name``'s records with their GrabCut files attached (what the GrabCut baseline reads)."""
    records = DatasetCatalog.get(dataset_name)
    attach_grabcut_files(dataset_name, records, GrabCutSettings.from_config(cfg))
    return records


def build_train_loader(cfg):
    mapper = Box2SegDatasetMapper(cfg, is_train=True)
    return build_detection_train_loader(cfg, mapper=mapper, dataset=train_dicts_with_grabcut(cfg))


def build_test_loader(cfg, dataset_name):
    return build_detection_test_loader(cfg, dataset_name, mapper=Box2SegDatasetMapper(cfg, is_train=False))
