"""detectron2 v0.6 works on this stack once box2seg is imported: models train, the evaluator's mIoU is
right, and a trainer resumes exactly from its checkpoint under torch's ``weights_only`` default."""
import os
import subprocess
import sys

import box2seg  # noqa: F401
import cv2
import numpy as np
import pytest
import torch
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.engine import DefaultTrainer
from detectron2.evaluation import SemSegEvaluator
from detectron2.modeling import build_model

from box2seg import compat
from box2seg.engine import setup_cfg


def _tiny_semantic_cfg(num_classes=3):
    cfg = setup_cfg(freeze=False)  # detectron2's keys and Box2Seg's (unused here)
    cfg.MODEL.DEVICE = "cpu"
    cfg.MODEL.META_ARCHITECTURE = "SemanticSegmentor"
    cfg.MODEL.BACKBONE.NAME = "build_resnet_fpn_backbone"
    cfg.MODEL.WEIGHTS = ""
    cfg.MODEL.RESNETS.DEPTH = 18
    cfg.MODEL.RESNETS.RES2_OUT_CHANNELS = 64
    cfg.MODEL.RESNETS.OUT_FEATURES = ["res2", "res3", "res4", "res5"]
    cfg.MODEL.RESNETS.NORM = "BN"
    cfg.MODEL.FPN.IN_FEATURES = ["res2", "res3", "res4", "res5"]
    cfg.MODEL.FPN.OUT_CHANNELS = 32
    cfg.MODEL.SEM_SEG_HEAD.NAME = "SemSegFPNHead"
    cfg.MODEL.SEM_SEG_HEAD.IN_FEATURES = ["p2", "p3", "p4", "p5"]
    cfg.MODEL.SEM_SEG_HEAD.CONVS_DIM = 32
    cfg.MODEL.SEM_SEG_HEAD.NORM = "GN"
    cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES = num_classes
    return cfg


def test_fixes_were_needed_or_are_noops():
    # Each fix is feature-tested; whatever was applied must leave the stack importable and sane.
    import detectron2.data  # noqa: F401  (fails on Pillow >= 10 without the fix)
    from PIL import Image

    assert hasattr(Image, "LINEAR")
    assert np.int is int or "np.int" not in compat.applied_fixes()
    compat.apply()  # idempotent
    assert len(compat.applied_fixes()) == len(set(compat.applied_fixes()))


def test_missing_cpp_op_error_is_clear():
    import detectron2._C as C

    if compat.has_cpp_ops():
        pytest.skip("detectron2 built with its C++ ops")
    with pytest.raises(RuntimeError, match="without its C\\+\\+ ops"):
        C.nms_rotated  # noqa: B018
    assert "without its C++ ops" in C.get_compiler_version()


def test_semantic_segmentor_trains_one_step_on_cpu():
    torch.manual_seed(0)
    model = build_model(_tiny_semantic_cfg())
    model.train()
    batch = [
        {"image": torch.randint(0, 255, (3, 64, 64), dtype=torch.uint8), "sem_seg": torch.randint(0, 3, (64, 64))}
        for _ in range(2)
    ]
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    before = [p.detach().clone() for p in model.sem_seg_head.parameters()]
    losses = model(batch)
    total = sum(losses.values())
    assert torch.isfinite(total)
    optimizer.zero_grad()
    total.backward()
    optimizer.step()
    after = list(model.sem_seg_head.parameters())
    assert any(not torch.equal(a, b) for a, b in zip(before, after))


def _write_label(path, labels):
    cv2.imwrite(str(path), labels.astype(np.uint8))
    return str(path)


def test_sem_seg_evaluator_miou_counts_only_classes_in_ground_truth(tmp_path):
    # 3 classes. GT has classes 0 and 1 only; the prediction also paints class 2, absent from the GT.
    gt = np.zeros((4, 4), np.uint8)
    gt[:, 2:] = 1
    gt[0, 0] = 255  # ignored pixel
    pred = np.zeros((4, 4), np.int64)
    pred[:, 2:] = 1
    pred[3, :2] = 2  # 2 false positives of an absent class, 2 false negatives of class 0
    pred[0, 3] = 0  # one class-1 pixel predicted as 0
    name = "box2seg_test_miou"
    MetadataCatalog.get(name).set(stuff_classes=["a", "b", "c"], ignore_label=255)
    DatasetCatalog.register(name, lambda: [])
    try:
        gt_file = _write_label(tmp_path / "gt.png", gt)
        evaluator = SemSegEvaluator(name, distributed=False, output_dir=None)
        evaluator.input_file_to_gt_file = {"img.jpg": gt_file}
        evaluator.reset()
        scores = torch.nn.functional.one_hot(torch.from_numpy(pred), 3).permute(2, 0, 1).float()
        evaluator.process([{"file_name": "img.jpg"}], [{"sem_seg": scores}])
        result = evaluator.evaluate()["sem_seg"]
    finally:
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)
    valid = gt != 255
    ious = []
    for c in (0, 1):  # classes with at least one ground-truth pixel
        tp = np.sum((pred == c) & (gt == c) & valid)
        fp = np.sum((pred == c) & (gt != c) & valid)
        fn = np.sum((pred != c) & (gt == c) & valid)
        ious.append(tp / (tp + fp + fn))
    assert result["mIoU"] == pytest.approx(100 * np.mean(ious))
    assert result["mIoU"] == pytest.approx(100 * compat.fixed_miou(evaluator._conf_matrix))


@pytest.fixture
def tiny_semseg_dataset(tmp_path):
    rng = np.random.default_rng(0)
    records = []
    for i in range(4):
        image = rng.integers(0, 255, (48, 48, 3), dtype=np.uint8)
        labels = np.zeros((48, 48), np.uint8)
        labels[8:30, 10 + i : 40] = 1 + i % 2
        cv2.imwrite(str(tmp_path / f"{i}.png"), image)
        cv2.imwrite(str(tmp_path / f"{i}_gt.png"), labels)
        records.append(
            {"file_name": str(tmp_path / f"{i}.png"), "sem_seg_file_name": str(tmp_path / f"{i}_gt.png"),
             "height": 48, "width": 48, "image_id": i}
        )
    name = "box2seg_test_resume"
    DatasetCatalog.register(name, lambda: records)
    MetadataCatalog.get(name).set(stuff_classes=["bg", "a", "b"], ignore_label=255)
    yield name
    DatasetCatalog.remove(name)
    MetadataCatalog.remove(name)


def _trainer_cfg(dataset, output_dir, max_iter):
    cfg = _tiny_semantic_cfg()
    cfg.DATASETS.TRAIN = (dataset,)
    cfg.DATASETS.TEST = ()
    cfg.INPUT.MIN_SIZE_TRAIN = (48,)
    cfg.INPUT.MAX_SIZE_TRAIN = 64
    cfg.DATALOADER.NUM_WORKERS = 0
    cfg.SOLVER.IMS_PER_BATCH = 2
    cfg.SOLVER.BASE_LR = 0.01
    cfg.SOLVER.MAX_ITER = max_iter
    cfg.SOLVER.STEPS = (3,)
    cfg.SOLVER.WARMUP_ITERS = 2
    cfg.SOLVER.CHECKPOINT_PERIOD = 2
    cfg.TEST.EVAL_PERIOD = 0
    cfg.SEED = 1
    cfg.OUTPUT_DIR = str(output_dir)
    return cfg


def test_trainer_resumes_model_optimizer_scheduler_and_iteration(tiny_semseg_dataset, tmp_path):
    assert "weights_only" in torch.load.__code__.co_varnames  # the default that refuses fvcore checkpoints
    out = tmp_path / "run"
    first = DefaultTrainer(_trainer_cfg(tiny_semseg_dataset, out, max_iter=2))
    first.resume_or_load(resume=False)
    first.train()
    assert os.path.exists(out / "model_final.pth")
    saved = torch.load(out / "model_final.pth", map_location="cpu", weights_only=False)
    assert saved["iteration"] == 1

    second = DefaultTrainer(_trainer_cfg(tiny_semseg_dataset, out, max_iter=4))
    second.resume_or_load(resume=True)
    assert second.start_iter == 2
    for key, value in saved["model"].items():
        assert torch.equal(second.model.state_dict()[key], value), key
    saved_momentum = saved["trainer"]["_trainer"]["optimizer"]["state"]
    momentum = second.optimizer.state_dict()["state"]
    assert saved_momentum and momentum.keys() == saved_momentum.keys()
    for key, value in saved_momentum.items():
        assert torch.equal(momentum[key]["momentum_buffer"], value["momentum_buffer"])
    saved_scheduler = saved["trainer"]["hooks"]["LRScheduler"]
    assert second.scheduler.state_dict()["last_epoch"] == saved_scheduler["last_epoch"] == 2
    second.train()
    assert second.iter == 4  # v0.6 leaves iter at max_iter after the loop
    # Past the 2-iteration warmup, before the step at 3: a restarted scheduler would be in warmup (1e-5).
    lrs = dict((it, lr) for lr, it in second.storage.history("lr").values())
    assert lrs[2] == pytest.approx(0.01) and lrs[3] == pytest.approx(0.001)


def test_import_prints_no_jit_script_deprecation_but_user_calls_still_warn():
    # fvcore's focal losses and detectron2's box coders call torch.jit.script at import time; recent torch
    # warns that it is deprecated, and every box2seg command (--help included) printed it twice.
    code = (
        "import warnings, torch, box2seg\n"
        "with warnings.catch_warnings(record=True) as caught:\n"
        "    warnings.simplefilter('always')\n"
        "    torch.jit.script(torch.nn.ReLU())\n"
        "print('USER_WARNED', any('jit.script' in str(w.message) for w in caught))\n"
    )
    out = subprocess.run([sys.executable, "-W", "default", "-c", code], capture_output=True, text=True, check=True)
    assert "torch.jit.script" not in out.stderr, out.stderr
    if "USER_WARNED True" not in out.stdout:
        pytest.skip("this torch does not deprecate torch.jit.script")
