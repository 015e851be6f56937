"""prepare-grabcut's shards (box2seg.data.grabcut_job with ``shard=(I, N)``): shards together give the
unsharded run's bytes and the last one writes summary.json; a resume reads the shard's manifest, not the
PNGs; a shard job holds its own shard's lock only; a torn manifest line (a killed job) is ignored."""
import box2seg  # noqa: F401  (compat fixes before any detectron2 import)
from box2seg.distributed.loopback import prepare_ray_import

prepare_ray_import()  # ray_engine below imports ray: a later test's local cluster must still bind 127.0.0.1

import json  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

from box2seg.data import grabcut_job  # noqa: E402
from box2seg.data.cache import file_lock  # noqa: E402
from box2seg.data.grabcut_job import prepare_dataset  # noqa: E402
from box2seg.data.grabcut_manifest import ShardManifest, read_manifest, shard_lock_path  # noqa: E402
from box2seg.data.shards import ShardSpecError, parse_shard, shard_positions  # noqa: E402
from box2seg.distributed import grabcut_engine, ray_engine  # noqa: E402


def _maps_and_summary(folder):
    return {p.name: p.read_bytes() for p in sorted(Path(folder).iterdir()) if p.is_file() and p.name != ".lock"}


def test_parse_shard_and_positions():
    assert parse_shard("2/5") == (2, 5) and parse_shard(" 0 / 1 ") == (0, 1) and parse_shard((1, 3)) == (1, 3)
    for bad in ("5/5", "1", "-1/2", "a/b", (0, 0)):
        with pytest.raises(ShardSpecError, match="expected I/N"):
            parse_shard(bad)
    assert shard_positions(7, (1, 3)) == [1, 4]
    assert sorted(i for k in range(3) for i in shard_positions(7, (k, 3))) == list(range(7))


def test_shards_give_the_unsharded_bytes_and_the_last_writes_the_summary(tmp_path, scenes, registered,
                                                                          monkeypatch):
    name = registered(scenes(tmp_path / "images", 5))
    monkeypatch.setenv("BOX2SEG_CACHE", str(tmp_path / "whole"))
    whole = prepare_dataset(name, workers=1, progress=False)
    monkeypatch.setenv("BOX2SEG_CACHE", str(tmp_path / "sharded"))
    first = prepare_dataset(name, workers=1, progress=False, shard=(1, 2))
    folder = Path(first["folder"])
    assert first["computed"] == 2 and first["summary"] is None and not (folder / "summary.json").exists()
    assert len(list(folder.glob("*.png"))) == 2  # records 1 and 3
    second = prepare_dataset(name, workers=2, progress=False, shard=(0, 2))
    assert second["computed"] == 3 and second["summary"] == whole["summary"]
    assert _maps_and_summary(folder) == _maps_and_summary(whole["folder"])
    assert first["boxes"] + second["boxes"] == whole["boxes"]
    manifests = sorted(p.name for p in (folder / "manifests").glob("*.jsonl"))
    assert manifests == ["shard-00000-of-00002.jsonl", "shard-00001-of-00002.jsonl"]


def test_resume_reads_the_manifest_not_the_pngs(tmp_path, scenes, registered, fresh_cache, monkeypatch):
    name = registered(scenes(tmp_path / "images", 4))
    done = prepare_dataset(name, workers=1, progress=False, shard=(0, 1))
    folder = Path(done["folder"])
    reads = []
    monkeypatch.setattr(grabcut_job, "read_png_stats", lambda path: reads.append(path) or None)
    again = prepare_dataset(name, workers=1, progress=False)
    assert (again["computed"], again["reused"], reads) == (0, 4, [])
    assert again["summary"] == done["summary"]

    # A PNG the manifest does not list (a job killed between rename and append; an older cache) is read.
    manifest = ShardManifest(folder, (0, 1))
    entries = sorted(manifest.load().values(), key=lambda e: e["position"])
    manifest.compact([(e["position"], e["file"], e["stats"], None) for e in entries[1:]])
    monkeypatch.undo()
    monkeypatch.setenv("BOX2SEG_CACHE", str(fresh_cache))
    seen = []
    real = grabcut_job.read_png_stats
    monkeypatch.setattr(grabcut_job, "read_png_stats", lambda path: seen.append(Path(path).name) or real(path))
    third = prepare_dataset(name, workers=1, progress=False)
    assert (third["computed"], third["reused"], seen) == (0, 4, [entries[0]["file"]])
    assert read_manifest(manifest.path).keys() == {e["file"] for e in entries}  # compacted again, all four

    # Another split of the same folder resumes from the first split's manifest.
    monkeypatch.setattr(grabcut_job, "read_png_stats", lambda path: pytest.fail(f"read {path}"))
    other = prepare_dataset(name, workers=1, progress=False, shard=(1, 3))
    assert (other["computed"], other["reused"]) == (0, 1)


def test_a_removed_map_or_a_torn_line_is_recomputed(tmp_path, scenes, registered, fresh_cache):
    name = registered(scenes(tmp_path / "images", 3))
    done = prepare_dataset(name, workers=1, progress=False)
    folder = Path(done["folder"])
    victim = sorted(folder.glob("*.png"))[1]
    original = victim.read_bytes()
    victim.unlink()
    manifest = ShardManifest(folder, (0, 1))
    with open(manifest.path, "ab") as f:
        f.write(b'{"file": "torn')  # the half line a SIGKILL leaves
    again = prepare_dataset(name, workers=1, progress=False)
    assert (again["computed"], again["reused"]) == (1, 2) and victim.read_bytes() == original
    assert len(manifest.path.read_text().splitlines()) == 3 and again["summary"] == done["summary"]


def test_a_shard_job_holds_only_its_own_shards_lock(tmp_path, scenes, registered, fresh_cache):
    dicts = scenes(tmp_path / "images", 4)
    name = registered(dicts)
    folder = Path(prepare_dataset(name, workers=1, progress=False, shard=(0, 2))["folder"])
    with file_lock(shard_lock_path(folder, (0, 2)), blocking=False):  # shard 0/2 is "running elsewhere"
        result = prepare_dataset(name, workers=1, progress=False, shard=(1, 2))
    assert result["computed"] == 2 and result["summary"]["images"] == 4
    assert json.loads((folder / "summary.json").read_text()) == result["summary"]



def test_ray_engine_without_ray_says_how_to_install_it(monkeypatch):
    monkeypatch.setattr(ray_engine, "ray", None)
    with pytest.raises(ray_engine.RayUnavailableError, match=r"pip install -e '\.\[ray\]'"):
        grabcut_engine("ray")
    with pytest.raises(ValueError, match="unknown engine 'spark'"):
        grabcut_engine("spark")
    assert isinstance(grabcut_engine("local"), grabcut_job.LocalEngine)
