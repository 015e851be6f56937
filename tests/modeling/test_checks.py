"""modeling.checks: config values are validated when the model is built, naming the key and the allowed
values (issue 13 item 8): a BOX_RULE typo used to train to model_final.pth and fail at the final
evaluation, TEST.SCALES [] gave ZeroDivisionError, LOSS.TERMS [] 'int' object has no attribute 'backward'."""
import os

import pytest
from detectron2.modeling import build_model

from box2seg.engine import setup_cfg
from box2seg.modeling.checks import ConfigValueError, check_box2seg_config

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TINY_CFG = os.path.join(REPO, "configs", "tests", "box2seg_tiny.yaml")


def _cfg(*opts):
    return setup_cfg(TINY_CFG, ["MODEL.DEVICE", "cpu", *opts])


@pytest.mark.parametrize("opts, match", [
    (["MODEL.BOX2SEG.TEST.BOX_RULE", "clas"], r"MODEL.BOX2SEG.TEST.BOX_RULE='clas'.*'class', 'foreground'"),
    (["MODEL.BOX2SEG.TEST.SCALES", "[]"], r"MODEL.BOX2SEG.TEST.SCALES"),
    (["MODEL.BOX2SEG.TEST.SCALES", "[1.0, 0.0]"], r"MODEL.BOX2SEG.TEST.SCALES.*positive"),
    (["MODEL.BOX2SEG.LOSS.TERMS", "[]"], r"MODEL.BOX2SEG.LOSS.TERMS.*'gc', 'fg', 'bg', 'fr', 'aff'"),
    (["MODEL.BOX2SEG.LOSS.TERMS", "['gc', 'affinity']"], r"MODEL.BOX2SEG.LOSS.TERMS.*'affinity'.*'aff'"),
    (["MODEL.BOX2SEG.DECODER_MODE", "share"], r"MODEL.BOX2SEG.DECODER_MODE='share'.*'faithful'"),
    (["MODEL.BOX2SEG.AFFINITY.DETACH", "both"], r"MODEL.BOX2SEG.AFFINITY.DETACH='both'.*'segmentation'"),
    (["SOLVER.OPTIMIZER", "adamw"], r"SOLVER.OPTIMIZER='adamw'.*'SGD', 'AdamW'"),
    (["MODEL.UPERNET.NORM", "gn"], r"MODEL.UPERNET.NORM='gn'.*'GN'"),
    (["MODEL.BOX2SEG.AFFINITY.BOUNDARY_FRACTION", "1.5"], r"MODEL.BOX2SEG.AFFINITY.BOUNDARY_FRACTION"),
    (["MODEL.SEM_SEG_HEAD.NUM_CLASSES", "1"], r"MODEL.SEM_SEG_HEAD.NUM_CLASSES=1"),
])
def test_bad_values_are_refused_when_the_model_is_built(opts, match):
    cfg = _cfg(*opts)
    with pytest.raises(ConfigValueError, match=match):
        build_model(cfg)
    with pytest.raises(ValueError, match=match):  # a ValueError: cli prints it in one line
        check_box2seg_config(cfg)


def test_the_shipped_configs_pass():
    check_box2seg_config(_cfg())
    check_box2seg_config(_cfg("MODEL.BOX2SEG.TEST.BOX_RULE", "foreground", "MODEL.BOX2SEG.LOSS.TERMS", "['gc']",
                              "MODEL.BOX2SEG.DECODER_MODE", "shared", "SOLVER.OPTIMIZER", "AdamW"))
