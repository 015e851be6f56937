"""Pixel labels: MODEL.BOX2SEG.PIXEL_LABELS picks the documented images (ids, a seeded fraction, a second
registered dataset), and the mappers read those images' true masks as M (whole-image and chip mode)."""
import box2seg  # noqa: F401  (compat fixes before any detectron2 import)

import json
import os
import uuid

import cv2
import numpy as np
import pycocotools.mask as mask_util
import pytest
from detectron2.config import get_cfg
from detectron2.structures import BoxMode

from box2seg.config import add_box2seg_config
from box2seg.data.chip_mapper import ChipDatasetMapper
from box2seg.data.datasets.coco import load_coco_boxes, register_coco_boxes
from box2seg.data.datasets.common import UnknownDatasetError
from box2seg.data.grabcut import IGNORE_INDEX
from box2seg.data.mapper import Box2SegDatasetMapper
from box2seg.data.pixel_labels import (PixelLabelError, choose_pixel_label_images, mark_pixel_labels, true_class_map,
                                       true_instance_map, true_own_labels)
from box2seg.structures import chip_regions, sample_label_chip

IGNORE = 255


def _records(n):
    return [{"file_name": f"/data/img{i:03d}.jpg", "image_id": 1000 + i, "height": 8, "width": 8, "annotations": []}
            for i in range(n)]


def _rect_polygon(x0, y0, x1, y1):
    return [[x0, y0, x1, y0, x1, y1, x0, y1]]


def _record(tmp_path, with_masks=True):
    """A 60 x 80 image: a large box of class 0, a smaller box of class 1 inside it, a crowd region (class 2)
    and a class-1 box without a mask; a GrabCut instance map that paints every box as its filled rectangle."""
    h, w = 60, 80
    boxes = [(10, 10, 50, 40), (30, 20, 45, 35), (55, 5, 75, 25), (5, 45, 20, 58)]
    classes, crowd = [0, 1, 2, 1], [0, 0, 1, 0]
    anns = []
    for k, (box, c, cr) in enumerate(zip(boxes, classes, crowd)):
        ann = {"bbox": [float(v) for v in box], "bbox_mode": BoxMode.XYXY_ABS, "category_id": c, "iscrowd": cr,
               "id": k}
        if with_masks and k != 3:
            ann["segmentation"] = _rect_polygon(*box)
        anns.append(ann)
    image = np.full((h, w, 3), 30, np.uint8)
    grabcut = np.zeros((h, w), np.uint16)
    for k in (0, 1, 3):  # larger first: the smaller box wins
        x0, y0, x1, y1 = boxes[k]
        grabcut[y0 + 2:y1 - 2, x0 + 2:x1 - 2] = k + 1
    x0, y0, x1, y1 = boxes[2]
    grabcut[y0:y1, x0:x1] = IGNORE_INDEX
    cv2.imwrite(str(tmp_path / "img.png"), image)
    cv2.imwrite(str(tmp_path / "img_gc.png"), grabcut)
    return {"file_name": str(tmp_path / "img.png"), "image_id": 7, "height": h, "width": w, "annotations": anns,
            "grabcut_file_name": str(tmp_path / "img_gc.png")}


def _decoded(box, h=60, w=80):
    return mask_util.decode(mask_util.merge(mask_util.frPyObjects(_rect_polygon(*box), h, w))).astype(bool)


# ------------------------------------------------------------------------------------------ selection
def test_ids_pick_exactly_those_images():
    records = _records(10)
    assert choose_pixel_label_images(records, ids=[1003, "1007"]) == [3, 7]
    with pytest.raises(PixelLabelError, match="not training images"):
        choose_pixel_label_images(records, ids=[1003, 5])


def test_fraction_with_a_seed_is_reproducible_and_nested():
    records = _records(40)
    ten = choose_pixel_label_images(records, fraction=0.1, seed=3)
    quarter = choose_pixel_label_images(records, fraction=0.25, seed=3)
    assert len(ten) == 4 and len(quarter) == 10
    assert ten == choose_pixel_label_images(records, fraction=0.1, seed=3)
    assert set(ten) <= set(quarter)  # one seed: the smaller fraction is a subset of the larger
    assert quarter != choose_pixel_label_images(records, fraction=0.25, seed=4)
    assert choose_pixel_label_images(records, fraction=1.0) == list(range(40))
    assert choose_pixel_label_images(records, fraction=0.0) == []
    with pytest.raises(PixelLabelError, match="FRACTION"):
        choose_pixel_label_images(records, fraction=1.5)


def test_fraction_of_the_images_of_a_second_dataset():
    records = _records(20)
    files = {os.path.realpath(records[i]["file_name"]) for i in range(0, 20, 2)}  # the even ones
    chosen = choose_pixel_label_images(records, fraction=0.5, seed=0, files=files)
    assert len(chosen) == 5 and all(i % 2 == 0 for i in chosen)
    assert choose_pixel_label_images(records, ids=[1004, 1006], files=files) == [4, 6]
    with pytest.raises(PixelLabelError, match="also in PIXEL_LABELS.DATASETS"):
        choose_pixel_label_images(records, ids=[1003], files=files)


def _subset_coco(json_path, image_root, keep, folder):
    """A second COCO JSON over the same image folder with the first ``keep`` images only."""
    with open(json_path) as f:
        data = json.load(f)
    ids = {img["id"] for img in data["images"][:keep]}
    data["images"] = data["images"][:keep]
    data["annotations"] = [a for a in data["annotations"] if a["image_id"] in ids]
    path = os.path.join(folder, "subset.json")
    with open(path, "w") as f:
        json.dump(data, f)
    return path


def _pixel_cfg(**values):
    cfg = get_cfg()
    add_box2seg_config(cfg)
    cfg.MODEL.BOX2SEG.PIXEL_LABELS.ENABLED = True
    for key, value in values.items():
        setattr(cfg.MODEL.BOX2SEG.PIXEL_LABELS, key, value)
    return cfg


def test_a_second_registered_dataset_marks_its_images(tiny_coco, tmp_path):
    json_path, image_root = tiny_coco
    name = f"pixel_subset_{uuid.uuid4().hex[:8]}"
    register_coco_boxes(name, _subset_coco(json_path, image_root, 2, str(tmp_path)), image_root)
    records = load_coco_boxes(json_path, image_root)
    assert mark_pixel_labels(_pixel_cfg(DATASETS=[name], MODE="box2seg"), records) == 2
    assert [r["supervision"] for r in records] == ["mask", "mask", "boxes", "boxes"]
    assert mark_pixel_labels(_pixel_cfg(DATASETS=[name], IDS=[101]), records) == 1
    assert [r["supervision"] for r in records] == ["boxes", "mask_ce", "boxes", "boxes"]
    cfg = _pixel_cfg()
    cfg.MODEL.BOX2SEG.PIXEL_LABELS.ENABLED = False
    assert mark_pixel_labels(cfg, records) == 0 and {r["supervision"] for r in records} == {"boxes"}
    with pytest.raises(UnknownDatasetError, match="PIXEL_LABELS.DATASETS"):
        mark_pixel_labels(_pixel_cfg(DATASETS=["no_such_dataset_xyz"]), records)


def test_bad_settings_fail_before_training(tmp_path):
    with pytest.raises(PixelLabelError, match="has no true mask"):
        mark_pixel_labels(_pixel_cfg(), [_record(tmp_path, with_masks=False)])
    chips = _pixel_cfg()
    chips.MODEL.BOX2SEG.CHIPS.ENABLED, chips.MODEL.BOX2SEG.CHIPS.TARGET = True, "own"
    semantic_only = dict(_record(tmp_path, with_masks=False), sem_seg_file_name=str(tmp_path / "sem.png"))
    with pytest.raises(PixelLabelError, match="TARGET 'own' needs"):
        mark_pixel_labels(chips, [semantic_only])
    with pytest.raises(PixelLabelError, match="choose no"):
        mark_pixel_labels(_pixel_cfg(FRACTION=0.0), [_record(tmp_path)])
    with pytest.raises(PixelLabelError, match="MODE"):
        mark_pixel_labels(_pixel_cfg(MODE="full"), [_record(tmp_path)])
    cfg = _pixel_cfg()
    cfg.MODEL.BOX2SEG.LOSS.TERMS = ["fg", "bg", "fr"]
    with pytest.raises(PixelLabelError, match="keep 'gc'"):
        mark_pixel_labels(cfg, [_record(tmp_path)])


# ------------------------------------------------------------------------------------------ true masks
def test_true_instance_map_paints_like_the_semantic_ground_truth(tmp_path):
    record = _record(tmp_path)
    m = true_instance_map(record)
    big, small, crowd = _decoded((10, 10, 50, 40)), _decoded((30, 20, 45, 35)), _decoded((55, 5, 75, 25))
    assert (m[small] == 2).all()  # the smaller instance wins the overlap
    assert (m[big & ~small] == 1).all()
    assert (m[crowd] == IGNORE_INDEX).all()
    assert (m[45:58, 5:20] == IGNORE_INDEX).all()  # a box without a mask: its extent is unknown
    rest = ~(big | crowd)
    rest[45:58, 5:20] = False
    assert (m[rest] == 0).all()
    labels = true_class_map(record, [0, 1, 2, 1], IGNORE)
    assert (labels[small] == 2).all() and (labels[big & ~small] == 1).all() and (labels[crowd] == IGNORE).all()


def test_true_class_map_from_a_semantic_label_map(tmp_path):
    record = _record(tmp_path, with_masks=False)
    sem = np.zeros((60, 80), np.uint8)
    sem[10:40, 10:50] = 1
    sem[0, :] = IGNORE
    cv2.imwrite(str(tmp_path / "sem.png"), sem)
    record["sem_seg_file_name"] = str(tmp_path / "sem.png")
    assert (true_class_map(record, [0, 1, 2, 1], IGNORE) == sem).all()


def _whole_image_mapper():
    return Box2SegDatasetMapper(is_train=True, augmentations=[], image_format="BGR", ignore_label=IGNORE)


@pytest.mark.parametrize("supervision", ["mask_ce", "mask"])
def test_whole_image_mapper_reads_the_true_mask(tmp_path, supervision):
    record = _record(tmp_path)
    out = _whole_image_mapper()(dict(record, supervision=supervision))
    assert out["supervision"] == supervision
    assert (out["grabcut_labels"].numpy() == true_class_map(record, [0, 1, 2, 1], IGNORE)).all()
    boxes_only = _whole_image_mapper()(record)
    assert boxes_only["supervision"] == "boxes"
    assert boxes_only["grabcut_labels"][12, 12] == 1 and boxes_only["grabcut_labels"][10, 10] == 0  # GrabCut's


def _chip_mapper(records, target):
    return ChipDatasetMapper(records, size=64, context=0.25, scale_jitter=0.0, shift_jitter=0.0, flip=False,
                             image_format="BGR", ignore_label=IGNORE, target=target)


@pytest.mark.parametrize("target", ["own", "all"])
def test_chip_mapper_cuts_chips_of_the_true_mask(tmp_path, target):
    record = dict(_record(tmp_path), supervision="mask_ce")
    out = _chip_mapper([record], target)((0, 0))  # the chip of the large box
    assert out["supervision"] == "mask_ce"
    region = chip_regions(np.array([[10.0, 10.0, 50.0, 40.0]]), 0.25, 0.0, 0.0)[0]
    if target == "own":
        full = true_own_labels(record, 0, [0, 1, 2, 1], IGNORE)
        assert (full[_decoded((10, 10, 50, 40))] == 1).all()  # its whole mask, the smaller box's part too
    else:
        full = true_class_map(record, [0, 1, 2, 1], IGNORE)
    assert (out["grabcut_labels"].numpy() == sample_label_chip(full, region, 64, IGNORE)).all()


def test_chip_mapper_own_box_without_a_mask_is_ignore(tmp_path):
    record = dict(_record(tmp_path), supervision="mask")
    labels = _chip_mapper([record], "own")((0, 3))["grabcut_labels"]
    assert int((labels == 1).sum()) == 0 and int((labels == IGNORE).sum()) > 0
