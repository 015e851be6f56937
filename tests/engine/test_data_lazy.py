"""engine.data with a lazy record sequence (Open Images): GrabCut is prepared and attached without a list of
dicts, the training records equal the eager list's (with the same GrabCut files and supervision), and the
whole-image and chip loaders take the sequence as it is (wrapped, not copied)."""
import os
import uuid

import box2seg  # noqa: F401  (compat fixes before any detectron2 import)
import cv2
import numpy as np
import pytest
from detectron2.data import DatasetCatalog

from box2seg.data.cache import annotations_hash
from box2seg.data.datasets.common import unregister
from box2seg.data.datasets.lazy import ConcatRecords, is_lazy
from box2seg.data.datasets.openimages import load_openimages_boxes
from box2seg.data.grabcut import GrabCutSettings, attach_grabcut_files, grabcut_cache_dir
from box2seg.engine import prepare_caches, setup_cfg
from box2seg.engine.data import build_train_loader, train_dicts_with_grabcut

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TINY = os.path.join(REPO, "configs", "tests", "box2seg_tiny.yaml")
HEADER = "ImageID,Source,LabelName,Confidence,XMin,XMax,YMin,YMax,IsOccluded,IsTruncated,IsGroupOf,IsDepiction,IsInside"


@pytest.fixture
def oi(tmp_path, monkeypatch):
    monkeypatch.setenv("BOX2SEG_CACHE", str(tmp_path / "cache"))
    rng = np.random.default_rng(0)
    images = tmp_path / "images"
    images.mkdir()
    rows = [HEADER]
    for k, image_id in enumerate(["aaa", "bbb", "ccc"]):
        image = (rng.random((48, 64, 3)) * 60).astype(np.uint8)
        image[10:30, 12 + 4 * k:40 + 4 * k] = (200, 120 + 20 * k, 40)
        cv2.imwrite(str(images / f"{image_id}.jpg"), image)
        rows.append(f"{image_id},xclick,/m/{'abc'[k]},1,{0.15 + 0.05 * k},{0.7 + 0.05 * k},0.15,0.7,0,0,0,0,0")
    rows.append("aaa,xclick,/m/b,1,0.0,0.5,0.0,0.5,0,0,1,0,0")  # a group box
    boxes = tmp_path / "boxes.csv"
    boxes.write_text("\n".join(rows) + "\n")
    name = f"lazy_oi_{uuid.uuid4().hex[:8]}"
    spec = f"{name}={boxes}:{images}"
    yield name, spec, boxes, images
    unregister(name)


def _cfg(name, spec, *opts):
    return setup_cfg(TINY, ["DATASETS.TRAIN", f"('{name}',)", "DATASETS.TEST", "()", "INPUT.FORMAT", "BGR",
                            *opts], openimages_datasets=[spec])


def _eager(name, boxes, images):
    """The records as the eager loader gives them, with attach_grabcut_files / mark_pixel_labels applied."""
    records = load_openimages_boxes(boxes, None, images)
    attach_grabcut_files(name, records, GrabCutSettings())
    return [dict(r, supervision="boxes") for r in records]


def test_prepare_attach_and_train_records_without_a_list(oi):
    name, spec, boxes, images = oi
    cfg = _cfg(name, spec)
    records = DatasetCatalog.get(name)
    assert is_lazy(records) and len(records) == 3
    prepare_caches(cfg, cfg.DATASETS.TRAIN, grabcut=True)
    train = train_dicts_with_grabcut(cfg)
    assert is_lazy(train) and not isinstance(train, list)
    eager = _eager(name, boxes, images)
    assert list(train) == eager and all(os.path.isfile(r["grabcut_file_name"]) for r in train)
    assert annotations_hash(train) == annotations_hash(eager)
    assert grabcut_cache_dir(name, train, GrabCutSettings()) == grabcut_cache_dir(name, eager, GrabCutSettings())

    batch = next(iter(build_train_loader(cfg)))
    assert len(batch) == 2 and {b["file_name"] for b in batch} <= {r["file_name"] for r in eager}
    chips = _cfg(name, spec, "MODEL.BOX2SEG.CHIPS.ENABLED", "True")
    batch = next(iter(build_train_loader(chips)))
    assert len(batch) == 2 and all("chip_region" in b for b in batch)

    both = _cfg(name, spec, "DATASETS.TRAIN", f"('{name}', '{name}')")
    train = train_dicts_with_grabcut(both)
    assert isinstance(train, ConcatRecords) and list(train) == eager + eager


def test_grabcut_paths_of_a_lazy_dataset(oi, tmp_path):
    name, spec, boxes, images = oi
    from box2seg.data.grabcut import GrabCutPaths, grabcut_file_for

    _cfg(name, spec)
    records = DatasetCatalog.get(name)
    paths = GrabCutPaths(tmp_path, records)
    assert list(paths) == [grabcut_file_for(tmp_path, r) for r in records] and paths.duplicate() is None
    paths.names[2] = paths.names[0]
    assert paths.duplicate() == (0, 2)
