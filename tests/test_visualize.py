"""The grids ``box2seg visualize`` writes (box2seg.visualize): pseudo-masks from a COCO JSON, a model's masks,
prediction and attention maps. The drawing helpers are in tests/utils/test_visualizer.py, the command in
tests/commands/test_visualize.py."""
import json
import os

import box2seg  # noqa: F401
import cv2
import numpy as np
import pycocotools.mask as mask_util
import pytest
import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.modeling import build_model

from box2seg import visualize
from box2seg.data.datasets.coco import register_coco_spec
from box2seg.data.datasets.common import unregister
from box2seg.engine import setup_cfg
from box2seg.predict import Box2SegPredictor, setup_predict_cfg
from box2seg.utils.visualizer import CAPTION_HEIGHT, GAP

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


def grids(name, out, **kwargs):
    records = DatasetCatalog.get(name)[: kwargs.pop("max_images", None)]
    thing_classes = MetadataCatalog.get(name).thing_classes
    return visualize.visualize_records(records, thing_classes, str(out), **kwargs), thing_classes


def test_grid_from_pseudo_mask_json(tmp_path, dataset):
    name, json_file = dataset
    out = tmp_path / "grids"
    pseudo = visualize.load_pseudo_masks(json_file, MetadataCatalog.get(name).thing_classes)
    assert grids(name, out, max_images=1, pseudo=pseudo)[0] == 1
    assert os.listdir(out) == ["1.png"]
    grid = cv2.imread(str(out / "1.png"), cv2.IMREAD_COLOR)
    # two panels (image + boxes | pseudo-masks), each with its caption strip, one row
    assert grid.shape == (SIZE + CAPTION_HEIGHT, 2 * SIZE + GAP, 3)
    panel = grid[CAPTION_HEIGHT:, SIZE + GAP :]
    image = cv2.imread(os.path.join(os.path.dirname(json_file), "images", "0.png"))
    tinted = np.any(panel != image, axis=2)
    # the pseudo-masks (a disc at (30, 30) r 18) tint the panel: the disc centre changes, the box corner
    # outside the disc and off the box outline does not
    assert tinted[30, 30] and not tinted[15, 15]


def test_grid_with_model_attention(tmp_path, dataset):
    name, json_file = dataset
    torch.manual_seed(0)
    DetectionCheckpointer(build_model(setup_cfg(TINY_CFG)), save_dir=str(tmp_path)).save("tiny")
    predictor = Box2SegPredictor(setup_predict_cfg(TINY_CFG, ["MODEL.WEIGHTS", str(tmp_path / "tiny.pth")]))
    out = tmp_path / "grids"
    assert grids(name, out, predictor=predictor, columns=3, scale=0.5)[0] == 2
    assert sorted(os.listdir(out)) == ["1.png", "2.png"]
    grid = cv2.imread(str(out / "2.png"), cv2.IMREAD_COLOR)
    # image + boxes | model masks | prediction | alpha: disc | alpha: diamond -> 5 panels of 48 px, 3 columns
    cell = SIZE // 2 + CAPTION_HEIGHT
    assert grid.shape == (2 * cell + GAP, 3 * (SIZE // 2) + 2 * GAP, 3)

    record = DatasetCatalog.get(name)[0]
    image = cv2.imread(record["file_name"], cv2.IMREAD_COLOR)
    panels = visualize.record_panels(record, image, MetadataCatalog.get(name).thing_classes, predictor=predictor)
    assert [text for text, _ in panels] == ["image + boxes", "model masks", "prediction", "alpha: disc",
                                            "alpha: diamond"]


def test_pseudo_masks_match_records_and_check_sizes(tmp_path, dataset):
    name, json_file = dataset
    pseudo = visualize.load_pseudo_masks(json_file, MetadataCatalog.get(name).thing_classes)
    record = DatasetCatalog.get(name)[1]
    masks, classes, boxes = pseudo.masks_for(record)
    assert masks.shape == (2, SIZE, SIZE) and classes.tolist() == [0, 1]
    assert masks[0, 30, 35] and not masks[0, 0, 0]  # image 1's disc is at (35, 30)
    assert pseudo.masks_for(dict(record, file_name="elsewhere/none.png", image_id=99)) is None
    with pytest.raises(ValueError, match="is 96x96, but the dataset image"):
        pseudo.masks_for(dict(record, height=SIZE + 1))
