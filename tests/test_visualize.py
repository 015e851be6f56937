"""``box2seg visualize`` grids and the shared drawing helpers."""
import argparse
import json
import os

import box2seg  # noqa: F401
import cv2
import numpy as np
import pycocotools.mask as mask_util
import pytest
import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.modeling import build_model

from box2seg import visualize
from box2seg.data.datasets.coco import register_coco_spec
from box2seg.data.datasets.common import unregister
from box2seg.engine import get_box2seg_cfg

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY_CFG = os.path.join(REPO, "configs", "tests", "box2seg_tiny.yaml")  # 3 classes + background
SIZE = 96


def make_dataset(root, num_images=2):
    """Two scenes, each with a disc (class "disc") and a diamond ("diamond"), RLE masks; the third class
    ("bar") is never boxed. Returns (json path, image folder)."""
    rng = np.random.default_rng(0)
    (root / "images").mkdir(parents=True)
    yy, xx = np.mgrid[:SIZE, :SIZE] + 0.5
    images, anns = [], []
    for i in range(num_images):
        image = rng.integers(0, 80, (SIZE, SIZE, 3), dtype=np.uint8)
        for k, (cx, cy, r) in enumerate(((30 + 5 * i, 30, 18), (64, 62 - 4 * i, 20))):
            mask = (xx - cx) ** 2 + (yy - cy) ** 2 <= r * r if k == 0 else np.abs(xx - cx) + np.abs(yy - cy) <= r
            image[mask] = (200, 180, 40) if k == 0 else (60, 90, 230)
            ys, xs = np.nonzero(mask)
            rle = mask_util.encode(np.asfortranarray(mask.astype(np.uint8)))
            anns.append({"id": len(anns) + 1, "image_id": i + 1, "category_id": k + 1, "iscrowd": 0,
                         "bbox": [int(xs.min()), int(ys.min()), int(xs.max() - xs.min() + 1), int(ys.max() - ys.min() + 1)],
                         "segmentation": {"size": rle["size"], "counts": rle["counts"].decode("ascii")}})
        cv2.imwrite(str(root / "images" / f"{i}.png"), image)
        images.append({"id": i + 1, "file_name": f"{i}.png", "height": SIZE, "width": SIZE})
    cats = [{"id": 1, "name": "disc"}, {"id": 2, "name": "diamond"}, {"id": 3, "name": "bar"}]
    json_file = root / "instances.json"
    json_file.write_text(json.dumps({"images": images, "annotations": anns, "categories": cats}))
    return str(json_file), str(root / "images")


@pytest.fixture
def dataset(tmp_path):
    json_file, image_root = make_dataset(tmp_path / "data")
    name = f"viz_test_{abs(hash(str(tmp_path))) % 10**8}"
    register_coco_spec(f"{name}={json_file}:{image_root}")
    yield name, json_file
    unregister(name)


def run(argv):
    parser = argparse.ArgumentParser()
    visualize.add_arguments(parser)
    return visualize.main(parser.parse_args(argv))


def test_grid_from_pseudo_mask_json(tmp_path, dataset):
    name, json_file = dataset
    out = tmp_path / "grids"
    assert run(["--dataset", name, "--output", str(out), "--pseudo-masks", json_file, "--max-images", "1"]) == 0
    assert os.listdir(out) == ["1.png"]
    grid = cv2.imread(str(out / "1.png"), cv2.IMREAD_COLOR)
    # two panels (image + boxes | pseudo-masks), each with its caption strip, one row
    assert grid.shape == (SIZE + visualize.CAPTION_HEIGHT, 2 * SIZE + visualize.GAP, 3)
    panel = grid[visualize.CAPTION_HEIGHT :, SIZE + visualize.GAP :]
    image = cv2.imread(os.path.join(os.path.dirname(json_file), "images", "0.png"))
    tinted = np.any(panel != image, axis=2)
    # the pseudo-masks (a disc at (30, 30) r 18) tint the panel: the disc centre changes, the box corner
    # outside the disc and off the box outline does not
    assert tinted[30, 30] and not tinted[15, 15]


def test_grid_with_model_attention(tmp_path, dataset):
    name, json_file = dataset
    cfg = get_box2seg_cfg()
    cfg.merge_from_file(TINY_CFG)
    torch.manual_seed(0)
    DetectionCheckpointer(build_model(cfg), save_dir=str(tmp_path)).save("tiny")
    out = tmp_path / "grids"
    argv = ["--dataset", name, "--output", str(out), "--columns", "3", "--scale", "0.5",
            "--config-file", TINY_CFG, "MODEL.WEIGHTS", str(tmp_path / "tiny.pth")]
    assert run(argv) == 0
    assert sorted(os.listdir(out)) == ["1.png", "2.png"]
    grid = cv2.imread(str(out / "2.png"), cv2.IMREAD_COLOR)
    # image + boxes | model masks | prediction | alpha: disc | alpha: diamond -> 5 panels of 48 px, 3 columns
    cell = SIZE // 2 + visualize.CAPTION_HEIGHT
    assert grid.shape == (2 * cell + visualize.GAP, 3 * (SIZE // 2) + 2 * visualize.GAP, 3)


def test_nothing_to_show_is_refused(tmp_path, dataset):
    with pytest.raises(SystemExit, match="pseudo-masks"):
        run(["--dataset", dataset[0], "--output", str(tmp_path)])


def test_helpers():
    colours = visualize.palette(3)
    assert colours.shape == (4, 3) and not colours[0].any()
    labels = np.array([[0, 1], [3, 255]])
    coloured = visualize.colorize_labels(labels, colours, ignore_label=255)
    assert (coloured[1, 1] == 255).all() and (coloured[0, 1] == colours[1]).all()
    panels = [np.zeros((10, 20, 3), np.uint8)] * 5
    assert visualize.make_grid(panels, columns=2).shape == (3 * 10 + 2 * visualize.GAP, 2 * 20 + visualize.GAP, 3)
    with pytest.raises(ValueError, match="panel 1"):
        visualize.make_grid([panels[0], np.zeros((5, 5, 3), np.uint8)])
