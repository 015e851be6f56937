"""The drawing helpers every tool shares (box2seg.utils.visualizer)."""
from types import SimpleNamespace

import box2seg  # noqa: F401
import cv2
import numpy as np
import pytest

from box2seg.utils import visualizer as V


def test_palette_labels_and_grid():
    colours = V.palette(3)
    assert colours.shape == (4, 3) and not colours[0].any()
    assert (V.palette(3) == colours).all()  # fixed seed: a class keeps its colour
    labels = np.array([[0, 1], [3, 255]])
    coloured = V.colorize_labels(labels, colours, ignore_label=255)
    assert (coloured[1, 1] == 255).all() and (coloured[0, 1] == colours[1]).all()
    panels = [np.zeros((10, 20, 3), np.uint8)] * 5
    assert V.make_grid(panels, columns=2).shape == (3 * 10 + 2 * V.GAP, 2 * 20 + V.GAP, 3)
    assert V.grid_size(5, 10, 20, 2) == (3 * 10 + 2 * V.GAP, 2 * 20 + V.GAP)
    with pytest.raises(ValueError, match="panel 1"):
        V.make_grid([panels[0], np.zeros((5, 5, 3), np.uint8)])
    assert V.caption(panels[0], "x").shape == (10 + V.CAPTION_HEIGHT, 20, 3)


def test_instances_tint_their_painted_pixels_and_outline_boxes():
    image = np.full((40, 40, 3), 50, np.uint8)
    colours = V.palette(2)
    labels = np.zeros((40, 40), np.int64)
    labels[6:34, 6:34] = 1
    labels[15:25, 15:25] = 2  # the smaller box's mask, painted last
    out = V.draw_instances(image, labels, [[5, 5, 35, 35], [15, 15, 25, 25]], [0, 1], colours)
    assert out.shape == image.shape and out.dtype == np.uint8
    assert (out[20, 20] == V.blend(image, V.colorize_labels(labels, colours))[20, 20]).all()
    assert (out[10, 10] != out[20, 20]).any() and (out[0, 0] == 50).all()
    assert (out[5, 20] == colours[1]).all()  # the box outline, in its class colour


def test_write_overlay_and_label_png(tmp_path):
    image = np.random.default_rng(0).integers(0, 255, (24, 32, 3), dtype=np.uint8)
    cv2.imwrite(str(tmp_path / "x.png"), image)
    record = {"file_name": str(tmp_path / "x.png"), "height": 24, "width": 32,
              "annotations": [{"bbox": [2.0, 3.0, 12.0, 20.0], "category_id": 1, "iscrowd": 0},
                              {"bbox": [1.0, 1.0, 5.0, 5.0], "category_id": 0, "iscrowd": 1}]}
    labels = np.zeros((24, 32), np.int64)
    labels[5:15, 3:10] = 2
    V.write_overlay(str(tmp_path / "o.png"), record, labels, labels, SimpleNamespace(thing_classes=["a", "b"]))
    overlay = cv2.imread(str(tmp_path / "o.png"))
    assert overlay.shape == (24, 3 * 32, 3)
    assert (overlay[10, 32 + 5] == overlay[10, 64 + 5]).all()  # prediction and box masks tinted alike here
    V.write_label_png(str(tmp_path / "l.png"), labels, num_classes=300)  # more than 254 classes: 16 bit
    assert cv2.imread(str(tmp_path / "l.png"), cv2.IMREAD_UNCHANGED).dtype == np.uint16
    assert not [p for p in tmp_path.iterdir() if ".tmp" in p.name]  # atomic writes leave nothing behind
