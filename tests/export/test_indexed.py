"""export.indexed and export.shards: the streamed, indexed COCO JSON has the in-memory dumps' bytes; its index
finds every entry and refuses a changed file; the lazy training set over shard files, a shard folder or the
merged export gives detectron2's load_coco_json dicts, without parsing the JSON whole; a sharded export merges
to the unsharded bytes."""
import json
import pickle
import uuid

import numpy as np
import pytest
import torch
from detectron2.config import get_cfg
from detectron2.data import DatasetCatalog, MetadataCatalog, build_detection_train_loader
from detectron2.data.datasets import load_coco_json

from box2seg.export import ExportError, export_dataset, merge_shards
from box2seg.export.folder import dumps
from box2seg.export.indexed import CocoIndex, index_path, write_indexed_coco
from box2seg.export.shards import (IndexedCocoDataset, is_indexed, pseudo_mask_classes, pseudo_mask_dataset,
                                   register_pseudo_masks, resolve_pseudo_mask_files)


def _doc():
    images = [{"id": 7, "file_name": "a.png", "height": 4, "width": 5}, {"id": 8, "file_name": "b é.png",
                                                                          "height": 4, "width": 5}]
    rle = {"size": [4, 5], "counts": "0b1"}
    anns = [{"id": 3, "image_id": 8, "category_id": 9, "bbox": [0.5, 1.0, 2.0, 2.0], "iscrowd": 0,
             "segmentation": rle, "area": 3},
            {"id": 1, "image_id": 7, "category_id": 2, "bbox": [0.0, 0.0, 1.0, 1.0], "iscrowd": 1,
             "segmentation": {"size": [4, 5], "counts": [0, 2, 18]}, "area": 2},
            {"id": 2, "image_id": 7, "category_id": 9, "bbox": [1.0, 1.0, 3.0, 2.0], "iscrowd": 0,
             "segmentation": rle, "area": 3}]
    return {"info": {"v": 1}, "images": images, "annotations": anns,
            "categories": [{"id": 9, "name": "nine"}, {"id": 2, "name": "two"}]}


def _write(path, doc):
    image_of = {img["id"]: k for k, img in enumerate(doc["images"])}
    return write_indexed_coco(path, list(doc.items()), ((k, dumps(img)) for k, img in enumerate(doc["images"])),
                              ((10 * k, image_of[a["image_id"]], a["iscrowd"], dumps(a))
                               for k, a in enumerate(doc["annotations"])), {"extra": 1})


def test_streamed_file_is_the_dumps_bytes_and_the_index_finds_every_entry(tmp_path):
    doc = _doc()
    meta = _write(tmp_path / "x.json", doc)
    assert (tmp_path / "x.json").read_bytes() == dumps(doc)
    assert meta["num_images"] == 2 and meta["num_annotations"] == 3 and meta["extra"] == 1
    index = CocoIndex(tmp_path / "x.json")
    blob = (tmp_path / "x.json").read_bytes()
    for k, ann in enumerate(doc["annotations"]):
        offset, length = index.ann_offset[k], index.ann_length[k]
        assert json.loads(blob[offset:offset + length]) == ann and index.ann_order[k] == 10 * k
    assert index.ann_image.tolist() == [1, 0, 0] and index.ann_crowd.tolist() == [False, True, False]
    assert index.meta["categories"] == doc["categories"]
    (tmp_path / "x.json").write_bytes(blob + b" ")
    with pytest.raises(ExportError, match="JSON changed since"):
        CocoIndex(tmp_path / "x.json")
    index_path(tmp_path / "x.json").unlink()
    with pytest.raises(ExportError, match="index .* is missing"):
        CocoIndex(tmp_path / "x.json")


def test_lazy_dataset_gives_load_coco_json_dicts(tmp_path):
    doc = _doc()
    _write(tmp_path / "x.json", doc)
    name = f"indexed_{uuid.uuid4().hex[:8]}"
    try:
        expected = load_coco_json(str(tmp_path / "x.json"), "/images", dataset_name=name)
        assert MetadataCatalog.get(name).thing_classes == ["two", "nine"]
    finally:
        MetadataCatalog.remove(name)
    lazy = IndexedCocoDataset([tmp_path / "x.json"], "/images")
    got = [lazy[k] for k in range(len(lazy))]
    keys = ("bbox", "bbox_mode", "category_id", "iscrowd", "segmentation")
    assert len(got) == len(expected) == 2
    for want, have in zip(sorted(expected, key=lambda r: r["image_id"]), sorted(got, key=lambda r: r["image_id"])):
        assert {k: want[k] for k in ("file_name", "height", "width", "image_id")} == \
            {k: have[k] for k in ("file_name", "height", "width", "image_id")}
        assert [{k: a[k] for k in keys} for a in want["annotations"]] == \
            [{k: a[k] for k in keys} for a in have["annotations"]]
    crowd = [a for r in got for a in r["annotations"] if a["iscrowd"]][0]
    assert isinstance(crowd["segmentation"]["counts"], bytes)  # uncompressed RLE compressed, as detectron2 does
    assert lazy.thing_classes == ["two", "nine"] and len(IndexedCocoDataset([tmp_path / "x.json"], "/i",
                                                                            filter_empty=True)) == 2
    # Pickled into a DataLoader worker: no descriptors travel; the copy opens its own.
    lazy[0]
    copy = pickle.loads(pickle.dumps(lazy))
    assert copy._fds == {} and copy[1] == lazy[1]


def test_only_crowd_images_are_filtered(tmp_path):
    doc = _doc()
    doc["annotations"] = [a for a in doc["annotations"] if a["image_id"] == 8 or a["iscrowd"]]
    _write(tmp_path / "x.json", doc)
    assert len(IndexedCocoDataset([tmp_path / "x.json"], "/i")) == 2
    (only,) = [IndexedCocoDataset([tmp_path / "x.json"], "/i", filter_empty=True)[0]]
    assert only["image_id"] == 8


def test_sharded_export_trains_from_shards_folder_or_merged(dataset, weights, reference, tmp_path, export_cfg):
    name, spec, json_file = dataset
    ref_dir, _ = reference
    out = tmp_path / "sharded"
    cfg = export_cfg(spec, name, weights[0])
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for i in range(3):
            export_dataset(cfg, name, out, shard=(i, 3), progress=False)
    finally:
        torch.set_num_threads(threads)
    shard_files = resolve_pseudo_mask_files(out)  # no merged file yet: the shards
    assert is_indexed(out) and is_indexed(shard_files) and not is_indexed(json_file)
    assert pseudo_mask_classes(out) == (MetadataCatalog.get(name).thing_classes, True)
    assert [p.name for p in shard_files] == [f"shard-0000{i}-of-00003.json" for i in range(3)]
    for path in shard_files:  # each shard is a COCO JSON of its own images
        shard = json.loads(path.read_text())
        assert {a["image_id"] for a in shard["annotations"]} <= {img["id"] for img in shard["images"]}
    merged = merge_shards(out)
    assert (out / "pseudo_masks.json").read_bytes() == (ref_dir / "pseudo_masks.json").read_bytes()
    assert index_path(out / "pseudo_masks.json").read_bytes() == index_path(ref_dir / "pseudo_masks.json").read_bytes()
    assert resolve_pseudo_mask_files(out) == [out / "pseudo_masks.json"]

    image_root = MetadataCatalog.get(name).image_root
    want = {r["image_id"]: r for r in load_coco_json(str(out / "pseudo_masks.json"), image_root, dataset_name=name)}
    # load_coco_json filled the dataset's metadata; the lazy reader's contiguous ids are the same map
    for files in (shard_files, [out / "pseudo_masks.json"]):
        lazy = IndexedCocoDataset(files, image_root)
        assert lazy.num_annotations == merged["annotations"] and len(lazy) == len(want)
        for k in range(len(lazy)):
            have = lazy[k]
            ref = want[have["image_id"]]
            assert have["file_name"] == ref["file_name"]
            assert [(a["bbox"], a["category_id"], a["iscrowd"], a["segmentation"]) for a in have["annotations"]] \
                == [(a["bbox"], a["category_id"], a["iscrowd"], a["segmentation"]) for a in ref["annotations"]]

    train = f"pseudo_{name}"
    try:
        register_pseudo_masks(train, [out / "shards"], image_root)
        meta = MetadataCatalog.get(train)
        assert meta.thing_classes == MetadataCatalog.get(name).thing_classes
        assert len(DatasetCatalog.get(train)) == len(want)
        lazy = pseudo_mask_dataset(train)
        d2 = get_cfg()
        d2.MODEL.MASK_ON = True
        d2.INPUT.MASK_FORMAT = "bitmask"
        d2.INPUT.MIN_SIZE_TRAIN = (64,)
        d2.SOLVER.IMS_PER_BATCH = 2
        d2.DATALOADER.NUM_WORKERS = 0
        batch = next(iter(build_detection_train_loader(d2, dataset=lazy)))
        assert len(batch) == 2, batch
        for x in batch:
            assert len(x["instances"]) and x["instances"].has("gt_masks"), x
        assert np.isfinite(float(batch[0]["image"].float().mean()))
    finally:
        DatasetCatalog.remove(train)
        MetadataCatalog.remove(train)
