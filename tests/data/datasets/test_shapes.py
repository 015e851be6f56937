"""The embedded box2seg_shapes dataset: lazy registration, atomic deterministic generation, sane content."""
import box2seg  # noqa: F401  (compat fixes before any detectron2 import)

import json
import os
import threading
from pathlib import Path

import cv2
import numpy as np
import pycocotools.mask as mask_util
import pytest
from detectron2.data import DatasetCatalog, MetadataCatalog

from box2seg.data.datasets import shapes
from box2seg.data.datasets.common import unregister


@pytest.fixture
def tiny_splits(monkeypatch):
    """Shrink the splits (this changes the params hash, hence the folder: the real cache is untouched)."""
    monkeypatch.setitem(shapes.PARAMS["splits"]["train"], "num_images", 3)
    monkeypatch.setitem(shapes.PARAMS["splits"]["val"], "num_images", 4)


def _leftovers(folder):
    return [p for p in Path(folder).rglob("*") if ".partial" in p.name or ".tmp" in p.name]


def test_default_names_registered_with_metadata():
    for name in ("box2seg_shapes_train", "box2seg_shapes_val"):
        assert name in DatasetCatalog.list()
        meta = MetadataCatalog.get(name)
        assert meta.thing_classes == shapes.SHAPES_CLASSES
        assert meta.stuff_classes == ["background"] + shapes.SHAPES_CLASSES
        assert meta.ignore_label == 255 and meta.evaluator_type == "sem_seg" and meta.has_masks
        assert meta.thing_dataset_id_to_contiguous_id == {i + 1: i for i in range(6)}


def test_registration_is_lazy_and_generation_atomic(fresh_cache, tiny_splits):
    try:
        shapes.register_shapes(prefix="t_shapes_lazy")
        shapes.register_shapes(prefix="t_shapes_lazy")  # same root again: a no-op
        assert MetadataCatalog.get("t_shapes_lazy_val").thing_classes == shapes.SHAPES_CLASSES
        assert not (fresh_cache / "shapes").exists()  # registering and reading metadata generate nothing

        dicts = DatasetCatalog.get("t_shapes_lazy_val")
        split_dir = shapes.shapes_split_dir("val")
        assert str(split_dir).startswith(str(fresh_cache)) and len(dicts) == 4
        assert sorted(os.listdir(split_dir / "images")) == [f"{i:06d}.png" for i in range(4)]
        assert not (fresh_cache / "shapes" / split_dir.parent.name / "train").exists()  # only what was read
        assert not _leftovers(fresh_cache / "shapes")
        mtime = (split_dir / "instances.json").stat().st_mtime_ns
        DatasetCatalog.get("t_shapes_lazy_val")
        assert (split_dir / "instances.json").stat().st_mtime_ns == mtime  # generated once
    finally:
        unregister("t_shapes_lazy_train")
        unregister("t_shapes_lazy_val")


def test_interrupted_generation_leaves_nothing(fresh_cache, tiny_splits, monkeypatch):
    real_generate = shapes.generate_image
    calls = []

    def failing(split, index):
        calls.append(index)
        if index == 2:
            raise KeyboardInterrupt  # killed half-way
        return real_generate(split, index)

    monkeypatch.setattr(shapes, "generate_image", failing)
    with pytest.raises(KeyboardInterrupt):
        shapes.ensure_shapes_split("val")
    assert calls == [0, 1, 2]
    assert not shapes.shapes_split_dir("val").exists() and not _leftovers(fresh_cache)
    monkeypatch.setattr(shapes, "generate_image", real_generate)
    json_file, image_root = shapes.ensure_shapes_split("val")
    assert len(json.load(open(json_file))["images"]) == 4 and len(os.listdir(image_root)) == 4


def test_concurrent_generation_gives_one_complete_split(fresh_cache, tiny_splits):
    results, errors = [], []

    def run():
        try:
            results.append(shapes.ensure_shapes_split("train"))
        except BaseException as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=run) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(set(results)) == 1
    assert len(json.load(open(results[0][0]))["images"]) == 3
    assert not _leftovers(fresh_cache)


def test_generation_is_deterministic_and_order_independent():
    a_rgb, a_objs = shapes.generate_image("val", 5)
    shapes.generate_image("train", 17)
    shapes.generate_image("val", 4)
    b_rgb, b_objs = shapes.generate_image("val", 5)
    assert np.array_equal(a_rgb, b_rgb)
    assert [c for c, _ in a_objs] == [c for c, _ in b_objs]
    assert all(np.array_equal(m1, m2) for (_, m1), (_, m2) in zip(a_objs, b_objs))
    c_rgb, _ = shapes.generate_image("val", 6)
    assert not np.array_equal(a_rgb, c_rgb)
    # The train and val seeds differ: no image is shared by the two splits.
    assert not np.array_equal(shapes.generate_image("train", 5)[0], a_rgb)


def test_val_content():
    dicts = DatasetCatalog.get("box2seg_shapes_val")
    assert len(dicts) == shapes.PARAMS["splits"]["val"]["num_images"] == 80
    counts, fills = np.zeros(6, int), {c: [] for c in range(6)}
    for record in dicts[:40]:
        assert (record["height"], record["width"]) == (160, 160)
        image = cv2.imread(record["file_name"])
        assert image.shape == (160, 160, 3)
        anns = record["annotations"]
        assert 1 <= len(anns) <= 5
        union = np.zeros((160, 160), int)
        truth = cv2.imread(record["sem_seg_file_name"], cv2.IMREAD_UNCHANGED)
        for ann in anns:
            mask = mask_util.decode(mask_util.frPyObjects(ann["segmentation"], 160, 160)
                                    if isinstance(ann["segmentation"]["counts"], list)
                                    else {**ann["segmentation"], "counts": ann["segmentation"]["counts"].encode()})
            mask = mask.astype(bool)
            ys, xs = np.nonzero(mask)
            assert ann["bbox"] == [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]  # tight box of the mask
            assert (truth[mask] == ann["category_id"] + 1).all()
            union += mask
            counts[ann["category_id"]] += 1
            fills[ann["category_id"]].append(mask.sum() / ((np.ptp(xs) + 1) * (np.ptp(ys) + 1)))
        assert union.max() <= 1  # visible masks do not overlap
        assert (truth[union == 0] == 0).all()
        # the stored image is exactly what the generator draws
        rgb, _ = shapes.generate_image("val", record["image_id"])
        assert np.array_equal(image[:, :, ::-1], rgb)
    assert (counts > 0).all()  # every class appears
    mean_fill = {shapes.SHAPES_CLASSES[c]: float(np.mean(v)) for c, v in fills.items()}
    # Shapes are not boxes and fill them to different degrees.
    assert all(v < 0.85 for v in mean_fill.values()), mean_fill
    assert mean_fill["disc"] > 0.6 and mean_fill["crescent"] < 0.5 and mean_fill["star"] < 0.55, mean_fill
