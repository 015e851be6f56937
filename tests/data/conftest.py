"""Shared by the GrabCut job tests: synthetic scenes (coloured discs and squares on a textured background,
a crowd box on every third) registered as throw-away datasets."""
import uuid

import cv2
import numpy as np
import pytest
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.structures import BoxMode


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


@pytest.fixture
def registered():
    names = []

    def register(dicts, classes=("a", "b", "c")):
        name = f"test_grabcut_{uuid.uuid4().hex[:8]}"
        DatasetCatalog.register(name, lambda: [dict(d) for d in dicts])
        MetadataCatalog.get(name).set(thing_classes=list(classes))
        names.append(name)
        return name

    yield register
    for name in names:
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)


@pytest.fixture
def scenes():
    """``scenes(folder, n)``: ``n`` scenes written into ``folder``, as dataset dicts."""
    return lambda folder, n, seed=0: scene_dicts(write_scenes(folder, n, seed=seed))
