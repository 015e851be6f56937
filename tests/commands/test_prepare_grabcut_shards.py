"""``box2seg prepare-grabcut --shard I/N``: a bad value is a usage error; two shard jobs print their shard
and the second, last to finish, writes summary.json."""
import json
from pathlib import Path

import pytest
from detectron2.data import DatasetCatalog, MetadataCatalog


def test_bad_shard_is_a_usage_error(run, capsys):
    with pytest.raises(SystemExit) as exit_info:
        run("prepare-grabcut", "--dataset", "x", "--shard", "3/3")
    assert exit_info.value.code == 2 and "expected I/N with 0 <= I < N" in capsys.readouterr().err


def test_two_shard_jobs(tmp_path, fresh_cache, run, capsys, coco_scenes):
    spec = f"sharded_tiny={coco_scenes(tmp_path / 'data', 3)}"
    try:
        base = ("prepare-grabcut", "--coco-dataset", spec, "--dataset", "sharded_tiny", "--workers", "1",
                "--no-progress", "--iterations", "1")
        assert run(*base, "--shard", "1/2") == 0
        line = capsys.readouterr().out.strip().splitlines()[-1]
        assert line.startswith("prepare-grabcut sharded_tiny shard 1/2: 1 images computed, 0 reused")
        assert "summary.json comes when every shard is done" in line
        folder = Path(line.rsplit("-> ", 1)[1])
        assert not (folder / "summary.json").exists()
        assert run(*base, "--shard", "0/2") == 0
        line = capsys.readouterr().out.strip().splitlines()[-1]
        assert line.startswith("prepare-grabcut sharded_tiny shard 0/2: 2 images computed") and "comes" not in line
        assert json.loads((folder / "summary.json").read_text())["images"] == 3
    finally:
        if "sharded_tiny" in DatasetCatalog.list():
            DatasetCatalog.remove("sharded_tiny")
            MetadataCatalog.remove("sharded_tiny")
