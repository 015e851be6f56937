"""projects/Box2Seg/train_net.py end to end: two processes over GLOO for three training steps (across the
pre-training phase switch), then --eval-only through SemSegEvaluator and the box-mask IoU evaluator, then --resume."""
import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TRAIN_NET = os.path.join(REPO, "projects", "Box2Seg", "train_net.py")
TINY = os.path.join(REPO, "configs", "tests", "box2seg_tiny.yaml")


def run_train_net(args, cache, timeout=300):
    env = dict(os.environ, BOX2SEG_CACHE=str(cache), OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, TRAIN_NET, *args], env=env, capture_output=True, text=True,
                          timeout=timeout, cwd=REPO)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    return proc.stdout + proc.stderr


@pytest.fixture
def common_args(tiny_coco, tmp_path):
    json_path, image_root = tiny_coco
    return [
        "--config-file", TINY, "--coco-dataset", f"tiny_train={json_path}:{image_root}",
        "--coco-dataset", f"tiny_val={json_path}:{image_root}",
    ], [
        "DATASETS.TRAIN", "('tiny_train',)", "DATASETS.TEST", "('tiny_val',)", "OUTPUT_DIR", str(tmp_path / "out"),
    ]


def test_two_process_gloo_step_then_eval_and_resume(common_args, tmp_path):
    flags, opts = common_args
    cache = tmp_path / "cache"
    # Three iterations: the first is embedding pre-training (PRETRAIN_ITERS 1), so the next ones run with
    # parameters that had no gradient before -- DistributedDataParallel must be told (find_unused_parameters).
    log = run_train_net(flags + ["--num-gpus", "2"] + opts + ["SOLVER.MAX_ITER", "3", "TEST.EVAL_PERIOD", "0"], cache)
    assert "world size: 2" in log.lower() or "Rank of current process: 1" in log, log[-3000:]
    final = tmp_path / "out" / "model_final.pth"
    assert final.exists()

    log = run_train_net(flags + ["--eval-only"] + opts + ["MODEL.WEIGHTS", str(final)], cache)
    assert "mIoU" in log and "box_mask_iou" in log, log[-3000:]

    log = run_train_net(flags + ["--resume"] + opts + ["SOLVER.MAX_ITER", "4", "TEST.EVAL_PERIOD", "0"], cache)
    assert "Starting training from iteration 3" in log, log[-3000:]
