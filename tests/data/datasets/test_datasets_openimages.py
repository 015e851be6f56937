"""Open Images boxes from CSVs: normalised -> pixels, 601 classes, group-of, verified classes, bad rows."""
import logging
import uuid

import box2seg  # noqa: F401
import cv2
import numpy as np
import pytest
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data import detection_utils as utils
from PIL import Image

from box2seg.data.datasets import common, openimages
from box2seg.data.datasets.common import DatasetError, LoadReport, unregister
from box2seg.data.datasets.openimages import load_openimages_boxes, read_class_descriptions, register_openimages_boxes

HEADER = "ImageID,Source,LabelName,Confidence,XMin,XMax,YMin,YMax,IsOccluded,IsTruncated,IsGroupOf,IsDepiction,IsInside"
MIDS = [f"/m/{i:05d}" for i in range(601)]
CAT, DOG = "/m/00010", "/m/00500"


@pytest.fixture
def oi(tmp_path):
    images = tmp_path / "validation"
    images.mkdir()
    cv2.imwrite(str(images / "aaa.jpg"), np.zeros((50, 100, 3), np.uint8))
    cv2.imwrite(str(images / "bbb.jpg"), np.zeros((40, 40, 3), np.uint8))
    # ccc.jpg is stored 30 wide x 60 high with EXIF "rotate 90": detectron2 loads it as 60 x 30 (w x h).
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.new("RGB", (30, 60)).save(images / "ccc.jpg", exif=exif)
    (images / "bad.jpg").write_bytes(b"not a jpeg")
    classes = tmp_path / "class-descriptions-boxable.csv"  # V6: no header; a display name with a comma
    classes.write_text("".join(f'{m},"Name, {i}"\n' for i, m in reversed(list(enumerate(MIDS)))))
    boxes = tmp_path / "validation-annotations-bbox.csv"
    rows = [
        HEADER,
        f"aaa,xclick,{CAT},1,0.1,0.5,0.2,0.6,0,0,0,0,0",  # line 2
        f"aaa,xclick,{DOG},1,0.0,1.0,0.0,1.0,1,0,1,0,0",  # line 3: group-of -> crowd
        f"aaa,xclick,{CAT},1,nan,0.5,0.2,0.6,0,0,0,0,0",  # line 4: NaN
        f"aaa,xclick,{CAT},1,0.5,0.5,0.2,0.6,0,0,0,0,0",  # line 5: zero width
        f"aaa,xclick,/m/unknown,1,0.1,0.5,0.2,0.6,0,0,0,0,0",  # line 6: unknown class
        f"aaa,xclick,{CAT},1,0.1,0.5",  # line 7: truncated row
        f"bbb,xclick,{CAT},1,0.9,1.2,0.5,1.0,0,0,0,0,0",  # line 8: partly outside -> clipped
        f"bbb,xclick,{CAT},1,one,0.5,0.2,0.6,0,0,0,0,0",  # line 9: not a number
        f"ccc,xclick,{DOG},1,0.5,1.0,0.5,1.0,0,0,0,0,0",  # line 10
        f"bad,xclick,{DOG},1,0.5,1.0,0.5,1.0,0,0,0,0,0",  # line 11: unreadable image
        f"gone,xclick,{DOG},1,0.5,1.0,0.5,1.0,0,0,0,0,0",  # line 12: missing image
    ]
    boxes.write_text("\n".join(rows) + "\n")
    labels = tmp_path / "validation-annotations-human-imagelabels-boxable.csv"
    labels.write_text("\n".join([
        "ImageID,Source,LabelName,Confidence",
        f"aaa,verification,{MIDS[3]},0",
        f"aaa,verification,{MIDS[4]},1",
        f"aaa,machine,{MIDS[5]},1",
        f"aaa,verification,{MIDS[6]},0.7",
        "aaa,verification,/m/notboxable,1",
        f"bbb,crowdsource-verification,{MIDS[7]},1",
        "bbb,verification",
    ]) + "\n")
    return boxes, classes, images, labels


@pytest.fixture
def name():
    name = f"test_oi_{uuid.uuid4().hex[:8]}"
    yield name
    unregister(name)


def test_class_descriptions_with_or_without_header(tmp_path, oi):
    _, classes, _, _ = oi
    mids, names = read_class_descriptions(classes)
    assert mids == MIDS and names[10] == "Name, 10"
    v7 = tmp_path / "oidv7.csv"
    v7.write_text("LabelName,DisplayName\n" + classes.read_text())
    assert read_class_descriptions(v7) == (mids, names)
    v7.write_text("LabelName,DisplayName\n/m/1,a,extra\n")
    with pytest.raises(DatasetError, match=r"oidv7.csv, line 2: expected 'LabelName,DisplayName'"):
        read_class_descriptions(v7)


def test_load_boxes_verified_classes_and_bad_rows(oi, name, caplog):
    boxes, classes, images, labels = oi
    register_openimages_boxes(name, boxes, classes, images, image_labels_csv=labels)
    meta = MetadataCatalog.get(name)
    assert meta.ignore_label == 65535 and len(meta.thing_classes) == 601  # lazily, before the load
    report = LoadReport(name, boxes)
    with caplog.at_level(logging.WARNING):
        dicts = load_openimages_boxes(boxes, classes, images, labels, dataset_name=name, report=report)
    by_id = {r["image_id"]: r for r in dicts}
    assert list(by_id) == ["aaa", "bbb", "ccc"]
    a = by_id["aaa"]
    assert (a["height"], a["width"]) == (50, 100) and a["file_name"] == str(images / "aaa.jpg")
    cat, dog = MIDS.index(CAT), MIDS.index(DOG)
    assert [(ann["id"], ann["category_id"], ann["iscrowd"]) for ann in a["annotations"]] == [(2, cat, 0), (3, dog, 1)]
    np.testing.assert_allclose(a["annotations"][0]["bbox"], [10, 10, 50, 30])
    np.testing.assert_allclose(a["annotations"][1]["bbox"], [0, 0, 100, 50])
    np.testing.assert_allclose(by_id["bbb"]["annotations"][0]["bbox"], [36, 20, 40, 40])  # clipped
    c = by_id["ccc"]
    assert (c["height"], c["width"]) == (30, 60)
    utils.check_image_size(c, utils.read_image(c["file_name"]))  # matches what detectron2 loads
    np.testing.assert_allclose(c["annotations"][0]["bbox"], [30, 15, 60, 30])
    # human-verified (0 or 1) image-level labels plus the box classes; machine / 0.7 / unknown ignored
    assert a["verified_classes"] == sorted({3, 4, cat, dog})
    assert by_id["bbb"]["verified_classes"] == sorted({7, cat})
    assert c["verified_classes"] == [dog]

    assert report.skipped == {
        "boxes of a class not in the class descriptions": 1,
        "truncated CSV rows": 1,
        "boxes with non-numeric coordinates": 1,
        "images missing or unreadable (with their boxes)": 2,
        "boxes of missing or unreadable images": 2,
        "boxes with NaN or infinite coordinates": 1,
        "boxes with zero or negative size": 1,
        "truncated rows in validation-annotations-human-imagelabels-boxable.csv": 1,
    }
    assert report.noted["boxes clipped to their image"] == 1
    text = caplog.text
    assert "validation-annotations-bbox.csv line 7" in text and "line 4 (image aaa)" in text
    assert "gone.jpg" in text and "bad.jpg" in text
    assert meta.box_labels_exhaustive is False and meta.evaluator_type == "box2seg_boxes"
    assert meta.thing_dataset_id_to_contiguous_id[CAT] == cat and meta.stuff_classes[0] == "background"


def test_sizes_are_cached(oi, name, fresh_cache, monkeypatch):
    boxes, classes, images, _ = oi
    register_openimages_boxes(name, boxes, classes, images)
    first = DatasetCatalog.get(name)
    assert all("verified_classes" not in r for r in first)
    assert list((fresh_cache / "openimages").rglob("sizes-*.npy"))  # beside the index (the lazy records')

    def no_reads(path):
        name = str(path).rsplit("/", 1)[-1]
        if name in ("bad.jpg", "gone.jpg"):  # failures are retried, not cached
            raise OSError(f"{path}: unreadable")
        raise AssertionError(f"re-read {path}")

    monkeypatch.setattr(openimages, "read_image_size", no_reads)
    assert DatasetCatalog.get(name) == first


def test_bad_header_is_an_error(oi, tmp_path):
    _, classes, images, _ = oi
    bad = tmp_path / "boxes.csv"
    bad.write_text("ImageID,Source,LabelName,Confidence,XMin,XMax,YMin,YMax\naaa,x,/m/00001,1,0,1,0,1\n")
    with pytest.raises(DatasetError, match=r"boxes.csv, line 1: header lacks column\(s\) IsOccluded"):
        load_openimages_boxes(bad, classes, images)
    bad.write_text("")
    with pytest.raises(DatasetError, match="boxes.csv is empty"):
        load_openimages_boxes(bad, classes, images)
    assert common.ignore_label_for(601) == 65535


def _one_box_csv(tmp_path, flags="0,0,0,0,0", coords="0.1,0.5,0.2,0.6", folder="mine"):
    path = tmp_path / folder / "boxes.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"{HEADER}\naaa,xclick,{CAT},1,{coords},0,0,0,0,0\naaa,xclick,{DOG},1,{coords},{flags}\n")
    return path


@pytest.mark.parametrize("value", ["2", "-1", "yes", ""])
def test_group_of_other_than_0_or_1_is_refused_naming_file_line_value(oi, tmp_path, value):
    _, classes, images, _ = oi
    boxes = _one_box_csv(tmp_path, flags=f"0,0,{value},0,0")
    with pytest.raises(DatasetError, match=rf"boxes.csv, line 3, IsGroupOf: expected 0 or 1, got '{value}'"):
        load_openimages_boxes(boxes, classes, images)


def test_attributes_stay_on_the_annotations(oi, tmp_path):
    _, classes, images, _ = oi
    # IsOccluded, IsTruncated, IsGroupOf, IsDepiction, IsInside; -1 = unknown in Open Images.
    boxes = _one_box_csv(tmp_path, flags="1,-1,1,1,0")
    first, second = load_openimages_boxes(boxes, classes, images)[0]["annotations"]
    assert (second["is_occluded"], second["is_truncated"], second["iscrowd"], second["is_depiction"],
            second["is_inside"]) == (1, -1, 1, 1, 0)
    assert (first["is_occluded"], first["is_truncated"], first["is_depiction"], first["is_inside"]) == (0, 0, 0, 0)
    with pytest.raises(DatasetError, match=r"line 3, IsDepiction: expected 0 or 1 or -1, got '3'"):
        load_openimages_boxes(_one_box_csv(tmp_path, flags="0,0,0,3,0"), classes, images)


def test_boolean_coordinates_are_refused_naming_file_and_line(oi, tmp_path):
    _, classes, images, _ = oi
    boxes = _one_box_csv(tmp_path, coords="True,0.5,0.2,0.6")
    with pytest.raises(DatasetError, match=r"boxes.csv, line 2: box coordinates must be numbers"):
        load_openimages_boxes(boxes, classes, images)


def test_register_spec_from_the_command_line(oi, tmp_path, name):
    boxes_csv, classes, images, _ = oi
    # Next to the official file names, the class descriptions file beside the CSV is used.
    assert openimages.register_openimages_spec(f"{name}={boxes_csv}:{images}") == name
    assert openimages.register_openimages_spec(f"{name}={boxes_csv}:{images}") == name  # same files: no-op
    assert len(MetadataCatalog.get(name).thing_classes) == 601
    assert {r["image_id"] for r in DatasetCatalog.get(name)} == {"aaa", "bbb", "ccc"}
    with pytest.raises(DatasetError, match="already registered"):
        openimages.register_openimages_spec(f"{name}={_one_box_csv(tmp_path)}:{images}")
    # A CSV without a class descriptions file (beside it or one folder up): the classes are its LabelNames.
    own = f"{name}_own"
    try:
        openimages.register_openimages_spec(f"{own}={_one_box_csv(tmp_path, folder='own/csv')}:{images}")
        assert MetadataCatalog.get(own).thing_classes == sorted([CAT, DOG])
        assert [a["category_id"] for a in DatasetCatalog.get(own)[0]["annotations"]] == [0, 1]
    finally:
        unregister(own)


def test_spec_errors_name_the_path(tmp_path):
    with pytest.raises(DatasetError, match="expected NAME=BOXES.csv:IMAGE_ROOT"):
        openimages.parse_openimages_spec("mydata")
    assert openimages.parse_openimages_spec("a=C:/x/b.csv:C:/img") == ("a", "C:/x/b.csv", "C:/img")
    with pytest.raises(DatasetError, match="boxes CSV .*nope.csv does not exist"):
        openimages.register_openimages_spec(f"x={tmp_path}/nope.csv:{tmp_path}")
