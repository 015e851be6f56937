"""Open Images datasets through the config: setup_cfg appends the --openimages-dataset specs to
DATASETS.OPENIMAGES_FORMAT and register_datasets registers them, so launch workers and spawned training
processes (which get the config, not the command line) register them as they do COCO-format ones."""
import importlib.util
import os
import uuid

import box2seg  # noqa: F401  (compat fixes before any detectron2 import)
import cv2
import numpy as np
import pytest
from detectron2.data import DatasetCatalog, MetadataCatalog

from box2seg.data.datasets.common import DatasetError, unregister
from box2seg.engine import register_datasets, setup_cfg

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TINY = os.path.join(REPO, "configs", "tests", "box2seg_tiny.yaml")
TRAIN_NET = os.path.join(REPO, "projects", "Box2Seg", "train_net.py")
HEADER = "ImageID,Source,LabelName,Confidence,XMin,XMax,YMin,YMax,IsOccluded,IsTruncated,IsGroupOf,IsDepiction,IsInside"


@pytest.fixture
def oi_spec(tmp_path):
    """(name, spec) of a two-image Open Images dataset with three classes (no class descriptions file:
    the classes are the CSV's LabelNames)."""
    images = tmp_path / "images"
    images.mkdir()
    for image_id in ("aaa", "bbb"):
        cv2.imwrite(str(images / f"{image_id}.jpg"), np.zeros((40, 60, 3), np.uint8))
    boxes = tmp_path / "boxes.csv"
    boxes.write_text("\n".join([
        HEADER,
        "aaa,xclick,/m/a,1,0.1,0.5,0.2,0.6,0,0,0,0,0",
        "aaa,xclick,/m/b,1,0.2,0.9,0.1,0.9,0,0,0,0,0",
        "bbb,xclick,/m/c,1,0.0,1.0,0.0,1.0,0,0,1,0,0",
    ]) + "\n")
    name = f"test_oi_cfg_{uuid.uuid4().hex[:8]}"
    yield name, f"{name}={boxes}:{images}"
    unregister(name)


def test_setup_cfg_registers_openimages_specs_and_the_config_carries_them(oi_spec):
    name, spec = oi_spec
    cfg = setup_cfg(TINY, ["DATASETS.TRAIN", f"('{name}',)"], openimages_datasets=[spec])
    assert cfg.is_frozen() and list(cfg.DATASETS.OPENIMAGES_FORMAT) == [spec]
    assert name in DatasetCatalog.list()
    assert list(MetadataCatalog.get(name).thing_classes) == ["/m/a", "/m/b", "/m/c"]
    assert len(DatasetCatalog.get(name)) == 2
    # The same spec again (a second setup_cfg in one process) is a no-op.
    register_datasets(cfg)
    # A fresh process (a launch worker, a spawned training run) has only the config: it registers it again.
    unregister(name)
    register_datasets(cfg)
    assert name in DatasetCatalog.list() and len(DatasetCatalog.get(name)) == 2


def test_config_specs_come_first_and_bad_specs_name_the_file(oi_spec, tmp_path):
    name, spec = oi_spec
    other = f"{name}_b={spec.partition('=')[2]}"
    try:
        cfg = setup_cfg(TINY, ["DATASETS.OPENIMAGES_FORMAT", f"['{spec}']"], openimages_datasets=[other],
                        freeze=False)
        assert list(cfg.DATASETS.OPENIMAGES_FORMAT) == [spec, other]
        assert {name, f"{name}_b"} <= set(DatasetCatalog.list())
    finally:
        unregister(f"{name}_b")
    with pytest.raises(DatasetError, match="nope.csv does not exist"):
        setup_cfg(TINY, openimages_datasets=[f"nope={tmp_path / 'nope.csv'}:{tmp_path}"])


def test_a_config_without_the_key_registers_its_coco_datasets_only():
    """A config saved before DATASETS.OPENIMAGES_FORMAT existed."""
    cfg = setup_cfg(freeze=False)
    del cfg.DATASETS["OPENIMAGES_FORMAT"]
    register_datasets(cfg)


def test_train_net_takes_openimages_dataset(oi_spec, monkeypatch):
    name, spec = oi_spec
    module_spec = importlib.util.spec_from_file_location("box2seg_train_net_oi", TRAIN_NET)
    train_net = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(train_net)
    args = train_net.argument_parser().parse_args(
        ["--config-file", TINY, "--openimages-dataset", spec, "DATASETS.TRAIN", f"('{name}',)"])
    assert args.openimages_dataset == [spec]
    monkeypatch.setattr(train_net, "default_setup", lambda cfg, args: None)  # no log files, no env dump
    cfg = train_net.setup(args)
    assert list(cfg.DATASETS.OPENIMAGES_FORMAT) == [spec] and name in DatasetCatalog.list()
    assert cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES == 4  # box2seg_tiny.yaml: 3 classes + background
