"""Tests never touch the user's cache: the session gets its own BOX2SEG_CACHE (shared by all tests, so
a generated dataset is built once); ``fresh_cache`` gives one test an empty cache of its own."""
import atexit
import json
import os
import shutil
import tempfile

import box2seg  # noqa: F401  (compat fixes before any detectron2 import)
import cv2
import numpy as np
import pytest

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


@pytest.fixture
def tiny_coco(tmp_path):
    return write_tiny_coco(str(tmp_path / "tiny_coco"))
