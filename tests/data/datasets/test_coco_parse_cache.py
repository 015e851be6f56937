"""The COCO JSON is parsed once per file version however often DatasetCatalog asks for the dataset (the
data loader, the evaluators, the GrabCut and export jobs), and every caller gets records of its own."""
import json
import os
import uuid
from pathlib import Path

import box2seg  # noqa: F401
import pytest
from detectron2.data import DatasetCatalog, MetadataCatalog

from box2seg.data.datasets import coco
from box2seg.data.datasets.coco import load_coco_boxes, register_coco_boxes
from box2seg.data.datasets.common import LoadReport, unregister


@pytest.fixture
def name():
    name = f"test_coco_cache_{uuid.uuid4().hex[:8]}"
    yield name
    unregister(name)


@pytest.fixture
def parses(monkeypatch):
    """The number of times the module reads and parses a JSON file."""
    calls = []
    read = coco._read_json

    def counting(json_file):
        calls.append(json_file)
        return read(json_file)

    monkeypatch.setattr(coco, "_read_json", counting)
    return calls


def _rewrite(path, change):
    data = json.loads(path.read_text())
    change(data)
    stat = os.stat(path)
    path.write_text(json.dumps(data))
    # A later mtime even on a coarse clock.
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 2_000_000_000))


def test_one_parse_for_many_gets_and_lazy_metadata(tiny_coco, name, parses, fresh_cache):
    json_path, image_root = tiny_coco
    register_coco_boxes(name, json_path, image_root)
    first = DatasetCatalog.get(name)
    for _ in range(5):
        again = DatasetCatalog.get(name)
        assert again == first and again is not first
    assert len(parses) == 1
    # The lazy class metadata of another registration of the same file reads the parse in memory, not the
    # file (fresh_cache: no on-disk metadata cache to fall back on).
    other = f"{name}_b"
    try:
        register_coco_boxes(other, json_path, image_root)
        assert list(MetadataCatalog.get(other).thing_classes) == ["disc", "blob", "triangle"]
        assert len(DatasetCatalog.get(other)) == 4
    finally:
        unregister(other)
    assert len(parses) == 1
    # Painted semantic GT is attached to every copy.
    assert all("sem_seg_file_name" in r for r in DatasetCatalog.get(name))


def test_a_changed_file_is_parsed_again(tiny_coco, name, parses):
    json_path, image_root = tiny_coco
    register_coco_boxes(name, json_path, image_root)
    assert len(DatasetCatalog.get(name)) == 4
    _rewrite(Path(json_path), lambda d: d["images"].pop())
    assert len(DatasetCatalog.get(name)) == 3
    assert len(parses) == 2
    # Touching it (same bytes, new mtime) is a new version too.
    stat = os.stat(json_path)
    os.utime(json_path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 2_000_000_000))
    DatasetCatalog.get(name)
    assert len(parses) == 3


def test_another_image_root_is_another_load(tiny_coco, tmp_path, parses):
    json_path, image_root = tiny_coco
    a = load_coco_boxes(json_path, image_root, paint_semseg=False)
    b = load_coco_boxes(json_path, tmp_path / "elsewhere", paint_semseg=False)
    assert a[0]["file_name"].startswith(str(image_root)) and b[0]["file_name"].startswith(str(tmp_path / "elsewhere"))
    assert len(parses) == 2


def test_mutating_returned_records_does_not_change_the_next(tiny_coco, name, parses):
    json_path, image_root = tiny_coco
    register_coco_boxes(name, json_path, image_root)
    first = DatasetCatalog.get(name)
    pristine = json.dumps(first, sort_keys=True, default=str)
    first[0]["height"] = -1
    first[0]["annotations"][0]["category_id"] = 99
    first[0]["annotations"][0]["bbox"][0] = -5.0
    first[1]["annotations"].clear()
    first.pop()
    assert json.dumps(DatasetCatalog.get(name), sort_keys=True, default=str) == pristine
    assert len(parses) == 1


def test_a_reused_parse_fills_the_callers_report(tiny_coco, parses):
    json_path, image_root = tiny_coco
    load_coco_boxes(json_path, image_root, paint_semseg=False)
    report = LoadReport("again", json_path)
    load_coco_boxes(json_path, image_root, report=report, paint_semseg=False)
    assert (report.num_images, report.num_boxes) == (4, 8)
    assert len(parses) == 1
