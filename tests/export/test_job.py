"""export.job: COCO pseudo-masks per box that score perfectly with an oracle model, shard parsing, and a
run killed with SIGKILL resuming to the uninterrupted run's bytes."""
import json
import os
import signal
import subprocess
import sys
import time
import uuid

import cv2
import numpy as np
import pycocotools.mask as mask_util
import pytest
import torch

from box2seg.data.datasets.common import unregister
from box2seg.evaluation.score import score_files
from box2seg.export import ExportError, export_dataset, parse_shard
from box2seg.structures import decode_segmentation

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CONFIG = os.path.join(REPO, "configs", "tests", "box2seg_tiny.yaml")
SIZE = 64


def _oracle_probs(images):
    """One-hot class probabilities read from the colour: background black, class c in RGB channel c."""
    x = images.tensor  # normalised: black -> -1, 255 -> +1, padding 0
    fg = x > 0.5
    probs = torch.cat([(~fg.any(1, keepdim=True)).float(), fg.float()], dim=1)
    return probs / probs.sum(1, keepdim=True)


def test_parse_shard():
    assert parse_shard("2/5") == (2, 5)
    for bad in ("5/5", "1", "-1/2", "a/b", "0/0"):
        with pytest.raises(ExportError, match="I/N"):
            parse_shard(bad)


def test_box_conditioned_export_is_coco_and_scores_perfectly(tmp_path, weights, make_coco, export_cfg,
                                                            scored_model):
    json_file, image_root = make_coco(tmp_path / "data", num_images=3)
    name = f"export_oracle_{uuid.uuid4().hex[:8]}"
    cfg = export_cfg(f"{name}={json_file}:{image_root}", name, weights[0])
    try:
        summary = export_dataset(cfg, name, tmp_path / "out", progress=False, model=scored_model(cfg, _oracle_probs))
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
        assert out["area"] == mask.sum() and (mask == decode_segmentation(src["segmentation"], SIZE, SIZE)).all()
    assert summary["box2seg"] == summary["boxes"] == len(source["annotations"]) - 1 and summary["crowd"] == 1
    assert summary["grabcut"] == summary["ellipse"] == 0 and summary["not_exported"] == 0
    # The semantic PNG: argmax of sem_seg, named by image id.
    labels = cv2.imread(str(tmp_path / "out" / "labels" / "100.png"), cv2.IMREAD_UNCHANGED)
    image = cv2.imread(str(image_root / "img0.png"))
    assert labels.dtype == np.uint8 and labels.shape == (SIZE, SIZE)
    assert (labels == np.where(image.any(2), 3 - image.argmax(2), 0)).all()
    results = score_files(json_file, tmp_path / "out" / "pseudo_masks.json")
    assert results["instance"]["mIoU"] == 1.0 and results["semantic_mIoU"] == 1.0


# `box2seg export ...` (the real dispatcher) in a subprocess, each image slowed down by argv[1] seconds so it can be killed mid-run.
_RUNNER = """
import sys, time
import box2seg
from box2seg.data import mapper as m
delay = float(sys.argv[1])
if delay:
    call = m.Box2SegDatasetMapper.__call__
    m.Box2SegDatasetMapper.__call__ = lambda self, d: (time.sleep(delay), call(self, d))[1]
from box2seg.cli import main
sys.exit(main(["export", *sys.argv[2:]]))
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


def test_images_without_annotations_export_with_a_label_png_and_resume(tmp_path, weights, make_coco, export_cfg,
                                                                      scored_model):
    """An image without annotations (COCO train2017 has about 1,000) exports no annotations and a label PNG;
    the run finishes and a rerun reuses every image."""
    json_file, image_root = make_coco(tmp_path / "data", num_images=2, empty_images=2)
    name = f"export_empty_{uuid.uuid4().hex[:8]}"
    cfg = export_cfg(f"{name}={json_file}:{image_root}", name, weights[0])
    try:
        summary = export_dataset(cfg, name, tmp_path / "out", progress=False, model=scored_model(cfg, _oracle_probs))
        again = export_dataset(cfg, name, tmp_path / "out", progress=False, model=scored_model(cfg, _oracle_probs))
    finally:
        unregister(name)
    source = json.loads(json_file.read_text())
    pred = json.loads((tmp_path / "out" / "pseudo_masks.json").read_text())
    assert summary["images"] == 4 and summary["not_exported"] == 0
    assert [a["id"] for a in pred["annotations"]] == [a["id"] for a in source["annotations"]]
    assert not [a for a in pred["annotations"] if a["image_id"] in (102, 103)]
    for image_id in (102, 103):
        labels = cv2.imread(str(tmp_path / "out" / "labels" / f"{image_id}.png"), cv2.IMREAD_UNCHANGED)
        assert labels.shape == (SIZE, SIZE) and (labels == 0).all()  # black image: background
        part = json.loads((tmp_path / "out" / "parts" / f"{image_id}.json").read_text())
        assert part["annotations"] == [] and part["stats"]["boxes"] == 0
    assert again["computed"] == 0 and again["reused"] == 4
