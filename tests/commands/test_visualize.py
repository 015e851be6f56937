"""``box2seg visualize``: grids of a dataset registered with --coco-dataset; refuses when nothing would be shown
or the dataset is unknown."""
import os

import cv2
import pytest
import torch

from box2seg.engine import PartialWeightsError


def test_grids_of_a_coco_dataset_flag(tmp_path, tiny_coco, run, tiny_cfg, tiny_weights):
    json_file, image_root = tiny_coco
    spec = f"viz_cmd_tiny={json_file}:{image_root}"
    out = tmp_path / "grids"
    assert run("visualize", "--coco-dataset", spec, "--dataset", "viz_cmd_tiny", "--output", out,
               "--pseudo-masks", json_file, "--max-images", "2") == 0
    assert sorted(os.listdir(out)) == ["100.png", "101.png"]
    # with the model: boxes | pseudo-masks | prediction | one alpha per boxed class (2 here), one row of 5
    assert run("visualize", "--coco-dataset", spec, "--dataset", "viz_cmd_tiny", "--output", out, "--max-images", "1",
               "--pseudo-masks", json_file, "--columns", "5", "--config-file", tiny_cfg,
               "MODEL.WEIGHTS", tiny_weights) == 0
    assert cv2.imread(str(out / "100.png")).shape[1] == 5 * 64 + 4 * 4


def test_refusals(tmp_path, run):
    with pytest.raises(SystemExit, match="pseudo-masks"):
        run("visualize", "--dataset", "box2seg_shapes_val", "--output", tmp_path)


def test_an_unknown_dataset_suggests_the_flags_not_every_name(tmp_path, run, capsys, monkeypatch):
    monkeypatch.delenv("BOX2SEG_DEBUG", raising=False)
    assert run("visualize", "--dataset", "nowhere", "--output", tmp_path, "--pseudo-masks", tmp_path / "p.json") == 2
    captured = capsys.readouterr()
    (line,) = captured.err.strip().splitlines()
    assert line.startswith("box2seg visualize: error: dataset 'nowhere' is not registered")
    assert "--coco-dataset nowhere=ANNOTATIONS.json:IMAGE_ROOT" in line and "--openimages-dataset nowhere=" in line
    assert "known:" not in line and "coco_2017_val_panoptic" not in line and "voc_2012_val" not in line
    assert "box2seg_shapes_val" not in captured.out + captured.err
    # A near miss is named.
    assert run("visualize", "--dataset", "box2seg_shapes_vall", "--output", tmp_path,
               "--pseudo-masks", tmp_path / "p.json") == 2
    assert "Did you mean 'box2seg_shapes_val'" in capsys.readouterr().err


def test_weights_whose_heads_do_not_fit_are_refused_unless_allowed(tmp_path, tiny_coco, run, tiny_cfg):
    json_file, image_root = tiny_coco
    maskrcnn = tmp_path / "maskrcnn.pth"
    torch.save({"model": {"roi_heads.box_predictor.cls_score.weight": torch.zeros(81, 1024)}}, maskrcnn)
    argv = ["visualize", "--coco-dataset", f"viz_partial={json_file}:{image_root}", "--dataset", "viz_partial",
            "--output", tmp_path / "grids", "--max-images", "1", "--config-file", tiny_cfg]
    try:
        rc = run(*argv, "MODEL.WEIGHTS", maskrcnn)
        message = ""
    except PartialWeightsError as e:
        rc, message = 2, str(e)
    assert rc == 2 and (not message or "roi_heads.box_predictor.cls_score.weight" in message)
    assert not (tmp_path / "grids").exists() or not os.listdir(tmp_path / "grids")
    assert run(*argv, "--allow-partial-weights", "MODEL.WEIGHTS", maskrcnn) == 0
