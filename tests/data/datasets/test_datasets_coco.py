"""COCO-format box datasets: conversion, ids, masks -> painted GT, bad input, spec registration."""
import json
import logging
import uuid

import box2seg  # noqa: F401
import cv2
import numpy as np
import pycocotools.mask as mask_util
import pytest
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.structures import BoxMode
from PIL import Image

from box2seg.data.datasets.coco import load_coco_boxes, parse_coco_spec, register_coco_boxes, register_coco_spec
from box2seg.data.datasets.common import (
    DatasetError,
    LoadReport,
    UnknownDatasetError,
    get_dataset_dicts,
    ignore_label_for,
    unknown_dataset_message,
    unregister,
)


def _write_image(path, height, width):
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), np.random.RandomState(0).randint(0, 255, (height, width, 3), dtype=np.uint8))


def _crowd_rle():
    mask = np.zeros((30, 40), np.uint8)
    mask[20:30, 30:40] = 1
    return {"size": [30, 40], "counts": mask_util.encode(np.asfortranarray(mask))["counts"].decode()}


@pytest.fixture
def coco(tmp_path):
    images = tmp_path / "images"
    _write_image(images / "a.jpg", 30, 40)
    _write_image(images / "sub" / "b.jpg", 20, 25)
    _write_image(images / "c.jpg", 16, 12)  # its size is not in the JSON
    data = {
        "images": [
            {"id": 1, "file_name": "a.jpg", "height": 30, "width": 40},
            {"id": 2, "file_name": "sub/b.jpg", "height": 20, "width": 25},
            {"id": 3, "file_name": "c.jpg"},
            {"id": 4, "file_name": "missing.jpg"},  # no size, no file
        ],
        "categories": [{"id": 7, "name": "seven"}, {"id": 1, "name": "one"}, {"id": 3, "name": "three"}],
        "annotations": [
            {"id": 10, "image_id": 1, "category_id": 7, "bbox": [2, 3, 10, 12], "iscrowd": 0,
             "segmentation": [[2, 3, 12, 3, 12, 15, 2, 15]]},
            {"id": 11, "image_id": 1, "category_id": 1, "bbox": [4, 5, 4, 4], "iscrowd": 0,
             "segmentation": {"size": [30, 40], "counts": [4 * 30 + 5, 4, 26, 4, 26, 4, 26, 4, 981]}},
            {"id": 14, "image_id": 1, "category_id": 1, "bbox": [20, 2, 3, 3], "iscrowd": 0,
             "segmentation": {"size": [30, 40], "counts": [125, 4]}},  # does not cover the image
            {"id": 12, "image_id": 1, "category_id": 3, "bbox": [30, 20, 10, 10], "iscrowd": 1,
             "segmentation": _crowd_rle()},
            {"id": 13, "image_id": 1, "category_id": 3, "bbox": [35, 25, 10, 10], "iscrowd": 0},  # clipped
            {"id": 20, "image_id": 2, "category_id": 1, "bbox": [float("nan"), 1, 3, 3]},
            {"id": 21, "image_id": 2, "category_id": 1, "bbox": [1, 1, 0, 3]},
            {"id": 22, "image_id": 2, "category_id": 1, "bbox": [1, 1, 3, -2]},
            {"id": 23, "image_id": 2, "category_id": 1, "bbox": [30, 1, 3, 3]},  # entirely outside
            {"id": 24, "image_id": 2, "category_id": 99, "bbox": [1, 1, 3, 3]},
            {"id": 25, "image_id": 77, "category_id": 1, "bbox": [1, 1, 3, 3]},
            {"id": 26, "image_id": 2, "category_id": 1, "bbox": [1, 1, 3]},
            {"id": 30, "image_id": 3, "category_id": 7, "bbox": [1, 1, 5, 5]},
            {"id": 40, "image_id": 4, "category_id": 7, "bbox": [1, 1, 5, 5]},
        ],
    }
    json_file = tmp_path / "ann.json"
    # NaN is written as the JSON token NaN, which Python's json (and COCO tools) accept.
    json_file.write_text(json.dumps(data))
    return json_file, images


@pytest.fixture
def name():
    name = f"test_coco_{uuid.uuid4().hex[:8]}"
    yield name
    unregister(name)


def test_ignore_label_for():
    assert ignore_label_for(20) == 255 and ignore_label_for(254) == 255
    assert ignore_label_for(255) == 65535 and ignore_label_for(601) == 65535


def test_load_converts_boxes_ids_and_counts_bad_input(coco, name, caplog):
    json_file, images = coco
    register_coco_boxes(name, json_file, images)
    report = LoadReport(name, json_file)
    with caplog.at_level(logging.WARNING):
        dicts = load_coco_boxes(json_file, images, dataset_name=name, report=report)
    by_id = {r["image_id"]: r for r in dicts}
    assert sorted(by_id) == [1, 2, 3]  # image 4: no size and no file
    a = by_id[1]
    assert a["file_name"] == str(images / "a.jpg") and (a["height"], a["width"]) == (30, 40)
    anns = {ann["id"]: ann for ann in a["annotations"]}
    assert anns[10]["bbox"] == [2, 3, 12, 15] and anns[10]["bbox_mode"] == BoxMode.XYXY_ABS
    # categories sorted by dataset id: 1 -> 0, 3 -> 1, 7 -> 2
    assert [anns[i]["category_id"] for i in (10, 11, 12, 13)] == [2, 0, 1, 1]
    assert anns[12]["iscrowd"] == 1 and anns[10]["iscrowd"] == 0
    assert anns[13]["bbox"] == [35, 25, 40, 30]  # clipped to the image
    assert "segmentation" in anns[10] and "segmentation" not in anns[13]
    assert by_id[2]["annotations"] == []  # kept without boxes
    assert (by_id[3]["height"], by_id[3]["width"]) == (16, 12)  # read from the image header

    assert report.skipped == {
        "images without a size in the JSON whose file cannot be read": 1,
        "annotations of an unknown image id": 1,
        "annotations with an unknown category id": 1,
        "annotations without a 4-number bbox": 1,
        "annotations of unreadable images": 1,
        "boxes with NaN or infinite coordinates": 1,
        "boxes with zero or negative size": 2,
        "boxes entirely outside their image": 1,
    }
    assert report.noted["boxes clipped to their image"] == 1
    assert report.noted["masks dropped as unusable (degenerate polygons, malformed RLE)"] == 1
    assert report.noted["images without boxes (background-only loss)"] == 1
    assert (report.num_images, report.num_boxes) == (3, 6)
    text = caplog.text
    assert "annotation id 20 in image 2" in text and "annotation id 24 in image 2 (category 99)" in text
    assert "missing.jpg" in text and str(json_file) in text

    meta = MetadataCatalog.get(name)
    assert meta.thing_classes == ["one", "three", "seven"]
    assert meta.stuff_classes == ["background", "one", "three", "seven"]
    assert meta.thing_dataset_id_to_contiguous_id == {1: 0, 3: 1, 7: 2}
    assert meta.ignore_label == 255 and meta.has_masks and meta.evaluator_type == "sem_seg"

    labels = np.array(Image.open(a["sem_seg_file_name"]))
    assert labels.shape == (30, 40)
    assert labels[10, 5] == 3  # polygon of "seven" (contiguous 2 -> label 3)
    assert labels[6, 6] == 1  # smaller RLE instance of "one" painted over it
    assert labels[22, 32] == 255  # crowd
    assert labels[27, 37] == 255  # box without a mask (id 13) -> ignore in its box
    assert labels[3, 21] == 255  # unusable RLE (id 14) -> ignore in its box
    assert labels[0, 39] == 0
    assert (np.array(Image.open(by_id[2]["sem_seg_file_name"])) == 0).all()


def test_catalog_lazy_metadata_and_idempotent_registration(coco, name):
    json_file, images = coco
    register_coco_boxes(name, json_file, images)
    register_coco_boxes(name, str(json_file), str(images) + "/")  # same files again: no-op
    meta = MetadataCatalog.get(name)
    # Class metadata without loading the dataset (e.g. build_evaluator before the data loader).
    assert meta.evaluator_type == "sem_seg" and meta.thing_classes == ["one", "three", "seven"]
    assert meta.thing_dataset_id_to_contiguous_id == {1: 0, 3: 1, 7: 2}
    dicts = DatasetCatalog.get(name)
    assert len(dicts) == 3 and all("sem_seg_file_name" in r for r in dicts)
    with pytest.raises(DatasetError, match="already registered"):
        register_coco_boxes(name, json_file, images / "sub")


def test_dataset_without_masks(tmp_path, name):
    _write_image(tmp_path / "x.jpg", 10, 10)
    data = {"images": [{"id": "x", "file_name": "x.jpg", "height": 10, "width": 10}],
            "categories": [{"id": i, "name": f"c{i}"} for i in range(300)],
            "annotations": [{"id": "a", "image_id": "x", "category_id": 299, "bbox": [0, 0, 5, 5], "iscrowd": 0}]}
    json_file = tmp_path / "nomask.json"
    json_file.write_text(json.dumps(data))
    register_coco_boxes(name, json_file, tmp_path)
    (record,) = DatasetCatalog.get(name)
    assert "sem_seg_file_name" not in record and record["annotations"][0]["id"] == "a"
    meta = MetadataCatalog.get(name)
    assert meta.evaluator_type == "box2seg_boxes" and not meta.has_masks and meta.ignore_label == 65535


def test_spec_parsing_and_errors(coco, tmp_path, name):
    json_file, images = coco
    assert parse_coco_spec("n=/a/b.json:/c:d") == ("n", "/a/b.json", "/c:d")
    assert parse_coco_spec("n=ann:imgs") == ("n", "ann", "imgs")
    for bad in ("nameonly", "=a.json:b", "n=a.json", "n=a.json:", "n=:imgs"):
        with pytest.raises(DatasetError, match="NAME=JSON:IMAGE_ROOT"):
            parse_coco_spec(bad)
    with pytest.raises(DatasetError, match="nope.json does not exist"):
        register_coco_spec(f"{name}={tmp_path}/nope.json:{images}")
    with pytest.raises(DatasetError, match="image folder"):
        register_coco_spec(f"{name}={json_file}:{tmp_path}/noimages")
    assert register_coco_spec(f"{name}={json_file}:{images}") == name
    assert register_coco_spec(f"{name}={json_file}:{images}") == name  # idempotent
    with pytest.raises(DatasetError, match="already registered"):
        register_coco_spec(f"{name}={json_file}:{tmp_path}")


def test_malformed_files_name_the_file(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text('{"images": [')
    with pytest.raises(DatasetError, match="bad.json is not valid JSON"):
        load_coco_boxes(bad, tmp_path)
    bad.write_text(json.dumps({"images": [], "categories": []}))
    with pytest.raises(DatasetError, match="bad.json: missing or malformed 'annotations'"):
        load_coco_boxes(bad, tmp_path)
    bad.write_text(json.dumps({"images": [], "annotations": [], "categories": [{"id": 1, "name": "a"}, {"id": 1, "name": "b"}]}))
    with pytest.raises(DatasetError, match="duplicate category id 1"):
        load_coco_boxes(bad, tmp_path)
    with pytest.raises(DatasetError, match="does not exist"):
        load_coco_boxes(tmp_path / "none.json", tmp_path)


def test_lazy_metadata_copies_and_pickles(coco, name):
    import copy
    import pickle

    json_file, images = coco
    register_coco_boxes(name, json_file, images)
    meta = MetadataCatalog.get(name)
    clone = copy.deepcopy(meta)
    assert clone.json_file == str(json_file)
    assert pickle.loads(pickle.dumps(meta)).image_root == str(images)
    assert meta.thing_classes == ["one", "three", "seven"]


def test_name_registered_by_another_loader_is_refused(coco):
    json_file, images = coco
    # detectron2's builtin coco_2017_val has json_file/image_root metadata but a different loader
    with pytest.raises(DatasetError, match="already registered"):
        register_coco_boxes("coco_2017_val", json_file, images)


@pytest.mark.parametrize("bbox", [["2", "3", "10", "12"], [True, 3, 10, 12], "2345"])
def test_bbox_of_strings_or_booleans_is_refused_naming_file_and_annotation(tmp_path, bbox):
    images = tmp_path / "images"
    _write_image(images / "a.jpg", 30, 40)
    path = tmp_path / "ann.json"
    path.write_text(json.dumps({
        "images": [{"id": 1, "file_name": "a.jpg", "height": 30, "width": 40}],
        "categories": [{"id": 1, "name": "one"}],
        "annotations": [{"id": 5, "image_id": 1, "category_id": 1, "bbox": bbox}]}))
    with pytest.raises(DatasetError, match=r"ann.json: annotation id 5 in image 1: 'bbox' must be 4 numbers"):
        load_coco_boxes(path, images)


def test_unknown_dataset_message_suggests_the_flags_and_close_names():
    known = [f"builtin_{i}" for i in range(75)] + ["coco_2017_train_boxes"]
    text = unknown_dataset_message("coco_2017_trian_boxes", known)
    assert "--coco-dataset coco_2017_trian_boxes=ANNOTATIONS.json:IMAGE_ROOT" in text
    assert "--openimages-dataset" in text and "Did you mean 'coco_2017_train_boxes'" in text
    assert "builtin_7" not in text  # not the list of every built-in name
    with pytest.raises(UnknownDatasetError, match="mydata.*--coco-dataset") as caught:
        get_dataset_dicts("mydata")
    assert isinstance(caught.value, KeyError) and str(caught.value).startswith("dataset 'mydata'")
