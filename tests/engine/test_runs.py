"""box2seg.engine.runs: runs trained side by side in their own processes, finished runs reused, failures
reported, and runs that do not share their data refused (the end-to-end path is tests/test_demo.py)."""
import os

import box2seg  # noqa: F401  (compat fixes before any detectron2 import)
import pytest

from box2seg.engine import final_weights, setup_cfg, train_and_score, train_runs

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TINY = os.path.join(REPO, "configs", "tests", "box2seg_tiny.yaml")


def _cfg(tiny_coco, out, name, train=None, seed=0):
    """A one-iteration run on the tiny dataset registered as ``name`` (one name per test: each test has
    its own tiny_coco folder), trained on ``train`` (default: the same dataset)."""
    json_path, image_root = tiny_coco
    return setup_cfg(TINY, ["DATASETS.TRAIN", f"('{train or name}',)", "DATASETS.TEST", f"('{name}',)",
                            "SOLVER.MAX_ITER", "1", "SEED", str(seed), "OUTPUT_DIR", str(out)],
                     [f"{name}={json_path}:{image_root}"])


def test_a_failing_run_process_is_reported(tiny_coco, tmp_path):
    cfgs = {f"seed {s}": _cfg(tiny_coco, tmp_path / f"seed{s}", "tiny_failing", train="no_such_dataset", seed=s) for s in (0, 1)}
    with pytest.raises(RuntimeError, match=r"training, see .*seed0.log\.txt.*training, see .*seed1.log\.txt"):
        train_runs(cfgs, jobs=2)


def test_finished_runs_are_not_retrained(tiny_coco, tmp_path):
    cfg = _cfg(tiny_coco, tmp_path / "done", "tiny_done", train="no_such_dataset")  # training it would fail
    os.makedirs(cfg.OUTPUT_DIR)
    open(final_weights(cfg.OUTPUT_DIR), "wb").close()
    assert train_runs({"done": cfg}, jobs=2) == {"done": 0.0}


def test_runs_must_share_their_data(tiny_coco, tmp_path):
    a = _cfg(tiny_coco, tmp_path / "a", "tiny_shared")
    b = setup_cfg(TINY, ["DATASETS.TEST", "('tiny_shared',)", "GRABCUT.MAX_SIDE", "64"])
    with pytest.raises(ValueError, match="differs from the first run's"):
        train_and_score({"a": a, "b": b})
