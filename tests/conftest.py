"""Tests never touch the user's cache: the session gets its own BOX2SEG_CACHE (shared by all tests, so
a generated dataset is built once); ``fresh_cache`` gives one test an empty cache of its own. Also the small
synthetic inputs several test folders share (tiny COCO with masks, GrabCut scenes as dicts or COCO JSON)."""
import atexit
import json
import os
import shutil
import tempfile
from pathlib import Path

import box2seg  # noqa: F401  (compat fixes before any detectron2 import)
import cv2
import numpy as np
import pytest
from detectron2.structures import BoxMode

_SESSION_CACHE = tempfile.mkdtemp(prefix="box2seg-test-cache-")
os.environ["BOX2SEG_CACHE"] = _SESSION_CACHE
atexit.register(shutil.rmtree, _SESSION_CACHE, ignore_errors=True)


@pytest.fixture
def fresh_cache(tmp_path, monkeypatch):
    root = tmp_path / "cache"
    monkeypatch.setenv("BOX2SEG_CACHE", str(root))
    return root


def write_tiny_coco(folder, num_images=4, size=64, seed=0):
    """A tiny COCO-format dataset with true polygon masks (discs and triangles of 3 categories with
    non-contiguous ids 1, 3, 7) written into ``folder``. Returns (json_path, image_root)."""
    rng = np.random.default_rng(seed)
    image_root = os.path.join(folder, "images")
    os.makedirs(image_root, exist_ok=True)
    images, annotations = [], []
    for i in range(num_images):
        image = (rng.random((size, size, 3)) * 60 + 40).astype(np.uint8)
        for k in range(2):
            cx, cy = rng.integers(16, size - 16, 2)
            r = int(rng.integers(8, 14))
            cat = [1, 3, 7][(i + k) % 3]
            angles = np.linspace(0, 2 * np.pi, 12 if cat != 7 else 4, endpoint=False)[: (12 if cat != 7 else 3)]
            poly = np.stack([cx + r * np.cos(angles), cy + r * np.sin(angles)], 1)
            cv2.fillPoly(image, [np.round(poly).astype(np.int32)], tuple(int(v) for v in rng.integers(150, 255, 3)))
            x0, y0 = poly.min(0)
            x1, y1 = poly.max(0)
            annotations.append({
                "id": len(annotations) + 1, "image_id": 100 + i, "category_id": cat, "iscrowd": 0,
                "bbox": [float(x0), float(y0), float(x1 - x0), float(y1 - y0)],
                "area": float((x1 - x0) * (y1 - y0)), "segmentation": [poly.reshape(-1).round(2).tolist()],
            })
        name = f"{i:04d}.jpg"
        cv2.imwrite(os.path.join(image_root, name), image)
        images.append({"id": 100 + i, "file_name": name, "height": size, "width": size})
    categories = [{"id": c, "name": n} for c, n in ((1, "disc"), (3, "blob"), (7, "triangle"))]
    json_path = os.path.join(folder, "instances.json")
    with open(json_path, "w") as f:
        json.dump({"images": images, "annotations": annotations, "categories": categories}, f)
    return json_path, image_root


def write_scenes(folder, n, size=(96, 112), seed=0):
    """``n`` PNG images with 2-4 coloured discs / squares on a textured background, and their boxes."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    h, w = size
    scenes = []
    for i in range(n):
        image = (rng.integers(0, 60, (h, w, 3)) + rng.integers(30, 150, 3)).astype(np.uint8)
        boxes = []
        for k in range(int(rng.integers(2, 5))):
            r = int(rng.integers(8, 24))
            cx, cy = int(rng.integers(r, w - r)), int(rng.integers(r, h - r))
            colour = tuple(int(v) for v in rng.integers(0, 256, 3))
            if k % 2:
                cv2.circle(image, (cx, cy), r, colour, -1)
            else:
                image[cy - r:cy + r, cx - r:cx + r] = colour
            boxes.append([cx - r - 0.4, cy - r - 0.7, cx + r + 0.6, cy + r + 0.2])
        crowd = [0] * len(boxes)
        if i % 3 == 0:
            boxes.append([2.0, 2.0, 30.0, 20.0])
            crowd.append(1)
        path = folder / f"scene_{i:03d}.png"
        cv2.imwrite(str(path), image)
        scenes.append((path, boxes, crowd))
    return scenes


def scene_dicts(scenes, h=96, w=112):
    return [
        {"file_name": str(p), "image_id": f"img/{i}", "height": h, "width": w,
         "annotations": [{"bbox": b, "bbox_mode": BoxMode.XYXY_ABS, "category_id": k % 3, "iscrowd": c, "id": k}
                         for k, (b, c) in enumerate(zip(boxes, crowd))]}
        for i, (p, boxes, crowd) in enumerate(scenes)
    ]


def scenes_as_coco(scenes, folder, h=96, w=112):
    """``write_scenes``' output as a COCO instances JSON of boxes (categories 1, 2) beside the images.
    Returns the JSON:IMAGE_ROOT part of a ``--coco-dataset`` spec."""
    images, anns = [], []
    for i, (path, boxes, crowd) in enumerate(scenes):
        images.append({"id": i + 1, "file_name": path.name, "height": h, "width": w})
        for k, ((x0, y0, x1, y1), c) in enumerate(zip(boxes, crowd)):
            bbox = [x0, y0, x1 - x0, y1 - y0]
            anns.append({"id": len(anns) + 1, "image_id": i + 1, "category_id": 1 + k % 2, "iscrowd": c,
                         "bbox": bbox, "area": bbox[2] * bbox[3]})
    coco = {"images": images, "annotations": anns, "categories": [{"id": 1, "name": "thing"}, {"id": 2, "name": "other"}]}
    (folder / "instances.json").write_text(json.dumps(coco))
    return f"{folder / 'instances.json'}:{scenes[0][0].parent if scenes else folder / 'images'}"


def read_folder_bytes(folder):
    """Every file of a cache folder (maps, summary, manifests/...) but the (empty) lock files."""
    files = sorted(p for p in Path(folder).rglob("*") if p.is_file() and not p.name.endswith(".lock"))
    return {str(p.relative_to(folder)): p.read_bytes() for p in files}


@pytest.fixture
def scenes():
    """``scenes(folder, n)``: ``n`` GrabCut scenes written into ``folder``, as dataset dicts."""
    return lambda folder, n, seed=0: scene_dicts(write_scenes(folder, n, seed=seed))


@pytest.fixture
def coco_scenes():
    """``coco_scenes(folder, n)``: ``n`` GrabCut scenes in ``folder/images`` and a COCO JSON of their boxes;
    returns the JSON:IMAGE_ROOT part of a ``--coco-dataset`` spec."""
    return lambda folder, n, seed=1: scenes_as_coco(write_scenes(folder / "images", n, seed=seed), folder)


@pytest.fixture
def folder_bytes():
    """``folder_bytes(folder)``: {relative path: bytes} of every file but the lock files (byte-identity checks)."""
    return read_folder_bytes


@pytest.fixture
def tiny_coco(tmp_path):
    return write_tiny_coco(str(tmp_path / "tiny_coco"))


@pytest.fixture
def make_tiny_coco():
    """write_tiny_coco, for tests that need several tiny datasets (other seeds, other images)."""
    return write_tiny_coco
