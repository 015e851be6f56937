"""``box2seg prepare-grabcut``: identical bytes for any worker count, after a resume and after a SIGKILL in
the middle of a run; clear errors for bad images; the written cache is what attach/load read."""
import box2seg  # noqa: F401  (compat fixes before any detectron2 import)

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import cv2
import numpy as np
import pytest
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.structures import BoxMode

from box2seg.data import grabcut as G
from box2seg.data.grabcut_job import prepare_dataset

REPO = Path(__file__).resolve().parents[2]


def _write_scenes(folder, n, size=(96, 112), seed=0):
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


def _dicts(scenes, h=96, w=112):
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


def _folder_bytes(folder):
    files = sorted(p for p in Path(folder).iterdir() if p.name != ".lock")
    return {p.name: p.read_bytes() for p in files}


def test_workers_and_resume_give_identical_bytes(tmp_path, monkeypatch, registered):
    name = registered(_dicts(_write_scenes(tmp_path / "images", 8)))
    monkeypatch.setenv("BOX2SEG_CACHE", str(tmp_path / "one"))
    one = prepare_dataset(name, workers=1, progress=False)
    monkeypatch.setenv("BOX2SEG_CACHE", str(tmp_path / "two"))
    two = prepare_dataset(name, workers=2, progress=False)
    assert one["computed"] == two["computed"] == 8 and one["reused"] == 0
    files = _folder_bytes(one["folder"])
    assert len(files) == 9 and "summary.json" in files  # 8 maps + summary
    assert files == _folder_bytes(two["folder"])

    # Resume: remove three maps (and the summary); the re-run computes exactly those, same bytes.
    for victim in sorted(Path(two["folder"]).glob("*.png"))[::3]:
        victim.unlink()
    (Path(two["folder"]) / "summary.json").unlink()
    again = prepare_dataset(name, workers=2, progress=False)
    assert (again["computed"], again["reused"]) == (3, 5)
    assert _folder_bytes(again["folder"]) == files
    assert prepare_dataset(name, workers=1, progress=False)["computed"] == 0

    summary = json.loads(files["summary.json"])
    assert summary["images"] == 8 and summary["crowd_boxes"] == 3 and summary["boxes"] == one["boxes"]
    assert set(summary["per_class"]) <= {"a", "b", "c"} and 0 < summary["mean_filling_rate"] <= 1

    # What the job wrote is what training reads.
    dicts = DatasetCatalog.get(name)
    G.attach_grabcut_files(name, dicts, G.GrabCutSettings())
    inst = G.load_instance_map(dicts[0])
    assert inst.shape == (96, 112) and (inst == G.IGNORE_INDEX).any()  # image 0 has a crowd box


def test_bad_image_is_named_or_skipped(tmp_path, fresh_cache, registered):
    dicts = _dicts(_write_scenes(tmp_path / "images", 3))
    os.remove(dicts[1]["file_name"])
    name = registered(dicts)
    with pytest.raises(RuntimeError, match="cannot read image .*scene_001.png.*--skip-bad-images"):
        prepare_dataset(name, workers=1, progress=False)
    result = prepare_dataset(name, workers=1, progress=False, skip_bad_images=True)
    # image 0 was written before the first run stopped at image 1
    assert (result["computed"], result["reused"]) == (1, 1) and result["bad_images"] == [dicts[1]["file_name"]]
    with pytest.raises(FileNotFoundError, match="1 of 3 images"):
        G.attach_grabcut_files(name, DatasetCatalog.get(name), G.GrabCutSettings())


def _coco_json(tmp_path, scenes):
    images, anns = [], []
    for i, (path, boxes, crowd) in enumerate(scenes):
        images.append({"id": i + 1, "file_name": path.name, "height": 96, "width": 112})
        for k, (b, c) in enumerate(zip(boxes, crowd)):
            anns.append({"id": len(anns) + 1, "image_id": i + 1, "category_id": 1 + k % 2, "iscrowd": c,
                         "bbox": [b[0], b[1], b[2] - b[0], b[3] - b[1]], "area": (b[2] - b[0]) * (b[3] - b[1])})
    coco = {"images": images, "annotations": anns,
            "categories": [{"id": 1, "name": "thing"}, {"id": 2, "name": "other"}]}
    path = tmp_path / "instances.json"
    path.write_text(json.dumps(coco))
    return path


def test_cli_sigkill_then_resume_is_byte_identical(tmp_path, monkeypatch):
    n = 40
    scenes = _write_scenes(tmp_path / "images", n, seed=1)
    spec = f"killme={_coco_json(tmp_path, scenes)}:{tmp_path / 'images'}"
    cmd = [sys.executable, "-m", "box2seg.cli", "prepare-grabcut", "--coco-dataset", spec, "--dataset", "killme",
           "--workers", "2", "--no-progress"]
    env = {**os.environ, "BOX2SEG_CACHE": str(tmp_path / "killed"), "PYTHONWARNINGS": "ignore"}

    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            start_new_session=True)
    written = []
    deadline = time.time() + 120
    while len(written) < 3 and proc.poll() is None and time.time() < deadline:
        time.sleep(0.01)
        written = list((tmp_path / "killed").glob("grabcut/*/*.png"))
    os.killpg(proc.pid, signal.SIGKILL)  # the job and its workers, mid-run
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, proc.stdout.read().decode()[-2000:]
    folder = written[0].parent
    assert 3 <= len(list(folder.glob("*.png"))) < n and not (folder / "summary.json").exists()

    rerun = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stdout[-2000:] + rerun.stderr[-2000:]
    line = [x for x in rerun.stdout.splitlines() if x.startswith("prepare-grabcut killme:")][0]
    assert " reused," in line and "images computed" in line and " 0 reused" not in line

    # A clean run, in this process, on the same registration.
    from box2seg.data.datasets.coco import register_coco_spec

    monkeypatch.setenv("BOX2SEG_CACHE", str(tmp_path / "clean"))
    register_coco_spec(spec)
    try:
        clean = prepare_dataset("killme", workers=1, progress=False)
    finally:
        DatasetCatalog.remove("killme")
        MetadataCatalog.remove("killme")
    assert Path(clean["folder"]).name == folder.name
    resumed = _folder_bytes(folder)
    assert len(resumed) == n + 1 and resumed == _folder_bytes(clean["folder"])
    assert not [p.name for p in folder.iterdir() if ".tmp" in p.name]
