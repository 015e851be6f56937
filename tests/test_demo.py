"""projects/Box2Seg/demo.py end to end on a tiny dataset: two seeds trained side by side in their own
processes, scored beside the baselines into one table; a second run reuses the finished checkpoints."""
import json
import os
import runpy

import pytest
import torch

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = os.path.join(REPO, "configs", "tests", "box2seg_tiny.yaml")


@pytest.fixture(scope="module")
def demo():
    """demo.py is a script, not a module: its functions, as ``python demo.py`` would define them."""
    return runpy.run_path(os.path.join(REPO, "projects", "Box2Seg", "demo.py"))


def test_two_seeds_train_in_parallel_processes_then_one_table(demo, tiny_coco, tmp_path, capsys):
    json_path, image_root = tiny_coco
    out = tmp_path / "demo"
    argv = ["--config-file", TINY, "--output", str(out), "--seeds", "0", "1", "--jobs", "2", "--margin", "-1000",
            "--opts", "DATASETS.COCO_FORMAT", f"['tiny_demo={json_path}:{image_root}']",
            "DATASETS.TRAIN", "('tiny_demo',)", "DATASETS.TEST", "('tiny_demo',)", "SOLVER.MAX_ITER", "1"]
    assert demo["main"](argv) == 0
    printed = capsys.readouterr().out
    for row in ("filled boxes", "filled ellipses", "GrabCut", "Box2Seg image-only", "Box2Seg box-conditioned"):
        assert f"| {row} |" in printed
    assert "semantic mIoU (seed 0)" in printed and "instance mIoU (seed 1)" in printed and "PASS" in printed
    results = json.loads((out / "results.json").read_text())
    assert set(results["results"]) == {"seed 0", "seed 1"} and results["table"] in printed
    assert all((out / f"seed{s}" / "log.txt").exists() for s in (0, 1))
    assert (out / "overlays_seed0" / "00.png").exists()
    weights = [torch.load(out / f"seed{s}" / "model_final.pth", map_location="cpu", weights_only=False)["model"]
               for s in (0, 1)]
    # Different seeds, different initialisations: the runs really were two runs.
    assert not torch.equal(weights[0]["decoders.trunk.fuse.weight"], weights[1]["decoders.trunk.fuse.weight"])

    # Finished runs are reused: nothing is retrained (the checkpoints are not rewritten), same table.
    stamp = os.path.getmtime(out / "seed0" / "model_final.pth")
    assert demo["main"](argv) == 0
    assert os.path.getmtime(out / "seed0" / "model_final.pth") == stamp
    assert results["table"] in capsys.readouterr().out


def test_seed_runs_are_seeded_and_checked(demo, tiny_coco, tmp_path):
    json_path, image_root = tiny_coco
    opts = ["DATASETS.COCO_FORMAT", f"['tiny_seeded={json_path}:{image_root}']", "DATASETS.TRAIN", "('tiny_seeded',)",
            "DATASETS.TEST", "('tiny_seeded',)"]
    cfg = demo["seed_cfg"](TINY, opts, 3, str(tmp_path))
    assert cfg.SEED == 3 and cfg.OUTPUT_DIR == str(tmp_path / "seed3") and cfg.is_frozen()
    with pytest.raises(ValueError, match="NUM_CLASSES"):
        demo["seed_cfg"](TINY, opts + ["MODEL.SEM_SEG_HEAD.NUM_CLASSES", "9"], 0, str(tmp_path))
