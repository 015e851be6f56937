"""engine.data.prepare_caches: with more than one process, missing GrabCut labels are refused with the
command that prepares them instead of rank 0 preparing while the others time out at the barrier (issue 13
item 12)."""
import os
import uuid

import pytest
from detectron2.utils import comm

from box2seg.data.datasets.common import unregister
from box2seg.engine import prepare_caches, setup_cfg
from box2seg.engine.data import GrabCutNotPreparedError

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TINY_CFG = os.path.join(REPO, "configs", "tests", "box2seg_tiny.yaml")


@pytest.fixture
def tiny_dataset(tiny_coco, tmp_path, monkeypatch):
    monkeypatch.setenv("BOX2SEG_CACHE", str(tmp_path / "cache"))
    json_path, image_root = tiny_coco
    name = f"prep_{uuid.uuid4().hex[:8]}"
    cfg = setup_cfg(TINY_CFG, ["DATASETS.TRAIN", f"('{name}',)", "DATASETS.TEST", "()"],
                    coco_datasets=[f"{name}={json_path}:{image_root}"])
    yield cfg, name
    unregister(name)


def _two_processes(monkeypatch):
    monkeypatch.setattr(comm, "get_world_size", lambda: 2)
    monkeypatch.setattr(comm, "all_gather", lambda data, group=None: [data, data])


def test_several_processes_refuse_missing_grabcut_labels_naming_the_command(tiny_dataset, monkeypatch):
    cfg, name = tiny_dataset
    _two_processes(monkeypatch)
    with pytest.raises(GrabCutNotPreparedError, match=f"box2seg prepare-grabcut --dataset {name}") as err:
        prepare_caches(cfg, cfg.DATASETS.TRAIN, grabcut=True)
    assert "4 of 4 images" in str(err.value) and isinstance(err.value, ValueError)
    prepare_caches(cfg, cfg.DATASETS.TRAIN, grabcut=False)  # no GrabCut asked: nothing to refuse


def test_several_processes_start_once_the_labels_are_prepared(tiny_dataset, monkeypatch):
    cfg, name = tiny_dataset
    prepare_caches(cfg, cfg.DATASETS.TRAIN, grabcut=True)  # one process: prepares them
    _two_processes(monkeypatch)
    prepare_caches(cfg, cfg.DATASETS.TRAIN, grabcut=True)
