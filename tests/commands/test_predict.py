"""``box2seg predict``: label PNGs and overlays for files, folders and globs; refuses to run without weights."""
import os

import cv2
import numpy as np
import pytest


def test_writes_labels_and_overlays(tmp_path, run, tiny_cfg, tiny_weights):
    rng = np.random.default_rng(0)
    (tmp_path / "in" / "sub").mkdir(parents=True)
    cv2.imwrite(str(tmp_path / "in" / "a.png"), rng.integers(0, 255, (70, 90, 3), dtype=np.uint8))
    cv2.imwrite(str(tmp_path / "in" / "sub" / "b.jpg"), rng.integers(0, 255, (64, 48, 3), dtype=np.uint8))
    out = tmp_path / "out"
    assert run("predict", "--config-file", tiny_cfg, "--input", tmp_path / "in", tmp_path / "in" / "*" / "*.jpg",
               "--output", out, "--opts", "MODEL.WEIGHTS", tiny_weights) == 0
    assert sorted(os.listdir(out / "labels")) == sorted(os.listdir(out / "overlays")) == ["a.png", "b.png"]
    assert cv2.imread(str(out / "labels" / "a.png"), cv2.IMREAD_UNCHANGED).shape == (70, 90)

    with pytest.raises(SystemExit, match="MODEL.WEIGHTS is empty"):
        run("predict", "--config-file", tiny_cfg, "--input", tmp_path / "in", "--output", out)
