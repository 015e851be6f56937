"""Export in chip mode: every non-crowd box gets a non-empty mask from its own chip, with its score; crowd
regions are copied through."""
import json
import uuid

import numpy as np
import pycocotools.mask as mask_util
import pytest
import torch
from detectron2.data import DatasetCatalog
from detectron2.modeling import build_model

from box2seg.data.datasets.common import unregister
from box2seg.data.grabcut import (GrabCutSettings, attach_grabcut_files, load_instance_map, own_grabcut_masks,
                                  read_png_stats)
from box2seg.engine import setup_cfg
from box2seg.export import ExportError, export_dataset
from box2seg.structures import PIXEL_CENTRES, box_pixel_masks, record_boxes

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


def test_grabcut_weight_exports_grabcut_averaged_masks_from_every_images_labels(tmp_path, make_coco, export_cfg):
    """CHIPS.GRABCUT_WEIGHT in an export: each pending image's GrabCut labels are read (computed first where
    missing, or the prepare-grabcut command named when that is off) and reach the model; at weight 0.6 and
    threshold 0.5 each exported mask is its box's own GrabCut mask inside the box."""
    json_file, image_root = make_coco(tmp_path / "coco", num_images=3)
    name = f"export_fusion_{uuid.uuid4().hex[:8]}"
    spec = f"{name}={json_file}:{image_root}"
    try:
        torch.manual_seed(0)
        model = build_model(setup_cfg(CONFIG, ["MODEL.DEVICE", "cpu"] + CHIP_OPTS))
        weights = str(tmp_path / "chips.pth")
        torch.save({"model": model.state_dict()}, weights)
        fused = CHIP_OPTS + ["MODEL.BOX2SEG.CHIPS.GRABCUT_WEIGHT", "0.6", "MODEL.BOX2SEG.CHIPS.THRESHOLD", "0.5"]
        with pytest.raises(ExportError, match="prepare-grabcut"):
            export_dataset(export_cfg(spec, name, weights, *fused, "GRABCUT.PREPARE_IF_MISSING", "False"), name,
                           tmp_path / "refused", progress=False)
        cfg = export_cfg(spec, name, weights, *fused)
        summary = export_dataset(cfg, name, tmp_path / "fused", progress=False)
        assert summary["grabcut_computed"] == 3
        records = attach_grabcut_files(name, DatasetCatalog.get(name), GrabCutSettings.from_config(cfg))
        anns = json.loads((tmp_path / "fused" / "pseudo_masks.json").read_text())["annotations"]
        checked = 0
        for record in records:
            own = own_grabcut_masks(load_instance_map(record), read_png_stats(record["grabcut_file_name"]),
                                    len(record["annotations"]))
            boxes = torch.as_tensor(record_boxes(record)[0], dtype=torch.float32)
            inside = box_pixel_masks(boxes, record["height"], record["width"], PIXEL_CENTRES).numpy()
            for k, ann in enumerate(record["annotations"]):
                if ann.get("iscrowd") or not (own[k] & inside[k]).any():
                    continue
                x0, y0, x1, y1 = boxes[k].tolist()
                (out,) = [a for a in anns if a["image_id"] == record["image_id"]
                          and np.allclose(a["bbox"], [x0, y0, x1 - x0, y1 - y0])]
                assert np.array_equal(mask_util.decode(out["segmentation"]).astype(bool), own[k] & inside[k])
                checked += 1
        assert checked >= 3
    finally:
        unregister(name)
