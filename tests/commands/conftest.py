"""Shared by the command tests: the tiny Box2Seg config, randomly initialised weights saved the way
training saves them, and ``run``, which goes through ``box2seg.cli`` as the console script does."""
import os

import pytest
import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.modeling import build_model

from box2seg import cli
from box2seg.engine import setup_cfg

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TINY_CFG = os.path.join(REPO, "configs", "tests", "box2seg_tiny.yaml")  # 3 classes + background


@pytest.fixture(scope="session")
def tiny_cfg():
    return TINY_CFG


@pytest.fixture(scope="session")
def tiny_weights(tmp_path_factory):
    """A randomly initialised tiny model (box2seg_tiny.yaml), saved as a checkpoint."""
    torch.manual_seed(0)
    model = build_model(setup_cfg(TINY_CFG))
    folder = tmp_path_factory.mktemp("weights")
    DetectionCheckpointer(model, save_dir=str(folder)).save("model_tiny")
    return str(folder / "model_tiny.pth")


@pytest.fixture
def run():
    """``run("score", "--gt", ...)``: the exit status of ``box2seg`` with these arguments."""
    return lambda *argv: cli.main([str(a) for a in argv])
