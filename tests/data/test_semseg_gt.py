"""Semantic GT painted from instance masks: order, crowd, missing masks, dtype, cache reuse."""
import os

import box2seg  # noqa: F401
import numpy as np
import pytest
import pycocotools.mask as mask_util
from PIL import Image

from box2seg.data import semseg_gt
from box2seg.data.semseg_gt import attach_semantic_gt, paint_semantic_gt


def _square(x0, y0, x1, y1):
    return [[x0, y0, x1, y0, x1, y1, x0, y1]]


def _rle(mask):
    rle = mask_util.encode(np.asfortranarray(mask.astype(np.uint8)))
    rle["counts"] = rle["counts"].decode()
    return rle


def test_smaller_instance_wins_whatever_the_order():
    big = {"bbox": [0, 0, 20, 20], "category_id": 0, "iscrowd": 0, "segmentation": _square(0, 0, 20, 20)}
    small = {"bbox": [5, 5, 10, 10], "category_id": 4, "iscrowd": 0, "segmentation": _square(5, 5, 10, 10)}
    for anns in ([big, small], [small, big]):
        labels = paint_semantic_gt(anns, 24, 30, 255)
        assert labels.dtype == np.uint8 and labels.shape == (24, 30)
        assert labels[7, 7] == 5 and labels[2, 2] == 1 and labels[22, 25] == 0


def test_crowd_is_ignore_and_box_without_mask_is_ignore_in_its_box():
    crowd_mask = np.zeros((16, 16), bool)
    crowd_mask[:, 8:] = True
    anns = [
        {"bbox": [8, 0, 16, 16], "category_id": 2, "iscrowd": 1, "segmentation": _rle(crowd_mask)},
        {"bbox": [0, 0, 4, 4], "category_id": 1, "iscrowd": 0},  # no mask: extent unknown
        {"bbox": [10, 10, 12, 12], "category_id": 0, "iscrowd": 0, "segmentation": _square(10, 10, 12, 12)},
    ]
    labels = paint_semantic_gt(anns, 16, 16, 65535)
    assert labels.dtype == np.uint16
    assert labels[5, 12] == 65535  # crowd
    assert labels[1, 1] == 65535 and labels[5, 5] == 0  # box without mask
    assert labels[11, 11] == 1  # smaller object wins over the crowd region
    # uncompressed RLE (list counts) is accepted too
    raw = {"size": [16, 16], "counts": [16 * 8, 16 * 8]}  # column-major: right half
    labels = paint_semantic_gt([{"bbox": [0, 0, 16, 16], "category_id": 3, "iscrowd": 0, "segmentation": raw}],
                               16, 16, 255)
    assert (labels[:, 8:] == 4).all() and (labels[:, :8] == 0).all()


def test_attach_writes_atomically_and_reuses_cache(fresh_cache, monkeypatch):
    records = [
        {"file_name": "/x/a.jpg", "image_id": "dir/a b", "height": 12, "width": 10,
         "annotations": [{"bbox": [1, 1, 6, 6], "category_id": 299, "iscrowd": 0, "bbox_mode": 0,
                          "segmentation": _square(1, 1, 6, 6)}]},
        {"file_name": "/x/b.jpg", "image_id": 7, "height": 12, "width": 10, "annotations": []},
    ]
    attach_semantic_gt("toy", records, 65535)
    folder = os.path.dirname(records[0]["sem_seg_file_name"])
    assert folder.startswith(str(fresh_cache / "semseg" / "toy-"))
    assert sorted(os.listdir(folder)) == sorted(os.path.basename(r["sem_seg_file_name"]) for r in records)
    labels = np.array(Image.open(records[0]["sem_seg_file_name"]))
    assert labels.shape == (12, 10) and labels[3, 3] == 300 and labels[10, 8] == 0
    assert (np.array(Image.open(records[1]["sem_seg_file_name"])) == 0).all()

    def boom(*args, **kwargs):
        raise AssertionError("repainted a cached image")

    monkeypatch.setattr(semseg_gt, "paint_semantic_gt", boom)
    again = [dict(r) for r in records]
    attach_semantic_gt("toy", again, 65535)
    assert [r["sem_seg_file_name"] for r in again] == [r["sem_seg_file_name"] for r in records]
    # a changed mask is a different cache entry
    records[0]["annotations"][0]["segmentation"] = _square(2, 2, 6, 6)
    monkeypatch.undo()
    attach_semantic_gt("toy", records, 65535)
    assert os.path.dirname(records[0]["sem_seg_file_name"]) != folder


def test_read_label_map_palette_and_16bit(tmp_path):
    from box2seg.data.semseg_gt import read_label_map

    pal = Image.fromarray(np.array([[0, 1], [20, 255]], np.uint8), mode="P")
    pal.putpalette([0, 0, 0, 128, 0, 0] + [7, 7, 7] * 254)
    pal.save(tmp_path / "p.png")
    assert read_label_map(tmp_path / "p.png").tolist() == [[0, 1], [20, 255]]
    import cv2

    cv2.imwrite(str(tmp_path / "w.png"), np.array([[0, 601], [65535, 3]], np.uint16))
    labels = read_label_map(tmp_path / "w.png")
    assert labels.dtype == np.uint16 and labels.tolist() == [[0, 601], [65535, 3]]
    Image.new("RGB", (2, 2)).save(tmp_path / "rgb.png")
    with pytest.raises(ValueError, match="mode 'RGB'"):
        read_label_map(tmp_path / "rgb.png")
