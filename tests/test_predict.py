"""Box2SegPredictor and the label PNGs / overlays it writes, with a random-init tiny model saved to a
checkpoint. The command is in tests/commands/test_predict.py."""
import os

import box2seg  # noqa: F401
import cv2
import numpy as np
import pytest
import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.modeling import build_model
from detectron2.structures import BoxMode

from box2seg import predict
from box2seg.data.grabcut import GrabCutSettings, compute_own_masks
from box2seg.engine import setup_cfg

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY_CFG = os.path.join(REPO, "configs", "tests", "box2seg_tiny.yaml")
NUM_CLASSES = 3  # box2seg_tiny.yaml: MODEL.SEM_SEG_HEAD.NUM_CLASSES 4 = background + 3


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    """A randomly initialised tiny model, saved the way training saves it."""
    torch.manual_seed(0)
    model = build_model(setup_cfg(TINY_CFG))
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


def test_predict_images_writes_labels_and_overlays(tmp_path, weights):
    a, b = write_images(tmp_path / "in")
    (tmp_path / "in" / "broken.png").write_bytes(b"not a png")
    # A folder (a.png, broken.png; notes.txt ignored) and a glob (sub/b.jpg); a.png named twice is listed once.
    paths = predict.expand_inputs([str(tmp_path / "in"), str(tmp_path / "in" / "*" / "*.jpg"), str(a)])
    assert [os.path.basename(p) for p in paths] == ["a.png", "broken.png", "b.jpg"]
    predictor = predict.Box2SegPredictor(predict.setup_predict_cfg(TINY_CFG, ["MODEL.WEIGHTS", weights]))
    out = tmp_path / "out"
    assert predict.predict_images(predictor, paths, str(out)) == 1  # broken.png is skipped
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


CHIP_OPTS = ["MODEL.BOX2SEG.CHIPS.ENABLED", "True", "MODEL.BOX2SEG.CHIPS.SIZE", "64", "INPUT.MIN_SIZE_TEST", "0"]


def test_predictor_in_chip_mode_needs_boxes_and_returns_the_models_masks(tmp_path):
    torch.manual_seed(0)
    model = build_model(setup_cfg(TINY_CFG, CHIP_OPTS))
    DetectionCheckpointer(model, save_dir=str(tmp_path)).save("chips")
    predictor = predict.Box2SegPredictor(predict.setup_predict_cfg(
        TINY_CFG, CHIP_OPTS + ["MODEL.WEIGHTS", str(tmp_path / "chips.pth")]))
    image = np.random.default_rng(1).integers(0, 255, (50, 70, 3), dtype=np.uint8)
    with pytest.raises(ValueError, match="chip mode"):
        predictor(image)
    out = predictor(image, boxes=[[5, 5, 30, 40], [20, 10, 69, 49]], classes=[0, 2])
    assert out["box_masks"].shape == (2, 50, 70) and out["box_masks"].flatten(1).any(1).all()  # never empty
    assert not out["box_masks"][0, :, 31:].any()
    assert out["sem_seg"].shape == (NUM_CLASSES + 1, 50, 70) and out["box_scores"].shape == (2,)


def test_predictor_with_grabcut_weight_runs_grabcut_on_the_given_boxes(tmp_path):
    torch.manual_seed(0)
    model = build_model(setup_cfg(TINY_CFG, CHIP_OPTS))
    DetectionCheckpointer(model, save_dir=str(tmp_path)).save("chips")
    fused = CHIP_OPTS + ["MODEL.WEIGHTS", str(tmp_path / "chips.pth"), "MODEL.BOX2SEG.CHIPS.THRESHOLD", "0.5"]
    image = np.zeros((50, 70, 3), np.uint8)
    image[10:35, 8:28] = (40, 200, 90)  # an object GrabCut separates from the black background
    image[15:45, 35:65] = (200, 60, 30)
    boxes, classes = [[5, 5, 31, 40], [30, 10, 69, 49]], [0, 2]
    record = {"file_name": "", "image_id": 0, "annotations": [
        {"bbox": b, "bbox_mode": BoxMode.XYXY_ABS, "category_id": c} for b, c in zip(boxes, classes)]}
    own = compute_own_masks(image, record, GrabCutSettings())
    assert own.any(axis=(1, 2)).all()
    out = predict.Box2SegPredictor(predict.setup_predict_cfg(TINY_CFG, fused + ["MODEL.BOX2SEG.CHIPS.GRABCUT_WEIGHT",
                                                                                "0.6"]))(image, boxes, classes)
    assert np.array_equal(out["box_masks"].numpy(), own)  # weight 0.6 > threshold 0.5 > 0.4: GrabCut decides
    alone = predict.Box2SegPredictor(predict.setup_predict_cfg(TINY_CFG, fused))(image, boxes, classes)
    assert not np.array_equal(alone["box_masks"].numpy(), own)
