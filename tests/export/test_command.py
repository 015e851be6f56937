"""``box2seg export``'s command line (box2seg.commands.export): option errors exit 2 with a message."""
import argparse
import os

import torch

from box2seg.commands import add_coco_dataset_argument
from box2seg.commands.export import add_arguments, main

CONFIG = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "configs", "tests",
                      "box2seg_tiny.yaml")


def test_cli_errors(capsys):
    parser = argparse.ArgumentParser()
    add_coco_dataset_argument(parser)
    add_arguments(parser)
    assert main(parser.parse_args(["--merge", "x", "--dataset", "d"])) == 2
    assert "--merge DIR takes no other option" in capsys.readouterr().out
    assert main(parser.parse_args(["--dataset", "d"])) == 2
    assert "missing --config-file, --output" in capsys.readouterr().out


def test_weights_whose_heads_do_not_fit_are_refused_unless_allowed(capsys, tmp_path, dataset):
    """Mask R-CNN weights (no key of the model) exit 2 naming the missing keys; --allow-partial-weights runs."""
    name, spec, _ = dataset
    maskrcnn = tmp_path / "maskrcnn.pth"
    torch.save({"model": {"roi_heads.box_predictor.cls_score.weight": torch.zeros(81, 1024)}}, maskrcnn)
    parser = argparse.ArgumentParser()
    add_coco_dataset_argument(parser)
    add_arguments(parser)
    argv = ["--coco-dataset", spec, "--config-file", CONFIG, "--dataset", name, "--no-progress",
            "MODEL.DEVICE", "cpu", "MODEL.WEIGHTS", str(maskrcnn)]
    assert main(parser.parse_args(["--output", str(tmp_path / "a"), *argv])) == 2
    out = capsys.readouterr().out
    assert "missing" in out and "roi_heads.box_predictor.cls_score.weight" in out and "--allow-partial-weights" in out
    assert not (tmp_path / "a" / "pseudo_masks.json").exists()
    assert main(parser.parse_args(["--output", str(tmp_path / "b"), "--allow-partial-weights", *argv])) == 0
    assert (tmp_path / "b" / "pseudo_masks.json").exists()
