"""The GrabCut job (box2seg.data.grabcut_job): identical bytes for any worker count and after a resume; clear
errors for bad images; the written cache is what attach/load read. A SIGKILL in the middle of a run is in
tests/commands/test_prepare_grabcut.py (it needs the job in a process of its own)."""
import box2seg  # noqa: F401  (compat fixes before any detectron2 import)

import json
import os
import time
from concurrent.futures import wait
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

import cv2
import numpy as np
import pytest
from detectron2.data import DatasetCatalog

from box2seg.data import grabcut as G
from box2seg.data import grabcut_job
from box2seg.data.grabcut_job import GrabCutJobError, prepare_dataset


def test_workers_and_resume_give_identical_bytes(tmp_path, scenes, monkeypatch, registered, folder_bytes):
    name = registered(scenes(tmp_path / "images", 8))
    monkeypatch.setenv("BOX2SEG_CACHE", str(tmp_path / "one"))
    one = prepare_dataset(name, workers=1, progress=False)
    monkeypatch.setenv("BOX2SEG_CACHE", str(tmp_path / "two"))
    two = prepare_dataset(name, workers=2, progress=False)
    assert one["computed"] == two["computed"] == 8 and one["reused"] == 0
    files = folder_bytes(one["folder"])
    assert len(files) == 10 and "summary.json" in files  # 8 maps + summary + the manifest
    assert files == folder_bytes(two["folder"])

    # Resume: remove three maps (and the summary); the re-run computes exactly those, same bytes.
    for victim in sorted(Path(two["folder"]).glob("*.png"))[::3]:
        victim.unlink()
    (Path(two["folder"]) / "summary.json").unlink()
    again = prepare_dataset(name, workers=2, progress=False)
    assert (again["computed"], again["reused"]) == (3, 5)
    assert folder_bytes(again["folder"]) == files
    assert prepare_dataset(name, workers=1, progress=False)["computed"] == 0

    summary = json.loads(files["summary.json"])
    assert summary["images"] == 8 and summary["crowd_boxes"] == 3 and summary["boxes"] == one["boxes"]
    assert set(summary["per_class"]) <= {"a", "b", "c"} and 0 < summary["mean_filling_rate"] <= 1

    # What the job wrote is what training reads.
    dicts = DatasetCatalog.get(name)
    G.attach_grabcut_files(name, dicts, G.GrabCutSettings())
    inst = G.load_instance_map(dicts[0])
    assert inst.shape == (96, 112) and (inst == G.IGNORE_INDEX).any()  # image 0 has a crowd box


def test_bad_image_is_named_or_skipped(tmp_path, scenes, fresh_cache, registered):
    dicts = scenes(tmp_path / "images", 3)
    os.remove(dicts[1]["file_name"])
    name = registered(dicts)
    with pytest.raises(RuntimeError, match="cannot read image .*scene_001.png.*--skip-bad-images"):
        prepare_dataset(name, workers=1, progress=False)
    result = prepare_dataset(name, workers=1, progress=False, skip_bad_images=True)
    # image 0 was written before the first run stopped at image 1
    assert (result["computed"], result["reused"]) == (1, 1) and result["bad_images"] == [dicts[1]["file_name"]]
    with pytest.raises(FileNotFoundError, match="1 of 3 images"):
        G.attach_grabcut_files(name, DatasetCatalog.get(name), G.GrabCutSettings())


def test_truncated_jpeg_is_named_and_skipped(tmp_path, scenes, fresh_cache, registered):
    """Issue 13 item 3: cv2 decoded the readable half of a truncated JPEG, so it passed silently."""
    dicts = scenes(tmp_path / "images", 3)
    cut = tmp_path / "images" / "cut.jpg"
    cv2.imwrite(str(cut), cv2.imread(dicts[1]["file_name"]))
    data = cut.read_bytes()
    cut.write_bytes(data[: len(data) // 2])
    dicts[1]["file_name"] = str(cut)
    grey16 = tmp_path / "images" / "grey16.png"  # a 16-bit grey PNG is read (scaled), not refused
    cv2.imwrite(str(grey16), cv2.cvtColor(cv2.imread(dicts[2]["file_name"]), cv2.COLOR_BGR2GRAY).astype(np.uint16) * 257)
    dicts[2]["file_name"] = str(grey16)
    name = registered(dicts)
    with pytest.raises(RuntimeError, match="cannot read image .*cut.jpg: truncated.*--skip-bad-images"):
        prepare_dataset(name, workers=1, progress=False)
    result = prepare_dataset(name, workers=1, progress=False, skip_bad_images=True)
    assert result["bad_images"] == [str(cut)] and result["computed"] + result["reused"] == 2


def test_preparing_beside_a_cache_of_other_settings_says_so(tmp_path, scenes, fresh_cache, registered, caplog):
    """Issue 13 item 7: training (PREPARE_IF_MISSING) with other settings than prepare-grabcut's."""
    name = registered(scenes(tmp_path / "images", 2))
    first = prepare_dataset(name, settings=G.GrabCutSettings(core=0), workers=1, progress=False)
    with caplog.at_level("WARNING", logger="box2seg.data.grabcut"):
        prepare_dataset(name, settings=G.GrabCutSettings(), workers=1, progress=False)
    (warning,) = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert "are computed now (2 images)" in warning and first["folder"] in warning
    assert "core=0.45" in warning and "core=0.0" in warning
    assert f"box2seg prepare-grabcut --dataset {name}\n" in warning


def test_worker_count_respects_available_memory(tmp_path, scenes, fresh_cache, registered, monkeypatch, caplog):
    """Issue 13 item 4: 5 GiB available at 2 GiB per worker -> 2 workers, and the log says so."""
    monkeypatch.setattr(grabcut_job, "available_memory", lambda: 5 * 2**30)
    with caplog.at_level("WARNING", logger="box2seg.data.grabcut_job"):
        assert grabcut_job.memory_bounded_workers(8) == 2
        assert grabcut_job.memory_bounded_workers(2) == 2
    (line,) = [r.getMessage() for r in caplog.records]
    assert "8 workers asked for" in line and "5.0 GiB" in line and "using 2 workers" in line
    monkeypatch.setattr(grabcut_job, "available_memory", lambda: 2**30)
    assert grabcut_job.memory_bounded_workers(4) == 1
    # The job uses it: one worker left -> it runs in this process, same bytes.
    seen = []
    monkeypatch.setattr(grabcut_job, "_run_pool", lambda *a: seen.append(a) or [])
    name = registered(scenes(tmp_path / "images", 2))
    assert prepare_dataset(name, workers=4, progress=False)["computed"] == 2 and not seen


def test_stalled_pool_after_a_killed_worker_fails_instead_of_hanging(tmp_path, scenes, fresh_cache, registered,
                                                                    monkeypatch):
    """A CI run hung after a worker was SIGKILLed: the executor never reported the rest of its futures. The
    job watches its workers itself: once one has died, futures still unreported after a grace period are
    counted lost (retried once in a fresh pool, then named in the error)."""
    def stalled_wait(futures, timeout=None, return_when=None):  # the executor "forgets" broken futures
        done, pending = wait(futures, timeout=timeout, return_when=return_when)
        hidden = {f for f in done if isinstance(f.exception(), BrokenProcessPool)}
        if hidden and done == hidden:
            time.sleep(timeout or 0)
        return done - hidden, pending | hidden

    monkeypatch.setattr(grabcut_job, "wait", stalled_wait)
    monkeypatch.setattr(grabcut_job, "_BROKEN_POOL_GRACE_S", 1.0)
    monkeypatch.setenv(grabcut_job._KILL_ENV, "scene_001")  # spawn: the workers see this environment
    name = registered(scenes(tmp_path / "images", 3))
    start = time.monotonic()
    with pytest.raises(GrabCutJobError, match="workers died twice") as error:
        prepare_dataset(name, workers=2, progress=False, start_method="spawn")
    assert "scene_001" in str(error.value) and time.monotonic() - start < 120


class _LeavesATemporary(grabcut_job.LocalEngine):
    """A worker killed mid-write after the job's start-up sweep: its ``atomic_path`` temporary stays behind
    (SIGKILL, or the SIGTERM a broken executor sends its other workers, skips every cleanup)."""

    def __init__(self, fail):
        self.fail = fail

    def run(self, pending, task, workers, collect, dataset_name, describe, start_method=None):
        folder = Path(task(pending[0])[3]).parent
        (folder / f".{Path(task(pending[0])[3]).stem}.k1ll3d.tmp.png").write_bytes(b"")
        (folder / ".elsewhere.k1ll3d.tmp.png").write_bytes(b"")  # not this job's file: left alone
        if self.fail:
            raise GrabCutJobError("workers died twice")
        super().run(pending, task, 1, collect, dataset_name, describe)


@pytest.mark.parametrize("fail", [False, True])
def test_temporaries_of_killed_workers_are_swept_when_the_job_ends(tmp_path, scenes, fresh_cache, registered,
                                                                  fail):
    """A fresh-clone run failed its byte-identical check on one stray ``.N.xxxx.tmp.png``: the temporaries a
    killed worker leaves are removed when the job ends (done or failed), not only when the next one starts."""
    name = registered(scenes(tmp_path / "images", 2))
    if fail:
        with pytest.raises(GrabCutJobError):
            prepare_dataset(name, workers=1, progress=False, engine=_LeavesATemporary(fail))
    else:
        assert prepare_dataset(name, workers=1, progress=False, engine=_LeavesATemporary(fail))["computed"] == 2
    (folder,) = Path(os.environ["BOX2SEG_CACHE"]).glob("grabcut/*")
    assert sorted(p.name for p in folder.glob(".*.tmp.png")) == [".elsewhere.k1ll3d.tmp.png"]
