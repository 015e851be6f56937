"""``box2seg prepare-grabcut``: byte-identical cache after a SIGKILL in the middle of a run and a resume;
settings from the config overridden by the flags; an unregistered dataset is refused."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from detectron2.data import DatasetCatalog, MetadataCatalog

from box2seg.data.datasets.coco import register_coco_spec
from box2seg.data.grabcut_job import prepare_dataset

REPO = Path(__file__).resolve().parents[2]


def test_sigkill_then_resume_is_byte_identical(tmp_path, monkeypatch, coco_scenes, folder_bytes):
    n = 40
    spec = f"killme={coco_scenes(tmp_path, n)}"
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
    monkeypatch.setenv("BOX2SEG_CACHE", str(tmp_path / "clean"))
    register_coco_spec(spec)
    try:
        clean = prepare_dataset("killme", workers=1, progress=False)
    finally:
        DatasetCatalog.remove("killme")
        MetadataCatalog.remove("killme")
    assert Path(clean["folder"]).name == folder.name
    resumed = folder_bytes(folder)
    assert len(resumed) == n + 2 and resumed == folder_bytes(clean["folder"])  # maps, summary, manifest
    assert not [p.name for p in folder.iterdir() if ".tmp" in p.name]


def test_flags_override_the_config(tmp_path, fresh_cache, run, capsys, coco_scenes):
    spec = f"flags_tiny={coco_scenes(tmp_path / 'data', 2)}"
    cfg = tmp_path / "grabcut.yaml"
    cfg.write_text("GRABCUT:\n  ITERATIONS: 2\n  MIN_MARGIN: 8\n")
    assert run("prepare-grabcut", "--coco-dataset", spec, "--dataset", "flags_tiny", "--config-file", cfg,
               "--iterations", "1", "--workers", "1", "--no-progress") == 0
    line = capsys.readouterr().out.strip().splitlines()[-1]
    assert line.startswith("prepare-grabcut flags_tiny: 2 images computed, 0 reused")
    summary = json.loads((Path(line.rsplit("-> ", 1)[1]) / "summary.json").read_text())
    assert summary["settings"]["iterations"] == 1 and summary["settings"]["min_margin"] == 8
    assert run("prepare-grabcut", "--dataset", "nowhere", "--workers", "1") == 2
    err = capsys.readouterr().err
    assert "'nowhere' is not registered" in err and "--coco-dataset" in err


def test_killed_worker_does_not_hang_and_rerun_is_byte_identical(tmp_path, monkeypatch, coco_scenes, folder_bytes):
    """Issue 13 item 11: a worker SIGKILLed (as by the OOM killer) broke multiprocessing.Pool for ever. Now its
    images are retried once in a fresh pool, then the job fails naming them; a rerun resumes."""
    n = 8
    spec = f"oom={coco_scenes(tmp_path, n)}"
    cmd = [sys.executable, "-m", "box2seg.cli", "prepare-grabcut", "--coco-dataset", spec, "--dataset", "oom",
           "--workers", "2", "--no-progress"]
    env = {**os.environ, "BOX2SEG_CACHE": str(tmp_path / "killed"), "PYTHONWARNINGS": "ignore",
           "BOX2SEG_TEST_KILL_GRABCUT_WORKER": "scene_003.png"}  # killed every time: retry fails too
    failed = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    out = failed.stdout + failed.stderr
    assert failed.returncode != 0 and "workers died twice" in out and "scene_003.png" in out, out[-3000:]
    assert "retrying" in out
    folder = next((tmp_path / "killed").glob("grabcut/*"))
    assert len(list(folder.glob("*.png"))) < n and not (folder / "summary.json").exists()

    del env["BOX2SEG_TEST_KILL_GRABCUT_WORKER"]
    rerun = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stdout[-2000:] + rerun.stderr[-2000:]

    # Killed once: the retry in a fresh pool finishes the job in the same run.
    env.update({"BOX2SEG_CACHE": str(tmp_path / "once"),
                "BOX2SEG_TEST_KILL_GRABCUT_WORKER": f"scene_003.png:{tmp_path / 'killed_once'}"})
    once = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert once.returncode == 0 and "retrying" in once.stdout + once.stderr, once.stdout[-2000:] + once.stderr[-2000:]
    assert (tmp_path / "killed_once").exists()

    monkeypatch.setenv("BOX2SEG_CACHE", str(tmp_path / "clean"))
    register_coco_spec(spec)
    try:
        clean = prepare_dataset("oom", workers=1, progress=False)
    finally:
        DatasetCatalog.remove("oom")
        MetadataCatalog.remove("oom")
    assert Path(clean["folder"]).name == folder.name
    assert folder_bytes(folder) == folder_bytes(clean["folder"])
    assert folder_bytes(next((tmp_path / "once").glob("grabcut/*"))) == folder_bytes(clean["folder"])
