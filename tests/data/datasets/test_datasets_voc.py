"""PASCAL VOC 2012 boxes: XML conversion, trainaug recipe, palette GT read as indices, bad input."""
import importlib.util
import logging
import uuid
from pathlib import Path

import box2seg  # noqa: F401
import cv2
import numpy as np
import pytest
from detectron2.data import DatasetCatalog, MetadataCatalog
from PIL import Image

from box2seg.data.datasets.common import DatasetError, LoadReport, unregister
from box2seg.data.datasets.voc import VOC_CLASSES, derive_trainaug_ids, load_voc_boxes, register_voc_boxes

REPO = Path(__file__).resolve().parents[3]


def _xml(width, height, objects, size=True):
    objs = "".join(
        f"<object><name>{n}</name><difficult>{d}</difficult><bndbox><xmin>{b[0]}</xmin><ymin>{b[1]}</ymin>"
        f"<xmax>{b[2]}</xmax><ymax>{b[3]}</ymax></bndbox></object>"
        for n, b, d in objects
    )
    size_xml = f"<size><width>{width}</width><height>{height}</height><depth>3</depth></size>" if size else ""
    return f"<annotation><filename>x.jpg</filename>{size_xml}{objs}</annotation>"


def _palette_png(path, labels):
    img = Image.fromarray(labels.astype(np.uint8), mode="P")
    palette = [0, 0, 0, 128, 0, 0, 0, 128, 0] + [224, 224, 192] * 253  # 255 = void colour
    img.putpalette(palette[: 256 * 3])
    img.save(path)


@pytest.fixture
def voc(tmp_path):
    root = tmp_path / "VOC2012"
    for sub in ("JPEGImages", "Annotations", "ImageSets/Segmentation", "SegmentationClass"):
        (root / sub).mkdir(parents=True)
    sizes = {"2007_000001": (20, 30), "2007_000002": (24, 16), "2008_000003": (10, 10),
             "2008_000004": (12, 12), "2009_000005": (8, 8)}
    for image_id, (h, w) in sizes.items():
        cv2.imwrite(str(root / "JPEGImages" / f"{image_id}.jpg"), np.full((h, w, 3), 90, np.uint8))
    xml = {
        # whole-image box (1-based inclusive -> [0, 0, W, H]), a difficult one, an unknown class, one
        # partly outside (clipped) and one with xmax < xmin
        "2007_000001": _xml(30, 20, [("person", (1, 1, 30, 20), 0), ("dog", (5, 6, 10, 12), 1),
                                     ("unicorn", (1, 1, 5, 5), 0), ("cat", (25, 15, 40, 30), 0),
                                     ("car", (9, 3, 4, 8), 0)]),
        "2007_000002": _xml(16, 24, [("tvmonitor", (2, 3, 4, 5), 0)], size=False),  # size from the JPEG
        "2008_000003": _xml(10, 10, []),  # no boxes: kept
        "2009_000005": _xml(8, 8, [("bird", (1, 1, 8, 8), 0)]),
        # 2008_000004 has no XML
    }
    for image_id, text in xml.items():
        (root / "Annotations" / f"{image_id}.xml").write_text(text)
    seg = root / "ImageSets" / "Segmentation"
    seg.joinpath("train.txt").write_text("2007_000001\n2008_000004\n")
    seg.joinpath("val.txt").write_text("2007_000002\n2009_000005\n")
    for image_id in ("2007_000002", "2009_000005"):
        h, w = sizes[image_id]
        labels = np.zeros((h, w), np.uint8)
        labels[1:4, 1:3] = 20
        labels[0, :] = 255
        _palette_png(root / "SegmentationClass" / f"{image_id}.png", labels)
    sbd = tmp_path / "SBD" / "benchmark_RELEASE" / "dataset"
    sbd.mkdir(parents=True)
    sbd.joinpath("train.txt").write_text("2008_000003\n2009_000005\n")  # 2009_000005 is VOC val: excluded
    sbd.joinpath("val.txt").write_text("2007_000001\n")
    return root


@pytest.fixture
def name():
    name = f"test_voc_{uuid.uuid4().hex[:8]}"
    yield name
    unregister(name)


def test_trainaug_recipe_and_boxes(voc, name, caplog):
    assert derive_trainaug_ids(str(voc), str(voc.parent / "SBD/benchmark_RELEASE/dataset")) == \
        ["2007_000001", "2008_000003", "2008_000004"]
    report = LoadReport(name, voc)
    with caplog.at_level(logging.WARNING):
        dicts = load_voc_boxes(voc, "trainaug", dataset_name=None, report=report)
    by_id = {r["image_id"]: r for r in dicts}
    assert sorted(by_id) == ["2007_000001", "2008_000003"]
    rec = by_id["2007_000001"]
    assert rec["file_name"] == str(voc / "JPEGImages" / "2007_000001.jpg") and (rec["height"], rec["width"]) == (20, 30)
    anns = rec["annotations"]
    assert [a["bbox"] for a in anns] == [[0, 0, 30, 20], [4, 5, 10, 12], [24, 14, 30, 20]]
    assert [VOC_CLASSES[a["category_id"]] for a in anns] == ["person", "dog", "cat"]
    assert [a["difficult"] for a in anns] == [0, 1, 0] and all(a["iscrowd"] == 0 for a in anns)
    assert [a["id"] for a in anns] == ["2007_000001/0", "2007_000001/1", "2007_000001/3"]
    assert by_id["2008_000003"]["annotations"] == []
    assert "sem_seg_file_name" not in rec  # GT for 1 of 3 images only: not attached
    assert report.skipped == {"boxes of an unknown class": 1, "images without an annotation XML": 1,
                              "boxes with zero or negative size": 1}
    assert report.noted == {"boxes clipped to their image": 1, "images without boxes (background-only loss)": 1}
    assert "'unicorn'" in caplog.text and "2008_000004.xml" in caplog.text


def test_val_registration_palette_gt_and_metadata(voc, name):
    register_voc_boxes(name, voc, "val")
    meta = MetadataCatalog.get(name)
    assert meta.thing_classes == list(VOC_CLASSES) and meta.stuff_classes[0] == "background"
    assert meta.ignore_label == 255 and meta.thing_dataset_id_to_contiguous_id[1] == 0
    assert meta.evaluator_type == "sem_seg" and meta.has_masks  # lazily, before the load
    dicts = DatasetCatalog.get(name)
    rec = {r["image_id"]: r for r in dicts}["2007_000002"]
    assert (rec["height"], rec["width"]) == (24, 16)  # no <size>: read from the JPEG header
    assert rec["annotations"][0]["bbox"] == [1, 2, 4, 5]
    gt = np.array(Image.open(rec["sem_seg_file_name"]))  # what SemSegEvaluator reads
    assert gt.shape == (24, 16) and set(np.unique(gt)) == {0, 20, 255}  # palette indices, not colours


def test_rgb_label_png_is_refused(voc, name):
    path = voc / "SegmentationClass" / "2009_000005.png"
    Image.open(path).convert("RGB").save(path)
    register_voc_boxes(name, voc, "val")
    with pytest.raises(DatasetError, match=r"2009_000005.png has PIL mode 'RGB'"):
        DatasetCatalog.get(name)


def test_missing_lists_give_clear_errors(tmp_path, voc):
    with pytest.raises(DatasetError, match="VOC folder .*nowhere does not exist"):
        load_voc_boxes(tmp_path / "nowhere", "val")
    with pytest.raises(DatasetError, match="test.txt does not exist"):
        load_voc_boxes(voc, "test")
    import shutil
    shutil.rmtree(voc.parent / "SBD")
    with pytest.raises(DatasetError, match="prepare_voc_trainaug.py"):
        load_voc_boxes(voc, "trainaug")


def test_prepare_script_writes_trainaug(voc, name):
    spec = importlib.util.spec_from_file_location("prepare_voc_trainaug", REPO / "datasets" / "prepare_voc_trainaug.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.main(["--voc-root", str(voc)]) == 0
    listed = (voc / "ImageSets" / "Segmentation" / "trainaug.txt").read_text().split()
    assert listed == ["2007_000001", "2008_000003", "2008_000004"]
    register_voc_boxes(name, voc, "trainaug")
    assert len(DatasetCatalog.get(name)) == 2


def test_builtin_names_follow_detectron2_datasets():
    import os

    import box2seg.data.datasets  # noqa: F401  (registers the builtin datasets)

    root = os.path.abspath(os.path.expanduser(os.getenv("DETECTRON2_DATASETS", "datasets")))
    for name, split in (("voc_2012_trainaug_boxes", "trainaug"), ("voc_2012_val_boxes", "val")):
        meta = MetadataCatalog.get(name)
        assert meta.dirname == os.path.join(root, "VOC2012") and meta.split == split
        assert len(meta.thing_classes) == 20 and meta.ignore_label == 255
    assert MetadataCatalog.get("coco_2017_val_boxes").json_file.endswith("coco/annotations/instances_val2017.json")
    assert MetadataCatalog.get("openimages_v6_val_boxes").box_labels_exhaustive is False
