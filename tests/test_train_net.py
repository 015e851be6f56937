"""projects/Box2Seg/train_net.py end to end: two processes over GLOO for three training steps (across the
pre-training phase switch), then --eval-only through SemSegEvaluator and the box-mask IoU evaluator, then --resume."""
import importlib.util
import json
import os
import subprocess
import sys
import uuid

import pytest
import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.modeling import build_model

from box2seg.data.datasets.common import unregister
from box2seg.engine import NothingToEvaluateError, PartialWeightsError, setup_cfg

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TRAIN_NET = os.path.join(REPO, "projects", "Box2Seg", "train_net.py")
TINY = os.path.join(REPO, "configs", "tests", "box2seg_tiny.yaml")


def run_train_net(args, cache, timeout=300, returncode=0):
    env = dict(os.environ, BOX2SEG_CACHE=str(cache), OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, TRAIN_NET, *args], env=env, capture_output=True, text=True,
                          timeout=timeout, cwd=REPO)
    assert (proc.returncode == 0) == (returncode == 0), proc.stdout[-3000:] + proc.stderr[-5000:]
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
    # Two processes refuse to start without the GrabCut labels (rank 0 would prepare them while rank 1 waits
    # at a barrier that times out after 30 minutes), naming the command that prepares them.
    log = run_train_net(flags + ["--num-gpus", "2"] + opts, cache, returncode=1)
    assert "box2seg prepare-grabcut --dataset tiny_train" in log, log[-3000:]
    # Prepared in a fresh process: this one may hold another registration of the name tiny_train.
    prepare = ("import sys; from box2seg.engine import prepare_caches, setup_cfg; "
               "cfg = setup_cfg(sys.argv[1], sys.argv[4:], sys.argv[2:4]); "
               "prepare_caches(cfg, cfg.DATASETS.TRAIN, grabcut=True)")
    subprocess.run([sys.executable, "-c", prepare, TINY, flags[3], flags[5], *opts], check=True, timeout=300,
                   cwd=REPO, env=dict(os.environ, BOX2SEG_CACHE=str(cache), OMP_NUM_THREADS="1"))
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


def _train_net():
    """projects/Box2Seg/train_net.py as a module, to call main() in this process."""
    spec = importlib.util.spec_from_file_location("box2seg_train_net", TRAIN_NET)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def eval_only(tiny_coco, tmp_path, monkeypatch):
    """``eval_only(*extra_argv)``: train_net's main() with --eval-only on tiny_coco, in this process."""
    monkeypatch.setenv("BOX2SEG_CACHE", str(tmp_path / "cache"))
    json_path, image_root = tiny_coco
    name = f"evalonly_{uuid.uuid4().hex[:8]}"
    boxes_only = tmp_path / "boxes_only.json"
    data = json.loads(open(json_path).read())
    for ann in data["annotations"]:
        del ann["segmentation"]
    boxes_only.write_text(json.dumps(data))
    train_net = _train_net()
    flags = ["--config-file", TINY, "--coco-dataset", f"{name}={json_path}:{image_root}",
             "--coco-dataset", f"{name}_boxes={boxes_only}:{image_root}", "--eval-only"]
    opts = ["DATASETS.TRAIN", f"('{name}',)", "DATASETS.TEST", f"('{name}',)", "OUTPUT_DIR", str(tmp_path / "out"),
            "MODEL.DEVICE", "cpu"]

    def run(*extra, overrides=()):
        args = train_net.argument_parser().parse_args(flags + list(extra) + opts + list(overrides))
        return train_net.main(args)
    yield run, name
    for n in (name, f"{name}_boxes"):
        unregister(n)


@pytest.fixture(scope="module")
def head_weights(tmp_path_factory):
    """Tiny-model weights of the config's heads (4 = 3 classes + background) and of another class count (6)."""
    folder = tmp_path_factory.mktemp("weights")
    for classes in (4, 6):
        torch.manual_seed(0)
        model = build_model(setup_cfg(TINY, ["MODEL.SEM_SEG_HEAD.NUM_CLASSES", str(classes)]))
        DetectionCheckpointer(model, save_dir=str(folder)).save(f"classes{classes}")
    return str(folder / "classes4.pth"), str(folder / "classes6.pth")


def test_eval_only_refuses_weights_whose_heads_do_not_fit(eval_only, head_weights):
    run, _ = eval_only
    fits, other = head_weights
    with pytest.raises(PartialWeightsError, match=r"another shape .*\(6,") as err:
        run(overrides=["MODEL.WEIGHTS", other])
    assert "--allow-partial-weights" in str(err.value)
    assert "sem_seg" in run("--allow-partial-weights", overrides=["MODEL.WEIGHTS", other])
    assert "sem_seg" in run(overrides=["MODEL.WEIGHTS", fits])
    with pytest.raises(PartialWeightsError, match="no model weights"):
        run()  # MODEL.WEIGHTS empty: would evaluate a random model


def test_eval_only_refuses_to_evaluate_nothing(eval_only, head_weights):
    run, name = eval_only
    with pytest.raises(NothingToEvaluateError, match="DATASETS.TEST is empty"):
        run(overrides=["MODEL.WEIGHTS", head_weights[0], "DATASETS.TEST", "()"])
    with pytest.raises(NothingToEvaluateError, match=f"'{name}_boxes' has no masks"):
        run(overrides=["MODEL.WEIGHTS", head_weights[0], "DATASETS.TEST", f"('{name}_boxes',)"])


def test_user_errors_exit_non_zero_in_one_line(tiny_coco, tmp_path):
    json_path, image_root = tiny_coco
    env = dict(os.environ, BOX2SEG_CACHE=str(tmp_path / "cache"), OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, TRAIN_NET, "--config-file", TINY, "--coco-dataset",
                           f"tiny_val={json_path}:{image_root}", "--eval-only", "DATASETS.TRAIN", "('tiny_val',)",
                           "DATASETS.TEST", "()", "OUTPUT_DIR", str(tmp_path / "out")],
                          env=env, capture_output=True, text=True, timeout=300, cwd=REPO)
    assert proc.returncode != 0
    assert "train_net.py: error: DATASETS.TEST is empty" in proc.stderr and "Traceback" not in proc.stderr
