"""Export in chip mode: every non-crowd box gets a non-empty mask from its own chip, with its score; crowd
regions are copied through."""
import json

import torch
from detectron2.modeling import build_model

from box2seg.engine import setup_cfg
from box2seg.export import export_dataset

from .conftest import CONFIG

CHIP_OPTS = ["MODEL.BOX2SEG.CHIPS.ENABLED", "True", "MODEL.BOX2SEG.CHIPS.SIZE", "64", "INPUT.MIN_SIZE_TEST", "0"]


def test_chip_mode_export_gives_every_box_a_scored_mask(tmp_path, dataset, export_cfg):
    name, spec, _ = dataset
    torch.manual_seed(0)
    model = build_model(setup_cfg(CONFIG, ["MODEL.DEVICE", "cpu"] + CHIP_OPTS))
    weights = tmp_path / "chips.pth"
    torch.save({"model": model.state_dict()}, weights)
    summary = export_dataset(export_cfg(spec, name, str(weights), *CHIP_OPTS), name, tmp_path / "out", progress=False)
    anns = json.loads((tmp_path / "out" / "pseudo_masks.json").read_text())["annotations"]
    normal = [a for a in anns if not a["iscrowd"]]
    assert normal and all(a["area"] > 0 and a["mask_source"] == "box2seg" and 0 < a["score"] <= 1 for a in normal)
    assert all("score" not in a for a in anns if a["iscrowd"])
    assert summary["grabcut"] == 0 and summary["ellipse"] == 0
