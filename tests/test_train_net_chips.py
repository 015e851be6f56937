"""projects/Box2Seg/train_net.py in chip mode: trains, evaluates (SemSegEvaluator and the per-box IoU) and
resumes from its last checkpoint."""
import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TRAIN_NET = os.path.join(REPO, "projects", "Box2Seg", "train_net.py")
TINY = os.path.join(REPO, "configs", "tests", "box2seg_tiny.yaml")


def _run(args, cache):
    env = dict(os.environ, BOX2SEG_CACHE=str(cache), OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, TRAIN_NET, *args], env=env, capture_output=True, text=True, timeout=300,
                          cwd=REPO)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    return proc.stdout + proc.stderr


def test_chip_mode_trains_evaluates_and_resumes(tiny_coco, tmp_path):
    json_path, image_root = tiny_coco
    out = tmp_path / "out"
    common = ["--config-file", TINY, "--coco-dataset", f"chips_tiny={json_path}:{image_root}"]
    opts = ["MODEL.BOX2SEG.CHIPS.ENABLED", "True", "MODEL.BOX2SEG.CHIPS.SIZE", "64", "INPUT.MIN_SIZE_TEST", "0",
            "DATASETS.TRAIN", "('chips_tiny',)", "DATASETS.TEST", "('chips_tiny',)", "MODEL.SEM_SEG_HEAD.NUM_CLASSES",
            "0", "OUTPUT_DIR", str(out)]
    log = _run(common + opts + ["SOLVER.MAX_ITER", "2"], tmp_path / "cache")
    assert "mIoU" in log and (out / "model_final.pth").is_file()
    log = _run(common + ["--resume"] + opts + ["SOLVER.MAX_ITER", "3"], tmp_path / "cache")
    assert "Starting training from iteration 2" in log


def test_chip_mode_under_launch_with_two_processes(tiny_coco, tmp_path):
    """Two gloo processes through detectron2's launch, with the CPU chip config's switches (coordinate channels,
    the colour-pairwise term): DistributedDataParallel must see every parameter that gets a gradient."""
    json_path, image_root = tiny_coco
    out = tmp_path / "out"
    cache = tmp_path / "cache"
    common = ["--config-file", TINY, "--coco-dataset", f"chips_tiny={json_path}:{image_root}"]
    opts = ["MODEL.BOX2SEG.CHIPS.ENABLED", "True", "MODEL.BOX2SEG.CHIPS.SIZE", "64", "INPUT.MIN_SIZE_TEST", "0",
            "MODEL.BOX2SEG.CHIPS.TARGET", "own", "MODEL.BOX2SEG.CHIPS.COORD_CHANNELS", "True",
            "MODEL.BOX2SEG.LOSS.TERMS", '["gc", "bg", "proj", "pair"]', "MODEL.BOX2SEG.PRETRAIN_ITERS", "0",
            "DATASETS.TRAIN", "('chips_tiny',)", "DATASETS.TEST", "('chips_tiny',)", "MODEL.SEM_SEG_HEAD.NUM_CLASSES",
            "0", "OUTPUT_DIR", str(out), "TEST.EVAL_PERIOD", "0"]
    _run(common + opts + ["SOLVER.MAX_ITER", "1"], cache)  # one process first: it prepares the GrabCut labels
    log = _run(common + ["--num-gpus", "2", "--resume"] + opts + ["SOLVER.MAX_ITER", "3"], cache)
    assert "Rank of current process: 1" in log or "world size: 2" in log.lower(), log[-3000:]
    assert "Starting training from iteration 1" in log
