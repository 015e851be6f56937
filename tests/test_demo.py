"""projects/Box2Seg/demo.py: seeds trained side by side in their own processes."""
import os
import sys

import pytest
import torch

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "projects", "Box2Seg"))
import demo  # noqa: E402

from box2seg import engine  # noqa: E402

TINY = os.path.join(REPO, "configs", "tests", "box2seg_tiny.yaml")


def _opts(tiny_coco, dataset="tiny_demo"):
    json_path, image_root = tiny_coco
    return ["BOX2SEG.COCO_DATASETS", f"['tiny_demo={json_path}:{image_root}']", "DATASETS.TRAIN", f"('{dataset}',)",
            "DATASETS.TEST", "('tiny_demo',)", "SOLVER.MAX_ITER", "1"]


def test_two_seeds_train_in_parallel_processes(tiny_coco, tmp_path):
    opts = _opts(tiny_coco)
    # As demo.main does: datasets and GrabCut labels are built before the training processes start.
    engine.prepare_caches(demo.build_cfg(TINY, opts, 0, str(tmp_path)), ["tiny_demo"], grabcut=True)
    demo.train_seeds(TINY, opts, [0, 1], str(tmp_path), jobs=2)
    weights = [torch.load(tmp_path / f"seed{s}" / "model_final.pth", map_location="cpu", weights_only=False)["model"]
               for s in (0, 1)]
    assert all((tmp_path / f"seed{s}" / "log.txt").exists() for s in (0, 1))
    # Different seeds, different initialisations: the runs really were two runs.
    assert not torch.equal(weights[0]["decoders.trunk.fuse.weight"], weights[1]["decoders.trunk.fuse.weight"])

    # Finished runs are reused: nothing is retrained (the checkpoints are not rewritten).
    stamp = os.path.getmtime(tmp_path / "seed0" / "model_final.pth")
    demo.train_seeds(TINY, opts, [0, 1], str(tmp_path), jobs=2)
    assert os.path.getmtime(tmp_path / "seed0" / "model_final.pth") == stamp


def test_a_failing_seed_process_is_reported(tiny_coco, tmp_path):
    with pytest.raises(RuntimeError, match=r"seed\(s\) \[0, 1\]"):
        demo.train_seeds(TINY, _opts(tiny_coco, dataset="no_such_dataset"), [0, 1], str(tmp_path), jobs=2)
