"""Open Images at scale: the boxes CSV parsed once into a mapped columnar index (a second load parses
nothing and gives the same dicts and report); the class hierarchy takes a verified negative down to the
children (positives do not go up); the official instance masks become a GT COCO JSON that box2seg score
lines up with the dataset's boxes."""
import json
import os
import uuid

import box2seg  # noqa: F401
import cv2
import numpy as np
import pytest
from detectron2.data import DatasetCatalog

from box2seg.data.datasets import openimages_index
from box2seg.data.datasets.common import LoadReport, unregister
from box2seg.data.datasets.openimages import (expand_verified, load_openimages_boxes, read_class_hierarchy,
                                              register_openimages_boxes)
from box2seg.data.datasets.openimages_masks import write_masks_coco
from box2seg.evaluation.score import score_files
from box2seg.structures import encode_rle

HEADER = "ImageID,Source,LabelName,Confidence,XMin,XMax,YMin,YMax,IsOccluded,IsTruncated,IsGroupOf,IsDepiction,IsInside"
ANIMAL, DOG, CAT, CAR = "/m/animal", "/m/dog", "/m/cat", "/m/car"


@pytest.fixture
def oi(tmp_path, fresh_cache):
    images = tmp_path / "images"
    images.mkdir()
    cv2.imwrite(str(images / "aaa.jpg"), np.zeros((40, 80, 3), np.uint8))
    cv2.imwrite(str(images / "bbb.jpg"), np.zeros((30, 30, 3), np.uint8))
    classes = tmp_path / "class-descriptions-boxable.csv"
    classes.write_text("".join(f"{m},{m[3:]}\n" for m in (ANIMAL, DOG, CAT, CAR)))
    boxes = tmp_path / "train-annotations-bbox.csv"
    boxes.write_text("\n".join([
        HEADER,
        f"aaa,xclick,{DOG},1,0.1,0.5,0.25,0.75,0,0,0,0,0",  # line 2
        f"aaa,xclick,{CAR},1,0.5,1.0,0.0,0.5,1,0,0,0,-1",  # line 3
        f"aaa,xclick,{CAT},1,0.1,0.5",  # line 4: truncated
        f"bbb,xclick,{CAT},1,0.2,0.8,0.2,0.8,0,0,0,0,0",  # line 5
        f"bbb,xclick,/m/unknown,1,0.2,0.8,0.2,0.8,0,0,0,0,0",  # line 6
    ]) + "\n")
    labels = tmp_path / "train-annotations-human-imagelabels-boxable.csv"
    labels.write_text("\n".join(["ImageID,Source,LabelName,Confidence", f"aaa,verification,{ANIMAL},0",
                                 f"bbb,verification,{CAR},0"]) + "\n")
    hierarchy = tmp_path / "bbox_labels_600_hierarchy.json"
    hierarchy.write_text(json.dumps({"LabelName": "/m/0bl9f", "Subcategory": [
        {"LabelName": ANIMAL, "Subcategory": [{"LabelName": DOG}, {"LabelName": CAT}]},
        {"LabelName": CAR, "Part": [{"LabelName": DOG}]}]}))
    return boxes, classes, images, labels, hierarchy


def test_the_csv_is_parsed_once_into_a_mapped_index(oi, monkeypatch):
    boxes, classes, images, _, _ = oi
    first_report = LoadReport("a", boxes)
    first = load_openimages_boxes(boxes, classes, images, report=first_report)
    index = openimages_index.openimages_index(boxes)
    assert isinstance(index.coords, np.memmap) and len(index) == 4 and index.labels[-1] == "/m/unknown"
    monkeypatch.setattr(openimages_index, "_parse", lambda path: pytest.fail("parsed the CSV again"))
    second_report = LoadReport("b", boxes)
    second = load_openimages_boxes(boxes, classes, images, report=second_report)
    assert second == first and [len(r["annotations"]) for r in first] == [2, 1]
    assert second_report.skipped == first_report.skipped and first_report.skipped == {
        "truncated CSV rows": 1, "boxes of a class not in the class descriptions": 1}
    car = first[0]["annotations"][1]
    assert car["id"] == 3 and car["bbox"] == [40.0, 0.0, 80.0, 20.0] and car["is_inside"] == -1
    # A changed CSV is a new index.
    monkeypatch.undo()
    boxes.write_text(boxes.read_text() + f"bbb,xclick,{DOG},1,0.0,0.5,0.0,0.5,0,0,0,0,0\n")
    os.utime(boxes, ns=(os.stat(boxes).st_atime_ns, os.stat(boxes).st_mtime_ns + 10**9))
    assert [len(r["annotations"]) for r in load_openimages_boxes(boxes, classes, images)] == [2, 2]


def test_a_verified_negative_reaches_the_children_and_positives_stay(oi):
    boxes, classes, images, labels, hierarchy = oi
    mids = {ANIMAL: 0, CAR: 1, CAT: 2, DOG: 3}
    descendants = read_class_hierarchy(hierarchy, mids)
    assert descendants == {0: frozenset({2, 3})}  # a Part link is not a kind of car
    assert expand_verified({3}, set(), set(), descendants) == {3}  # a dog does not verify "animal"
    assert expand_verified(set(), {0}, {1}, descendants) == {0, 1, 2, 3}
    plain = load_openimages_boxes(boxes, classes, images, image_labels_csv=labels)
    expanded = load_openimages_boxes(boxes, classes, images, image_labels_csv=labels, hierarchy_json=hierarchy)
    assert [r["verified_classes"] for r in plain] == [[0, 1, 3], [1, 2]]
    assert [r["verified_classes"] for r in expanded] == [[0, 1, 2, 3], [1, 2]]  # no animal: no cat either


def test_official_masks_become_a_gt_json_that_scores_the_dataset(oi, tmp_path):
    boxes, classes, images, _, _ = oi
    masks = tmp_path / "masks"
    (masks / "a").mkdir(parents=True)
    small = np.zeros((20, 40), np.uint8)  # half the image's resolution: resized with nearest neighbours
    small[6:14, 5:18] = 255
    cv2.imwrite(str(masks / "a" / "aaa_dog_1.png"), small)
    seg = tmp_path / "train-annotations-object-segmentation.csv"
    seg.write_text("\n".join([
        "MaskPath,ImageID,LabelName,BoxID,BoxXMin,BoxXMax,BoxYMin,BoxYMax,PredictedIoU,Clicks",
        f"aaa_dog_1.png,aaa,{DOG},x1,0.1,0.5,0.25,0.75,0.9,",
        f"aaa_nobox.png,aaa,{CAT},x2,0.1,0.5,0.25,0.75,0.9,",  # no such box
        f"bbb_cat.png,bbb,{CAT},x3,0.2,0.8,0.2,0.8,0.9,",  # PNG missing
    ]) + "\n")
    name = f"oi_masks_{uuid.uuid4().hex[:8]}"
    register_openimages_boxes(name, boxes, classes, images)
    try:
        result = write_masks_coco(name, seg, masks, tmp_path / "gt.json")
        dicts = DatasetCatalog.get(name)
    finally:
        unregister(name)
    assert result["masks"] == 1 and result["annotations"] == 3
    gt = json.loads((tmp_path / "gt.json").read_text())
    dog = next(a for a in gt["annotations"] if a["id"] == 2)
    assert dog["category_id"] == DOG and dog["bbox"] == [8.0, 10.0, 32.0, 20.0] and dog["area"] == 8 * 2 * 13 * 2
    assert [a for a in gt["annotations"] if "segmentation" in a] == [dog]
    # An export-like prediction with the true mask for the dog and boxes elsewhere scores 1.0 on the dog.
    pred = json.loads(json.dumps(gt))
    for ann in pred["annotations"]:
        if "segmentation" not in ann:
            record = next(r for r in dicts if r["image_id"] == ann["image_id"])
            box = np.zeros((1, record["height"], record["width"]), bool)
            x, y, w, h = (int(round(v)) for v in ann["bbox"])
            box[0, y:y + h, x:x + w] = True
            (ann["segmentation"],) = encode_rle(box)
    (tmp_path / "pred.json").write_text(json.dumps(pred))
    scores = score_files(tmp_path / "gt.json", tmp_path / "pred.json")
    assert scores["instance"]["mIoU"] == 1.0
