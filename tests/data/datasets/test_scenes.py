"""The generated photo-like box2seg_scenes: lazy registration, deterministic generation, prefix-stable
splits, COCO-like object sizes, masks that are the visible parts."""
import box2seg  # noqa: F401  (compat fixes before any detectron2 import)

import json

import numpy as np
import pycocotools.mask as mask_util
import pytest
from detectron2.data import DatasetCatalog, MetadataCatalog

from box2seg.data.datasets import scenes
from box2seg.data.datasets.common import DatasetError, unregister
from box2seg.evaluation.box_scorer import SIZE_BUCKETS


def test_default_names_registered_with_metadata():
    for name in ("box2seg_scenes_train", "box2seg_scenes_val"):
        meta = MetadataCatalog.get(name)
        assert meta.thing_classes == scenes.SCENES_CLASSES and meta.has_masks and meta.ignore_label == 255
        assert meta.scenes_params_hash == scenes.params_hash()


def test_scenes_are_deterministic_and_masks_are_visible_parts():
    rgb, objects = scenes.generate_scene("val", 3)
    again, objects_again = scenes.generate_scene("val", 3)
    assert np.array_equal(rgb, again) and rgb.shape == (256, 256, 3) and rgb.dtype == np.uint8
    assert [c for c, _ in objects] == [c for c, _ in objects_again] and len(objects) >= 1
    assert not np.array_equal(rgb, scenes.generate_scene("val", 4)[0])
    assert not np.array_equal(rgb, scenes.generate_scene("train", 3)[0])
    masks = np.stack([m for _, m in objects])
    assert (masks.sum(0) <= 1).all()  # visible parts: no pixel belongs to two objects
    assert (masks.reshape(len(masks), -1).sum(1) >= scenes.PARAMS["min_visible_pixels"] // 2).all()


def test_object_sizes_follow_coco_shares():
    areas = np.array([m.sum() for i in range(40) for _, m in scenes.generate_scene("train", i)[1]])
    for name, low, high in SIZE_BUCKETS:
        share = ((areas >= low) & (areas < high)).mean()
        assert abs(share - scenes.SIZE_SHARES[name]) < 0.1, (name, share)


def test_shorter_split_is_a_prefix_and_generation_is_lazy(fresh_cache):
    try:
        names = scenes.register_scenes(prefix="t_scenes", num_images={"train": 2, "val": 3})
        assert names == ["t_scenes_train", "t_scenes_val"]
        scenes.register_scenes(prefix="t_scenes", num_images={"train": 2, "val": 3})  # same: a no-op
        with pytest.raises(DatasetError, match="already registered"):
            scenes.register_scenes(prefix="t_scenes", num_images={"val": 4})
        assert not (fresh_cache / "scenes").exists()  # registering generates nothing
        dicts = DatasetCatalog.get("t_scenes_val")
        assert len(dicts) == 3
        split_dir = scenes.scenes_split_dir("val", params=scenes.scene_params({"train": 2, "val": 3}))
        coco = json.loads((split_dir / "instances.json").read_text())
        assert coco["info"]["params_hash"] != scenes.params_hash()  # its own folder, never the default's
        _, objects = scenes.generate_scene("val", 2)  # image 2 of any longer split is the same image
        anns = [a for a in coco["annotations"] if a["image_id"] == 3]
        assert len(anns) == sum(m.any() for _, m in objects)
        for ann, (cls_id, mask) in zip(anns, [(c, m) for c, m in objects if m.any()]):
            rle = dict(ann["segmentation"], counts=ann["segmentation"]["counts"].encode())
            assert ann["category_id"] == cls_id + 1 and np.array_equal(mask_util.decode(rle).astype(bool), mask)
        assert not (split_dir.parent / "train").exists()  # only what was read
    finally:
        unregister("t_scenes_train")
        unregister("t_scenes_val")


def test_unknown_split_is_refused():
    with pytest.raises(KeyError, match="no split 'test'"):
        scenes.scene_params({"test": 3})
