"""Box2SegPredictor and ``box2seg predict`` with a random-init tiny model saved to a checkpoint."""
import argparse
import os

import box2seg  # noqa: F401
import cv2
import numpy as np
import pytest
import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.modeling import build_model

from box2seg import predict
from box2seg.engine import get_box2seg_cfg

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY_CFG = os.path.join(REPO, "configs", "tests", "box2seg_tiny.yaml")
NUM_CLASSES = 3  # box2seg_tiny.yaml: MODEL.SEM_SEG_HEAD.NUM_CLASSES 4 = background + 3


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    """A randomly initialised tiny model, saved the way training saves it."""
    cfg = get_box2seg_cfg()
    cfg.merge_from_file(TINY_CFG)
    torch.manual_seed(0)
    model = build_model(cfg)
    folder = tmp_path_factory.mktemp("weights")
    DetectionCheckpointer(model, save_dir=str(folder)).save("model_tiny")
    return str(folder / "model_tiny.pth")


def write_images(folder):
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "sub").mkdir(exist_ok=True)
    a, b = folder / "a.png", folder / "sub" / "b.jpg"
    cv2.imwrite(str(a), rng.integers(0, 255, (70, 90, 3), dtype=np.uint8))
    cv2.imwrite(str(b), rng.integers(0, 255, (64, 48, 3), dtype=np.uint8))
    (folder / "notes.txt").write_text("not an image")
    return a, b


def test_predictor_api(weights):
    cfg = predict.setup_predict_cfg(TINY_CFG, ["MODEL.WEIGHTS", weights])
    predictor = predict.Box2SegPredictor(cfg)
    assert predictor.num_classes == NUM_CLASSES and len(predictor.thing_classes) == NUM_CLASSES
    image = np.random.default_rng(1).integers(0, 255, (50, 70, 3), dtype=np.uint8)
    out = predictor(image)
    assert out["sem_seg"].shape == (NUM_CLASSES + 1, 50, 70)
    assert torch.allclose(out["sem_seg"].sum(0), torch.ones(50, 70), atol=1e-4)
    assert torch.equal(out["labels"], out["sem_seg"].argmax(0))
    assert "box_masks" not in out

    boxes = [[5, 5, 30, 40], [20, 10, 69, 49]]
    out = predictor(image, boxes=boxes, classes=[0, 2])
    masks = out["box_masks"]
    assert masks.shape == (2, 50, 70) and masks.dtype == torch.bool
    assert not masks[0, :, 31:].any() and not masks[0, 41:].any()  # inside its box
    assert not (masks[0] & masks[1]).any()  # a pixel belongs to at most one box

    attention = predictor.attention(image, [2, 0])
    assert attention.shape == (2, 50, 70) and 0 <= attention.min() and attention.max() <= 1
    assert torch.allclose(attention[1], predictor.attention(image, [0])[0])

    with pytest.raises(ValueError, match="class 7"):
        predictor(image, boxes=[[0, 0, 4, 4]], classes=[7])
    with pytest.raises(ValueError, match="classes"):
        predictor(image, boxes=[[0, 0, 4, 4]])


def test_predict_command_writes_labels_and_overlays(tmp_path, weights):
    a, b = write_images(tmp_path / "in")
    parser = argparse.ArgumentParser()
    predict.add_arguments(parser)
    out = tmp_path / "out"
    # A folder (a.png; notes.txt ignored) and a glob (sub/b.jpg); a.png named twice is predicted once.
    args = parser.parse_args(["--config-file", TINY_CFG, "--input", str(tmp_path / "in"), str(tmp_path / "in" / "*" / "*.jpg"),
                              str(a), "--output", str(out), "--opts", "MODEL.WEIGHTS", weights])
    assert predict.main(args) == 0
    for name, shape in (("a", (70, 90)), ("b", (64, 48))):
        labels = cv2.imread(str(out / "labels" / f"{name}.png"), cv2.IMREAD_UNCHANGED)
        assert labels.dtype == np.uint8 and labels.shape == shape
        assert labels.max() <= NUM_CLASSES
        overlay = cv2.imread(str(out / "overlays" / f"{name}.png"), cv2.IMREAD_COLOR)
        assert overlay.shape == shape + (3,)
    assert sorted(os.listdir(out / "labels")) == ["a.png", "b.png"]

    with pytest.raises(FileNotFoundError, match="nothing-here"):
        predict.expand_inputs([str(tmp_path / "nothing-here*.png")])


def test_output_names_disambiguate_same_stem():
    names = predict.output_names(["x/img.png", "y/img.jpg", "z/other.png"])
    assert names[2] == "other" and names[0] != names[1] and all(n.startswith("img-") for n in names[:2])


def test_subcommands_parse_through_the_cli(monkeypatch):
    """The three downstream commands, registered the way cli.COMMANDS will list them."""
    from box2seg import cli

    monkeypatch.setitem(cli.COMMANDS, "predict", ("box2seg.predict", "predict"))
    monkeypatch.setitem(cli.COMMANDS, "visualize", ("box2seg.visualize", "visualize"))
    monkeypatch.setitem(cli.COMMANDS, "train-maskrcnn", ("box2seg.maskrcnn", "train-maskrcnn"))
    parser = cli.build_parser()
    args = parser.parse_args(["predict", "--coco-dataset", "d=a.json:img", "--config-file", "c.yaml", "--input", "x.png",
                              "dir", "--output", "o", "--opts", "MODEL.WEIGHTS", "w.pth"])
    assert args.input == ["x.png", "dir"] and args.opts == ["MODEL.WEIGHTS", "w.pth"]
    assert args.coco_dataset == ["d=a.json:img"]
    args = parser.parse_args(["visualize", "--dataset", "d", "--output", "o", "--config-file", "c.yaml",
                              "MODEL.WEIGHTS", "w.pth"])
    assert args.opts == ["MODEL.WEIGHTS", "w.pth"] and args._module == "box2seg.visualize"
    args = parser.parse_args(["train-maskrcnn", "--config-file", "c.yaml", "--train-json", "p.json", "--image-root",
                              "img", "--num-gpus", "2", "SOLVER.MAX_ITER", "10"])
    assert args.num_gpus == 2 and args.opts == ["SOLVER.MAX_ITER", "10"] and args.eval_json == ""
