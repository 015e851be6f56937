"""engine.evaluators: one mIoU in the log, the fixed one (issue 13 item 9); the box2seg logger set up like
detectron2's by engine.default_setup, so box2seg's INFO lines and warnings reach log.txt."""
import argparse
import logging
import os
import uuid

import numpy as np

from box2seg.compat import fixed_miou
from box2seg.data.datasets.common import unregister
from box2seg.engine import build_evaluator, default_setup, setup_cfg

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TINY_CFG = os.path.join(REPO, "configs", "tests", "box2seg_tiny.yaml")


class _Lines(logging.Handler):
    def __init__(self):
        super().__init__()
        self.lines = []

    def emit(self, record):
        self.lines.append(record.getMessage())


def test_sem_seg_results_are_logged_once_with_the_fixed_miou(tiny_coco, tmp_path, monkeypatch):
    monkeypatch.setenv("BOX2SEG_CACHE", str(tmp_path / "cache"))
    json_path, image_root = tiny_coco
    name = f"eval_log_{uuid.uuid4().hex[:8]}"
    setup_cfg(TINY_CFG, coco_datasets=[f"{name}={json_path}:{image_root}"])
    try:
        (evaluator,) = build_evaluator(setup_cfg(TINY_CFG), name)._evaluators[:1]
        # background and class 1 in the ground truth; class 2 only predicted, class 3 nowhere: v0.6 averages
        # over classes present in the ground truth *or* the prediction, the fix over the ground truth's.
        conf = np.zeros((5, 5), np.int64)  # [pred, gt], ignore last
        conf[0, 0], conf[1, 1], conf[2, 1], conf[2, 0] = 50, 30, 10, 10
        evaluator.reset()
        evaluator._conf_matrix = conf
        handler, level = _Lines(), evaluator._logger.level
        evaluator._logger.addHandler(handler)
        evaluator._logger.setLevel(logging.INFO)
        try:
            results = evaluator.evaluate()
        finally:
            evaluator._logger.removeHandler(handler)
            evaluator._logger.setLevel(level)
    finally:
        unregister(name)
    assert results["sem_seg"]["mIoU"] == 100 * fixed_miou(conf)
    logged = [line for line in handler.lines if "mIoU" in line]
    assert len(logged) == 1 and f"'mIoU': {results['sem_seg']['mIoU']!r}" in logged[0], handler.lines


def test_box2seg_lines_reach_log_txt(tmp_path):
    cfg = setup_cfg(TINY_CFG, ["OUTPUT_DIR", str(tmp_path / "out")])
    default_setup(cfg, argparse.Namespace(config_file=TINY_CFG, eval_only=True))
    logging.getLogger("box2seg.data.datasets.coco").info("dataset report %s", "xyz")
    logging.getLogger("box2seg.data.grabcut_job").warning("skipped box %s", "abc")
    for handler in logging.getLogger("box2seg").handlers:
        handler.flush()
    log = (tmp_path / "out" / "log.txt").read_text()
    assert "dataset report xyz" in log and "skipped box abc" in log
