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


def test_instance_masks_smaller_box_on_top():
    image = np.full((40, 40, 3), 50, np.uint8)
    colours = V.palette(2)
    big, small = np.zeros((2, 40, 40), bool)
    big[5:35, 5:35] = True
    small[15:25, 15:25] = True
    boxes = [[5, 5, 35, 35], [15, 15, 25, 25]]
    one_order = V.draw_instance_masks(image, [big, small], [0, 1], boxes, colours)
    other_order = V.draw_instance_masks(image, [small, big], [1, 0], boxes[::-1], colours)
    assert one_order.shape == image.shape and one_order.dtype == np.uint8
    assert (one_order == other_order).all()  # drawn by box area, not by input order
    centre, ring = one_order[20, 20].astype(int), one_order[10, 10].astype(int)
    assert (centre != ring).any() and (ring != 50).any() and (one_order[0, 0] == 50).all()
    assert (V.draw_instance_masks(image, np.zeros((0, 40, 40), bool), [], [], colours) == image).all()


def test_write_overlay_and_label_png(tmp_path):
    image = np.random.default_rng(0).integers(0, 255, (24, 32, 3), dtype=np.uint8)
    cv2.imwrite(str(tmp_path / "x.png"), image)
    record = {"file_name": str(tmp_path / "x.png"), "height": 24, "width": 32,
              "annotations": [{"bbox": [2.0, 3.0, 12.0, 20.0], "category_id": 1, "iscrowd": 0},
                              {"bbox": [1.0, 1.0, 5.0, 5.0], "category_id": 0, "iscrowd": 1}]}
    masks = np.zeros((2, 24, 32), bool)
    masks[0, 5:15, 3:10] = True
    labels = np.zeros((24, 32), np.int64)
    labels[5:15, 3:10] = 2
    V.write_overlay(str(tmp_path / "o.png"), record, labels, masks, SimpleNamespace(thing_classes=["a", "b"]))
    assert cv2.imread(str(tmp_path / "o.png")).shape == (24, 3 * 32, 3)
    V.write_label_png(str(tmp_path / "l.png"), labels, num_classes=300)  # more than 254 classes: 16 bit
    assert cv2.imread(str(tmp_path / "l.png"), cv2.IMREAD_UNCHANGED).dtype == np.uint16
    assert not [p for p in tmp_path.iterdir() if ".tmp" in p.name]  # atomic writes leave nothing behind
