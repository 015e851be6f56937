"""``box2seg predict``: label PNGs and overlays for files, folders and globs; refuses to run without weights."""
import os

import cv2
import numpy as np
import pytest
import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.modeling import build_model

from box2seg.engine import PartialWeightsError, setup_cfg


def test_writes_labels_and_overlays(tmp_path, run, tiny_cfg, tiny_weights):
    rng = np.random.default_rng(0)
    (tmp_path / "in" / "sub").mkdir(parents=True)
    cv2.imwrite(str(tmp_path / "in" / "a.png"), rng.integers(0, 255, (70, 90, 3), dtype=np.uint8))
    cv2.imwrite(str(tmp_path / "in" / "sub" / "b.jpg"), rng.integers(0, 255, (64, 48, 3), dtype=np.uint8))
    out = tmp_path / "out"
    assert run("predict", "--config-file", tiny_cfg, "--input", tmp_path / "in", tmp_path / "in" / "*" / "*.jpg",
               "--output", out, "MODEL.WEIGHTS", tiny_weights) == 0
    assert sorted(os.listdir(out / "labels")) == sorted(os.listdir(out / "overlays")) == ["a.png", "b.png"]
    assert cv2.imread(str(out / "labels" / "a.png"), cv2.IMREAD_UNCHANGED).shape == (70, 90)

    with pytest.raises(SystemExit, match="MODEL.WEIGHTS is empty"):
        run("predict", "--config-file", tiny_cfg, "--input", tmp_path / "in", "--output", out)


def _image(folder):
    folder.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(folder / "a.png"), np.random.default_rng(0).integers(0, 255, (40, 50, 3), dtype=np.uint8))
    return folder / "a.png"


def test_bare_overrides_last_like_the_other_commands(tmp_path, run, tiny_cfg, tiny_weights):
    image = _image(tmp_path / "in")
    # after --output, and straight after --input's list
    assert run("predict", "--config-file", tiny_cfg, "--input", image, "--output", tmp_path / "o1",
               "MODEL.WEIGHTS", tiny_weights, "MODEL.DEVICE", "cpu") == 0
    assert run("predict", "--config-file", tiny_cfg, "--output", tmp_path / "o2", "--input", image,
               tmp_path / "in", "MODEL.WEIGHTS", tiny_weights) == 0
    assert os.listdir(tmp_path / "o1" / "labels") == os.listdir(tmp_path / "o2" / "labels") == ["a.png"]
    with pytest.warns(FutureWarning, match="--opts is deprecated"):
        assert run("predict", "--config-file", tiny_cfg, "--input", image, "--output", tmp_path / "o3",
                   "--opts", "MODEL.WEIGHTS", tiny_weights) == 0


@pytest.fixture(scope="module")
def six_class_weights(tmp_path_factory, tiny_cfg):
    """Weights of a model with 5 classes + background: heads that do not fit box2seg_tiny.yaml."""
    torch.manual_seed(0)
    model = build_model(setup_cfg(tiny_cfg, ["MODEL.SEM_SEG_HEAD.NUM_CLASSES", "6"]))
    folder = tmp_path_factory.mktemp("six")
    DetectionCheckpointer(model, save_dir=str(folder)).save("six")
    return str(folder / "six.pth")


def refusal(capsys, run, *argv):
    """The message of a user error: raised, or printed as one line by cli.main (exit 2)."""
    try:
        rc = run(*argv)
    except PartialWeightsError as e:
        return str(e)
    captured = capsys.readouterr()
    assert rc == 2, captured
    return captured.out + captured.err


def test_weights_of_other_heads_are_refused_unless_allowed(tmp_path, capsys, run, tiny_cfg, six_class_weights):
    image = _image(tmp_path / "in")
    message = refusal(capsys, run, "predict", "--config-file", tiny_cfg, "--input", image, "--output",
                      tmp_path / "o", "MODEL.WEIGHTS", six_class_weights)
    assert "another shape" in message and "(6," in message and "--allow-partial-weights" in message
    assert not (tmp_path / "o" / "labels").exists() or not os.listdir(tmp_path / "o" / "labels")
    assert run("predict", "--config-file", tiny_cfg, "--input", image, "--output", tmp_path / "o",
               "--allow-partial-weights", "MODEL.WEIGHTS", six_class_weights) == 0
