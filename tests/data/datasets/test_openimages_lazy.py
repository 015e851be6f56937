"""Open Images' lazy records (OpenImagesRecords) against the eager list loader: the same records in the same
order, the same report, the same annotations hash, cheap pickling, and fields added on access."""
import json
import logging
import pickle
import uuid

import cv2
import numpy as np
import pytest
from detectron2.data import DatasetCatalog

from box2seg.data.cache import annotations_hash
from box2seg.data.datasets import openimages
from box2seg.data.datasets.common import LoadReport, unregister
from box2seg.data.datasets.lazy import ConcatRecords, LazyRecords, PairSequence, constant_field
from box2seg.data.datasets.openimages import OpenImagesRecords, load_openimages_boxes, register_openimages_boxes

HEADER = "ImageID,Source,LabelName,Confidence,XMin,XMax,YMin,YMax,IsOccluded,IsTruncated,IsGroupOf,IsDepiction,IsInside"
CLASSES = [f"/m/c{k:02d}" for k in range(12)]


@pytest.fixture
def generated(tmp_path, fresh_cache):
    """A random CSV with every kind of skipped row, unknown classes, missing and unreadable images, images
    whose boxes come in several runs, an image left without boxes, image-level labels and a hierarchy."""
    rng = np.random.default_rng(7)
    images = tmp_path / "images"
    images.mkdir()
    ids = [f"img{k:03d}" for k in range(40)]
    for k, image_id in enumerate(ids):
        if k % 9 == 4:
            continue  # missing
        if k % 13 == 6:
            (images / f"{image_id}.jpg").write_bytes(b"not an image")
            continue
        cv2.imwrite(str(images / f"{image_id}.jpg"), np.zeros((20 + k, 30 + 2 * k, 3), np.uint8))
    rows = [HEADER]
    for j in range(400):
        image_id = ids[int(rng.integers(0, 40))]  # interleaved: an image's boxes are not contiguous
        label = CLASSES[int(rng.integers(0, 12))] if rng.random() > 0.05 else "/m/unknown"
        x0, y0 = rng.uniform(-0.2, 0.9, 2)
        x1, y1 = x0 + rng.uniform(-0.1, 0.6), y0 + rng.uniform(-0.1, 0.6)
        flags = rng.integers(0, 2, 5).tolist()
        flags[4] = int(rng.integers(-1, 2))
        kind = rng.random()
        if kind < 0.02:
            rows.append(f"{image_id},xclick,{label},1,{x0:.4f}")  # truncated
        elif kind < 0.04:
            rows.append(f",xclick,{label},1,{x0:.4f},{x1:.4f},{y0:.4f},{y1:.4f},0,0,0,0,0")  # no ImageID
        elif kind < 0.06:
            rows.append(f"{image_id},xclick,{label},1,abc,{x1:.4f},{y0:.4f},{y1:.4f},0,0,0,0,0")  # non-numeric
        else:
            rows.append(f"{image_id},xclick,{label},1,{x0:.4f},{x1:.4f},{y0:.4f},{y1:.4f},"
                        f"{flags[0]},{flags[1]},{flags[2]},{flags[3]},{flags[4]}")
    cv2.imwrite(str(images / "empty.jpg"), np.zeros((10, 10, 3), np.uint8))
    rows.append(f"empty,xclick,{CLASSES[0]},1,0.5,0.4,0.5,0.6,0,0,0,0,0")  # its only box is degenerate
    cv2.imwrite(str(images / "crowd.jpg"), np.zeros((10, 10, 3), np.uint8))
    rows.append(f"crowd,xclick,{CLASSES[1]},1,0.1,0.4,0.5,0.6,0,0,1,0,0")  # a group box only
    boxes = tmp_path / "train-annotations-bbox.csv"
    boxes.write_text("\n".join(rows) + "\n")
    classes = tmp_path / "class-descriptions-boxable.csv"
    classes.write_text("".join(f"{m},name {m[3:]}\n" for m in CLASSES))
    labels = ["ImageID,Source,LabelName,Confidence"]
    for j in range(300):
        image_id = ids[int(rng.integers(0, 40))] if rng.random() > 0.05 else "nosuchimage"
        source = "machine" if rng.random() < 0.2 else "verification"
        confidence = ["0", "1", "0.5", "x"][int(rng.choice(4, p=[0.45, 0.45, 0.05, 0.05]))]
        label = CLASSES[int(rng.integers(0, 12))] if rng.random() > 0.05 else "/m/nobox"
        labels.append(f"{image_id},{source},{label},{confidence}" if rng.random() > 0.02 else f"{image_id},x")
    labels_csv = tmp_path / "labels.csv"
    labels_csv.write_text("\n".join(labels) + "\n")
    hierarchy = tmp_path / "hierarchy.json"
    hierarchy.write_text(json.dumps({"LabelName": "/m/root", "Subcategory": [
        {"LabelName": CLASSES[0], "Subcategory": [{"LabelName": CLASSES[1]}, {"LabelName": CLASSES[2], "Subcategory": [
            {"LabelName": CLASSES[3]}]}]},
        {"LabelName": CLASSES[4], "Subcategory": [{"LabelName": CLASSES[3]}], "Part": [{"LabelName": CLASSES[5]}]}]}))
    return boxes, classes, images, labels_csv, hierarchy


def _report_state(report):
    return (dict(report.skipped), dict(report.noted), dict(report._examples), report.summary())


@pytest.mark.parametrize("extras", ["none", "labels", "hierarchy"])
def test_lazy_records_equal_the_eager_list(generated, extras, caplog):
    boxes, classes, images, labels, hierarchy = generated
    kwargs = {"none": {}, "labels": {"image_labels_csv": labels},
              "hierarchy": {"image_labels_csv": labels, "hierarchy_json": hierarchy}}[extras]
    eager_report, lazy_report, again_report = LoadReport("d", boxes), LoadReport("d", boxes), LoadReport("d", boxes)
    eager = load_openimages_boxes(boxes, classes, images, report=eager_report, **kwargs)
    with caplog.at_level(logging.INFO):
        lazy = load_openimages_boxes(boxes, classes, images, report=lazy_report, lazy=True, **kwargs)
    assert isinstance(lazy, OpenImagesRecords) and isinstance(eager, list)
    assert len(lazy) == len(eager) and list(lazy) == eager and lazy == eager
    assert [lazy[i] for i in range(-len(lazy), 0)] == eager and lazy[3:7] == eager[3:7]
    with pytest.raises(IndexError):
        lazy[len(lazy)]
    assert any(not r["annotations"] for r in eager) and any(r["annotations"] for r in eager)
    assert any(a["bbox"] != [round(v) for v in a["bbox"]] for r in eager for a in r["annotations"])
    assert _report_state(lazy_report) == _report_state(eager_report)
    for reason in ("truncated CSV rows", "boxes of a class not in the class descriptions",
                   "images missing or unreadable (with their boxes)", "boxes with zero or negative size"):
        assert eager_report.skipped[reason] > 0
    if extras != "none":
        assert all("verified_classes" in r for r in lazy)
        assert "rows with a non-numeric Confidence in labels.csv" in eager_report.skipped
    # A second load maps the cached view: no validation, no CSV, the same report.
    again = load_openimages_boxes(boxes, classes, images, report=again_report, lazy=True, **kwargs)
    assert again.view_folder == lazy.view_folder and _report_state(again_report) == _report_state(eager_report)


def test_hierarchy_changes_the_lazy_verified_classes(generated):
    boxes, classes, images, labels, hierarchy = generated
    plain = load_openimages_boxes(boxes, classes, images, image_labels_csv=labels, lazy=True)
    expanded = load_openimages_boxes(boxes, classes, images, image_labels_csv=labels, hierarchy_json=hierarchy,
                                     lazy=True)
    assert plain.view_folder != expanded.view_folder
    assert sum(len(r["verified_classes"]) for r in expanded) > sum(len(r["verified_classes"]) for r in plain)


def test_annotations_hash_is_the_lists_and_cached(generated, monkeypatch):
    boxes, classes, images, _, _ = generated
    eager = load_openimages_boxes(boxes, classes, images)
    lazy = load_openimages_boxes(boxes, classes, images, lazy=True)
    assert annotations_hash(lazy) == annotations_hash(eager) == annotations_hash(iter(eager))
    assert annotations_hash(lazy, length=20) == annotations_hash(eager, length=20)
    fresh = load_openimages_boxes(boxes, classes, images, lazy=True)
    monkeypatch.setattr(OpenImagesRecords, "_build", lambda self, i: pytest.fail("streamed the records again"))
    assert annotations_hash(fresh) == annotations_hash(eager)


def test_pickles_as_its_folders_with_its_fields(generated):
    boxes, classes, images, labels, _ = generated
    lazy = load_openimages_boxes(boxes, classes, images, image_labels_csv=labels, lazy=True)
    lazy.add_field("supervision", constant_field, "boxes")
    blob = pickle.dumps(lazy)
    assert len(blob) < 1000
    back = pickle.loads(blob)
    assert back == lazy and all(r["supervision"] == "boxes" for r in back)
    lazy.add_field("supervision", constant_field, "mask")  # replaces the field
    assert {r["supervision"] for r in lazy} == {"mask"} and set(lazy[0]) - set(back[0]) == set()


def test_positions_with_boxes_from_the_arrays(generated):
    boxes, classes, images, _, _ = generated
    lazy = load_openimages_boxes(boxes, classes, images, lazy=True)
    for crowd in (True, False):
        streamed = LazyRecords.positions_with_boxes(lazy, crowd=crowd)
        assert lazy.positions_with_boxes(crowd=crowd).tolist() == streamed.tolist()
    assert 0 < len(lazy.positions_with_boxes(crowd=False)) < len(lazy.positions_with_boxes()) < len(lazy)


def test_concat_records_without_copying(generated):
    boxes, classes, images, _, _ = generated
    lazy = load_openimages_boxes(boxes, classes, images, lazy=True)
    plain = [{"file_name": "x.jpg", "image_id": "x", "annotations": []}]
    both = ConcatRecords([plain, lazy])
    both.add_field("supervision", constant_field, "boxes")
    assert len(both) == len(lazy) + 1 and both[0]["image_id"] == "x" and both[1] == dict(lazy[0], supervision="boxes")
    assert "supervision" not in plain[0]  # the list's own dicts are not written
    assert list(both)[-1]["image_id"] == lazy[-1]["image_id"]


def test_registered_dataset_is_lazy_and_reads_old_size_caches(generated, fresh_cache, monkeypatch):
    boxes, classes, images, _, _ = generated
    eager = load_openimages_boxes(boxes, classes, images)  # writes the JSON sizes cache (the old format)
    assert list((fresh_cache / "openimages").glob("sizes-*.json"))

    def no_reads(path):
        if cv2.imread(str(path)) is None:  # missing / unreadable: retried, as the JSON cache has no entry
            raise OSError(f"{path}: unreadable")
        raise AssertionError(f"re-read {path}: the JSON sizes cache was not used")

    monkeypatch.setattr(openimages, "read_image_size", no_reads)
    name = f"oi_lazy_{uuid.uuid4().hex[:8]}"
    register_openimages_boxes(name, boxes, classes, images)
    try:
        dicts = DatasetCatalog.get(name)
    finally:
        unregister(name)
    assert isinstance(dicts, OpenImagesRecords) and dicts == eager
    assert list((fresh_cache / "openimages").rglob("sizes-*.npy"))


def test_image_ids_and_chip_items_from_the_arrays(generated):
    boxes, classes, images, _, _ = generated
    lazy = load_openimages_boxes(boxes, classes, images, lazy=True)
    assert list(lazy.image_ids()) == list(LazyRecords.image_ids(lazy)) == [r["image_id"] for r in lazy]
    for crowd in (True, False):
        fast, streamed = lazy.box_items(crowd=crowd), LazyRecords.box_items(lazy, crowd=crowd)
        assert [a.tolist() for a in fast] == [a.tolist() for a in streamed]
    from box2seg.data.chip_mapper import chip_items

    assert list(PairSequence(*lazy.box_items())) == chip_items(list(lazy))


def test_mapped_pages_handed_back_during_passes(generated, monkeypatch):
    boxes, classes, images, labels, _ = generated
    eager = load_openimages_boxes(boxes, classes, images, image_labels_csv=labels)
    lazy = load_openimages_boxes(boxes, classes, images, image_labels_csv=labels, lazy=True)
    calls = []
    release = openimages.release_pages
    monkeypatch.setattr(openimages, "release_pages", lambda arrays: calls.append(len(arrays)) or release(arrays))
    monkeypatch.setattr(OpenImagesRecords, "_RELEASE_EVERY", 3)
    assert list(lazy) == eager and [lazy[i] for i in range(len(lazy) - 1, -1, -1)] == eager[::-1]
    assert len(calls) == 2 * len(eager) // 3 and set(calls) == {13}
    lazy.box_items()
    assert len(calls) == 2 * len(eager) // 3 + 1
