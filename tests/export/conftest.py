"""Shared by the export tests: a tiny COCO dataset whose objects are drawn in a colour per class, random tiny
model weights, and one uninterrupted unsharded export to compare sharded and resumed runs with."""
import json
import os
import uuid

import cv2
import numpy as np
import pycocotools.mask as mask_util
import pytest
import torch
from detectron2.modeling import build_model

from box2seg.data.datasets.common import unregister
from box2seg.engine import setup_cfg
from box2seg.export import export_config, export_dataset
from box2seg.structures import decode_segmentation

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CONFIG = os.path.join(REPO, "configs", "tests", "box2seg_tiny.yaml")
SIZE = 64
CATEGORY_IDS = (9, 2, 5)  # dataset ids, deliberately unsorted: contiguous 0 = id 2, 1 = id 5, 2 = id 9


def _poly(x0, y0, x1, y1, kind):
    if kind == "tri":
        return [x0, y1, (x0 + x1) / 2, y0, x1, y1]
    return [x0, y0, x1, y0, x1, y1, x0, y1]


def _make_coco(root, num_images=5, invalid_box=False, empty_images=0):
    """A tiny COCO dataset: black images, objects drawn from their own rasterised polygons in a colour per
    class (RGB channel = contiguous class), boxes = polygon extent + 1 px. Annotations listed in shuffled
    order with non-sequential ids; image 0 has a crowd region (RLE, not drawn). ``empty_images`` black images
without annotations follow (COCO train2017 has about 1,000)."""
    rng = np.random.RandomState(0)
    images, anns = [], []
    (root / "images").mkdir(parents=True, exist_ok=True)
    slots = [(4, 4, 28, 28), (36, 6, 60, 30), (8, 36, 30, 60), (38, 38, 60, 58)]
    for i in range(num_images):
        image = np.zeros((SIZE, SIZE, 3), np.uint8)
        for j, slot in enumerate(slots[: 2 + i % 3]):
            contiguous = (i + j) % 3
            x0, y0, x1, y1 = (v + int(rng.randint(0, 3)) for v in slot)
            poly = _poly(x0, y0, x1 - 2, y1 - 2, "tri" if (i + j) % 2 else "rect")
            mask = decode_segmentation([poly], SIZE, SIZE)
            image[mask, 2 - contiguous] = 255  # BGR on disk -> RGB channel `contiguous`
            ys, xs = np.nonzero(mask)
            bx0, by0 = max(xs.min() - 1, 0), max(ys.min() - 1, 0)
            bx1, by1 = min(xs.max() + 2, SIZE), min(ys.max() + 2, SIZE)
            anns.append({"id": 1000 + 7 * len(anns), "image_id": 100 + i,
                         "category_id": sorted(CATEGORY_IDS)[contiguous],
                         "bbox": [float(bx0), float(by0), float(bx1 - bx0), float(by1 - by0)], "iscrowd": 0,
                         "segmentation": [poly], "area": float(mask.sum()), "extra_field": j})
        if i == 0:
            crowd = np.zeros((SIZE, SIZE), np.uint8)
            crowd[40:60, 2:6] = 1
            rle = mask_util.encode(np.asfortranarray(crowd))
            anns.append({"id": 5, "image_id": 100, "category_id": 5, "bbox": [2.0, 40.0, 4.0, 20.0], "iscrowd": 1,
                         "segmentation": {"size": [SIZE, SIZE], "counts": rle["counts"].decode()}, "area": 80.0})
        cv2.imwrite(str(root / "images" / f"img{i}.png"), image)
        images.append({"id": 100 + i, "file_name": f"img{i}.png", "height": SIZE, "width": SIZE, "license": 1})
    for i in range(num_images, num_images + empty_images):
        cv2.imwrite(str(root / "images" / f"img{i}.png"), np.zeros((SIZE, SIZE, 3), np.uint8))
        images.append({"id": 100 + i, "file_name": f"img{i}.png", "height": SIZE, "width": SIZE, "license": 1})
    if invalid_box:
        anns.append({"id": 3, "image_id": 101, "category_id": 2, "bbox": [5.0, 5.0, 0.0, 4.0], "iscrowd": 0})
    order = rng.permutation(len(anns))
    data = {"info": {"description": "box2seg export test"}, "licenses": [{"id": 1, "name": "test"}],
            "images": images, "annotations": [anns[k] for k in order],
            "categories": [{"id": c, "name": f"class{c}", "supercategory": "x"} for c in CATEGORY_IDS]}
    (root / "instances.json").write_text(json.dumps(data))
    return root / "instances.json", root / "images"


def _cfg(spec, name, weights, *extra):
    """The export config of dataset ``name`` registered from ``spec``, as ``box2seg export`` builds it."""
    cfg = setup_cfg(CONFIG, ["MODEL.DEVICE", "cpu", "MODEL.WEIGHTS", weights, *extra], coco_datasets=[spec])
    return export_config(cfg, name)


def _model(cfg, class_probs):
    """The tiny model with its class scores replaced by ``class_probs(images)``: the real inference and
    box-conditioned code runs on these scores."""
    torch.manual_seed(0)
    model = build_model(cfg)
    model.eval()
    model._class_probs = class_probs
    return model


@pytest.fixture(scope="session")
def make_coco():
    return _make_coco


@pytest.fixture(scope="session")
def export_cfg():
    return _cfg


@pytest.fixture(scope="session")
def scored_model():
    return _model


@pytest.fixture(scope="session")
def weights(tmp_path_factory):
    """Randomly initialised tiny model weights (saved the way a checkpoint is)."""
    cfg = setup_cfg(CONFIG, ["MODEL.DEVICE", "cpu"])
    torch.manual_seed(0)
    model = build_model(cfg)
    path = tmp_path_factory.mktemp("weights") / "model.pth"
    torch.save({"model": model.state_dict()}, path)
    torch.manual_seed(1)
    other = tmp_path_factory.mktemp("weights") / "other.pth"
    torch.save({"model": build_model(cfg).state_dict()}, other)
    return str(path), str(other)


@pytest.fixture(scope="session")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("coco")
    json_file, image_root = _make_coco(root, num_images=5, invalid_box=True)
    name = f"export_test_{uuid.uuid4().hex[:8]}"
    spec = f"{name}={json_file}:{image_root}"
    yield name, spec, json_file
    unregister(name)


@pytest.fixture(scope="session")
def reference(dataset, weights, tmp_path_factory):
    """An uninterrupted, unsharded export with the random model (single-threaded, like the subprocesses)."""
    name, spec, _ = dataset
    out = tmp_path_factory.mktemp("reference")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        summary = export_dataset(_cfg(spec, name, weights[0]), name, out, progress=False)
    finally:
        torch.set_num_threads(threads)
    return out, summary
