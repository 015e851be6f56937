"""engine.load_weights: weights whose heads do not fit the config are refused by name (issue 13 item 2)."""
import os

import pytest
import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.modeling import build_model

from box2seg.engine import PartialWeightsError, load_weights, setup_cfg

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TINY_CFG = os.path.join(REPO, "configs", "tests", "box2seg_tiny.yaml")  # 3 classes + background


def _model(num_classes=4, seed=0):
    torch.manual_seed(seed)
    return build_model(setup_cfg(TINY_CFG, ["MODEL.SEM_SEG_HEAD.NUM_CLASSES", str(num_classes)]))


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    folder = tmp_path_factory.mktemp("weights")
    DetectionCheckpointer(_model(6), save_dir=str(folder)).save("six")
    DetectionCheckpointer(_model(4), save_dir=str(folder)).save("four")
    # A Mask R-CNN checkpoint shares no key with the Box2Seg model.
    torch.save({"model": {"roi_heads.box_predictor.cls_score.weight": torch.zeros(81, 1024),
                          "proposal_generator.rpn_head.conv.weight": torch.zeros(256, 256, 3, 3)}},
               folder / "maskrcnn.pth")
    return folder


def test_matching_weights_load(checkpoints):
    model = _model(4, seed=1)
    load_weights(model, str(checkpoints / "four.pth"))
    saved = torch.load(checkpoints / "four.pth", weights_only=False)["model"]
    for key, value in model.state_dict().items():
        assert torch.equal(value, saved[key]), key


def test_heads_of_another_class_count_are_refused_by_name(checkpoints):
    with pytest.raises(PartialWeightsError, match="another shape") as err:
        load_weights(_model(4), str(checkpoints / "six.pth"))
    message = str(err.value)
    assert "(6," in message and "(4," in message and "--allow-partial-weights" in message
    assert isinstance(err.value, ValueError)


def test_maskrcnn_weights_are_refused_naming_missing_keys(checkpoints):
    model = _model(4)
    with pytest.raises(PartialWeightsError, match="missing") as err:
        load_weights(model, str(checkpoints / "maskrcnn.pth"))
    assert next(iter(model.state_dict())) in str(err.value)
    assert "roi_heads.box_predictor.cls_score.weight" in str(err.value)


def test_allow_partial_loads_what_fits(checkpoints):
    model = _model(4)
    load_weights(model, str(checkpoints / "six.pth"), allow_partial=True)
    load_weights(model, str(checkpoints / "maskrcnn.pth"), allow_partial=True)


def test_no_weights_is_refused():
    with pytest.raises(PartialWeightsError, match="MODEL.WEIGHTS"):
        load_weights(_model(4), "")
