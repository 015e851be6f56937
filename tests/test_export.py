"""box2seg export: COCO pseudo-masks per box, fallbacks, shards + merge, resume after SIGKILL."""
import argparse
import json
import os
import signal
import subprocess
import sys
import time
import uuid

import box2seg  # noqa: F401  (first)
import cv2
import numpy as np
import pycocotools.mask as mask_util
import pytest
import torch
from detectron2.modeling import build_model

from box2seg.cli import add_coco_dataset_argument
from box2seg.data.datasets.common import unregister
from box2seg.evaluation.instance_iou import annotation_mask
from box2seg.evaluation.score import score_files
from box2seg.export import (ExportError, add_arguments, export_dataset, fill_empty_masks, main, merge_shards,
                            parse_shard, setup_cfg)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = os.path.join(REPO, "configs", "tests", "box2seg_tiny.yaml")
SIZE = 64
CATEGORY_IDS = (9, 2, 5)  # dataset ids, deliberately unsorted: contiguous 0 = id 2, 1 = id 5, 2 = id 9


def _poly(x0, y0, x1, y1, kind):
    if kind == "tri":
        return [x0, y1, (x0 + x1) / 2, y0, x1, y1]
    return [x0, y0, x1, y0, x1, y1, x0, y1]


def make_coco(root, num_images=5, invalid_box=False):
    """A tiny COCO dataset: black images, objects drawn from their own rasterised polygons in a colour per
    class (RGB channel = contiguous class), boxes = polygon extent + 1 px. Annotations listed in shuffled
    order with non-sequential ids; image 0 has a crowd region (RLE, not drawn)."""
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
            mask = annotation_mask([poly], SIZE, SIZE)
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
    if invalid_box:
        anns.append({"id": 3, "image_id": 101, "category_id": 2, "bbox": [5.0, 5.0, 0.0, 4.0], "iscrowd": 0})
    order = rng.permutation(len(anns))
    data = {"info": {"description": "box2seg export test"}, "licenses": [{"id": 1, "name": "test"}],
            "images": images, "annotations": [anns[k] for k in order],
            "categories": [{"id": c, "name": f"class{c}", "supercategory": "x"} for c in CATEGORY_IDS]}
    (root / "instances.json").write_text(json.dumps(data))
    return root / "instances.json", root / "images"


@pytest.fixture(scope="module")
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


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("coco")
    json_file, image_root = make_coco(root, num_images=5, invalid_box=True)
    name = f"export_test_{uuid.uuid4().hex[:8]}"
    spec = f"{name}={json_file}:{image_root}"
    yield name, spec, json_file
    unregister(name)


def _cfg(spec, name, weights, *extra):
    return setup_cfg(CONFIG, ["MODEL.DEVICE", "cpu", "MODEL.WEIGHTS", weights, *extra], name, [spec])


@pytest.fixture(scope="module")
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


def _oracle_probs(images):
    """One-hot class probabilities read from the colour: background black, class c in RGB channel c."""
    x = images.tensor  # normalised: black -> -1, 255 -> +1, padding 0
    fg = x > 0.5
    probs = torch.cat([(~fg.any(1, keepdim=True)).float(), fg.float()], dim=1)
    return probs / probs.sum(1, keepdim=True)


def _model(cfg, class_probs):
    torch.manual_seed(0)
    model = build_model(cfg)
    model.eval()
    model._class_probs = class_probs  # the real inference and box-conditioned code runs on these scores
    return model


# ----------------------------------------------------------------------------------------------------------


def test_fill_empty_masks_grabcut_then_ellipse():
    masks = np.zeros((4, 20, 20), bool)
    masks[0, 2:5, 2:5] = True
    boxes = np.array([[0, 0, 10, 10], [10, 0, 20, 10], [0, 10, 12, 20], [10, 10, 20, 20]], float)
    crowd = np.array([False, False, False, True])
    instance_map = np.zeros((20, 20), np.uint16)
    instance_map[1:9, 11:19] = 2  # box 1's GrabCut; box 2 has none left
    calls = []
    out, sources = fill_empty_masks(masks, boxes, crowd, lambda: calls.append(1) or instance_map)
    assert sources.tolist() == [0, 1, 2, -1] and calls == [1]
    assert (out[0] == masks[0]).all() and (out[1] == (instance_map == 2)).all()
    assert out[2].any() and not out[2][:10].any() and not out[2][:, 12:].any()  # the ellipse, inside its box
    assert not out[3].any()
    # Nothing empty: the GrabCut map is never read.
    _, sources = fill_empty_masks(masks[:1], boxes[:1], crowd[:1], lambda: pytest.fail("read"))
    assert sources.tolist() == [0]


def test_parse_shard_and_cli_errors(capsys):
    assert parse_shard("2/5") == (2, 5)
    for bad in ("5/5", "1", "-1/2", "a/b", "0/0"):
        with pytest.raises(ExportError, match="I/N"):
            parse_shard(bad)
    parser = argparse.ArgumentParser()
    add_coco_dataset_argument(parser)
    add_arguments(parser)
    assert main(parser.parse_args(["--merge", "x", "--dataset", "d"])) == 2
    assert "--merge DIR takes no other option" in capsys.readouterr().out
    assert main(parser.parse_args(["--dataset", "d"])) == 2
    assert "missing --config-file, --output" in capsys.readouterr().out


def test_box_conditioned_export_is_coco_and_scores_perfectly(tmp_path, weights):
    json_file, image_root = make_coco(tmp_path / "data", num_images=3)
    name = f"export_oracle_{uuid.uuid4().hex[:8]}"
    cfg = _cfg(f"{name}={json_file}:{image_root}", name, weights[0])
    try:
        summary = export_dataset(cfg, name, tmp_path / "out", progress=False, model=_model(cfg, _oracle_probs))
    finally:
        unregister(name)
    source = json.loads(json_file.read_text())
    pred = json.loads((tmp_path / "out" / "pseudo_masks.json").read_text())
    assert {k: v for k, v in pred.items() if k != "annotations"} == {k: v for k, v in source.items()
                                                                       if k != "annotations"}
    assert [a["id"] for a in pred["annotations"]] == [a["id"] for a in source["annotations"]]
    for src, out in zip(source["annotations"], pred["annotations"]):
        if src["iscrowd"]:
            assert out == src  # copied through unchanged
            continue
        assert out["bbox"] == src["bbox"] and out["category_id"] == src["category_id"]
        assert out["image_id"] == src["image_id"] and out["extra_field"] == src["extra_field"]
        assert out["mask_source"] == "box2seg" and out["iscrowd"] == 0
        mask = mask_util.decode(out["segmentation"]).astype(bool)
        assert out["area"] == mask.sum() and (mask == annotation_mask(src["segmentation"], SIZE, SIZE)).all()
    assert summary["box2seg"] == summary["boxes"] == len(source["annotations"]) - 1 and summary["crowd"] == 1
    assert summary["grabcut"] == summary["ellipse"] == 0 and summary["not_exported"] == 0
    # The semantic PNG: argmax of sem_seg, named by image id.
    labels = cv2.imread(str(tmp_path / "out" / "labels" / "100.png"), cv2.IMREAD_UNCHANGED)
    image = cv2.imread(str(image_root / "img0.png"))
    assert labels.dtype == np.uint8 and labels.shape == (SIZE, SIZE)
    assert (labels == np.where(image.any(2), 3 - image.argmax(2), 0)).all()
    results = score_files(json_file, tmp_path / "out" / "pseudo_masks.json")
    assert results["instance"]["mIoU"] == 1.0 and results["semantic_mIoU"] == 1.0


def test_empty_masks_fall_back_to_grabcut_computed_on_demand(tmp_path, weights, fresh_cache):
    from detectron2.data import DatasetCatalog

    from box2seg.data.grabcut import GrabCutSettings
    from box2seg.data.grabcut_job import prepare_dataset

    json_file, image_root = make_coco(tmp_path / "data", num_images=2)
    name = f"export_bg_{uuid.uuid4().hex[:8]}"
    spec = f"{name}={json_file}:{image_root}"
    background = lambda images: torch.nn.functional.one_hot(  # noqa: E731  (everything background)
        torch.zeros_like(images.tensor[:, 0], dtype=torch.long), 4).permute(0, 3, 1, 2).float()
    try:
        strict = _cfg(spec, name, weights[0], "BOX2SEG.GRABCUT.PREPARE_IF_MISSING", "False")
        with pytest.raises(ExportError, match=f"box2seg prepare-grabcut --dataset {name}"):
            export_dataset(strict, name, tmp_path / "strict", progress=False, model=_model(strict, background))
        cfg = _cfg(spec, name, weights[0])
        summary = export_dataset(cfg, name, tmp_path / "out", progress=False, model=_model(cfg, background))
        assert summary["box2seg"] == 0 and summary["grabcut"] + summary["ellipse"] == summary["boxes"] > 0
        assert summary["grabcut"] > 0 and summary["grabcut_computed"] == 2
        # The on-demand maps are the cache's own files: prepare-grabcut finds them all done.
        done = prepare_dataset(name, DatasetCatalog.get(name), GrabCutSettings.from_config(cfg), progress=False)
        assert done["computed"] == 0 and done["reused"] == 2
    finally:
        unregister(name)
    pred = json.loads((tmp_path / "out" / "pseudo_masks.json").read_text())
    sources = [a.get("mask_source") for a in pred["annotations"] if not a["iscrowd"]]
    assert sources.count("grabcut") == summary["grabcut"]
    assert all(a["area"] > 0 for a in pred["annotations"] if not a["iscrowd"])


def test_shards_merge_to_the_unsharded_bytes(dataset, weights, reference, tmp_path):
    name, spec, json_file = dataset
    ref_dir, ref_summary = reference
    assert ref_summary["not_exported"] == 1  # the zero-width box the loader skipped
    assert ref_summary["box2seg"] + ref_summary["grabcut"] + ref_summary["ellipse"] == ref_summary["boxes"]
    assert ref_summary["crowd"] == 1
    out = tmp_path / "sharded"
    cfg = _cfg(spec, name, weights[0])
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        first = export_dataset(cfg, name, out, shard=(0, 2), progress=False)
        assert first["images"] == 3 and not (out / "pseudo_masks.json").exists()
        with pytest.raises(ExportError, match="missing shard"):
            merge_shards(out)
        with pytest.raises(ExportError, match="weights_sha1"):  # another model into the same folder
            export_dataset(_cfg(spec, name, weights[1]), name, out, shard=(1, 2), progress=False)
        export_dataset(cfg, name, out, shard=(1, 2), progress=False)
    finally:
        torch.set_num_threads(threads)
    merged = merge_shards(out)
    assert merged["images"] == 5 and merged["boxes"] == ref_summary["boxes"]
    assert (out / "pseudo_masks.json").read_bytes() == (ref_dir / "pseudo_masks.json").read_bytes()
    # A shard of another split in the folder is refused, naming both N.
    (out / "shards" / "shard-00000-of-00003.json").write_text("{}")
    with pytest.raises(ExportError, match="different N"):
        merge_shards(out)


_RUNNER = """
import sys, time
import box2seg
from box2seg.data import mapper as m
delay = float(sys.argv[1])
if delay:
    call = m.Box2SegDatasetMapper.__call__
    m.Box2SegDatasetMapper.__call__ = lambda self, d: (time.sleep(delay), call(self, d))[1]
import argparse
from box2seg.cli import add_coco_dataset_argument
from box2seg.export import add_arguments, main
parser = argparse.ArgumentParser()
add_coco_dataset_argument(parser)
add_arguments(parser)
sys.exit(main(parser.parse_args(sys.argv[2:])))
"""


def test_killed_export_resumes_to_the_same_result(dataset, weights, reference, tmp_path):
    name, spec, _ = dataset
    ref_dir, _ = reference
    out = tmp_path / "killed"
    argv = ["--coco-dataset", spec, "--config-file", CONFIG, "--dataset", name, "--output", str(out),
            "--no-progress", "MODEL.DEVICE", "cpu", "MODEL.WEIGHTS", weights[0]]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-c", _RUNNER, "1.0", *argv], env=env, cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.time() + 120
        while time.time() < deadline and proc.poll() is None:
            parts = list((out / "parts").glob("*.json")) if (out / "parts").is_dir() else []
            if len(parts) >= 2:
                break
            time.sleep(0.05)
        assert proc.poll() is None, proc.stdout.read().decode()[-3000:]
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    done = len(list((out / "parts").glob("*.json")))
    assert 2 <= done < 5 and not (out / "pseudo_masks.json").exists()
    result = subprocess.run([sys.executable, "-c", _RUNNER, "0", *argv], env=env, cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=300)
    log = result.stdout.decode()
    assert result.returncode == 0, log[-3000:]
    assert f"({5 - done} computed, {done} reused)" in log
    assert (out / "pseudo_masks.json").read_bytes() == (ref_dir / "pseudo_masks.json").read_bytes()
    for png in (ref_dir / "labels").glob("*.png"):
        assert (out / "labels" / png.name).read_bytes() == png.read_bytes()
    leftovers = [p for p in out.rglob("*") if ".tmp" in p.name]
    assert not leftovers, leftovers


def test_datasets_without_a_source_json_get_a_header_from_their_records():
    from detectron2.data import Metadata
    from detectron2.structures import BoxMode

    from box2seg.export import _Source

    meta = Metadata(name="x", thing_classes=["cat", "dog"], thing_dataset_id_to_contiguous_id={"n01": 0, "n02": 1})

    def make(box, category, crowd, ann_id):
        return {"bbox": box, "bbox_mode": BoxMode.XYXY_ABS, "category_id": category, "iscrowd": crowd, "id": ann_id}

    dicts = [
        {"file_name": "/data/voc/JPEGImages/a.jpg", "image_id": "a", "height": 10, "width": 20, "annotations": [
            make([1.0, 2.0, 5.5, 9.0], 1, 0, "a/0"), make([0.0, 0.0, 4.0, 4.0], 0, 1, "a/1")]},
        {"file_name": "/data/voc/JPEGImages/sub/b.jpg", "image_id": "b", "height": 8, "width": 8, "annotations": [
            make([0.1, 0.2, 0.4, 0.7], 0, 0, "b/0")]},
    ]
    source = _Source("x", dicts, meta)
    assert source.header["images"] == [{"id": "a", "file_name": "a.jpg", "height": 10, "width": 20},
                                       {"id": "b", "file_name": "sub/b.jpg", "height": 8, "width": 8}]
    assert source.header["categories"] == [{"id": "n01", "name": "cat"}, {"id": "n02", "name": "dog"}]
    order, ann = source.annotation(0, dicts[0], 0, {"size": [10, 20], "counts": "x"}, 7, "grabcut")
    assert order == 0 and ann == {"id": "a/0", "image_id": "a", "bbox": [1.0, 2.0, 4.5, 7.0], "category_id": "n02",
                                  "iscrowd": 0, "segmentation": {"size": [10, 20], "counts": "x"}, "area": 7,
                                  "mask_source": "grabcut"}
    order, ann = source.annotation(0, dicts[0], 1)
    assert order == 1 and ann["iscrowd"] == 1 and ann["area"] == 16.0 and "segmentation" not in ann
    order, ann = source.annotation(1, dicts[1], 0, {}, 0, "ellipse")
    assert order == 2 and ann["bbox"] == [0.1, 0.2, 0.3, 0.5]
