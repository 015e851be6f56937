"""export.masks: the empty-mask fallbacks, GrabCut computed on demand into the shared cache."""
import json
import uuid

import numpy as np
import pytest
import torch
from detectron2.data import DatasetCatalog

from box2seg.data.datasets.common import unregister
from box2seg.data.grabcut import GrabCutSettings
from box2seg.data.grabcut_job import prepare_dataset
from box2seg.export import ExportError, export_dataset, fill_empty_masks
from box2seg.export.masks import image_part, record_scores


def test_fill_empty_masks_grabcut_then_ellipse():
    masks = np.zeros((4, 20, 20), bool)
    masks[0, 2:5, 2:5] = True
    boxes = np.array([[0, 0, 10, 10], [10, 0, 20, 10], [0, 10, 12, 20], [10, 10, 20, 20]], float)
    crowd = np.array([False, False, False, True])
    instance_map = np.zeros((20, 20), np.uint16)
    instance_map[1:9, 11:19] = 2  # box 1's GrabCut; box 2 has none left
    calls = []
    out, sources = fill_empty_masks(masks, boxes, crowd, lambda: calls.append(1) or instance_map)
    assert sources.tolist() == [0, 1, 2, -1] and calls == [1]
    assert (out[0] == masks[0]).all() and (out[1] == (instance_map == 2)).all()
    assert out[2].any() and not out[2][:10].any() and not out[2][:, 12:].any()  # the ellipse, inside its box
    assert not out[3].any()
    # Nothing empty: the GrabCut map is never read.
    _, sources = fill_empty_masks(masks[:1], boxes[:1], crowd[:1], lambda: pytest.fail("read"))
    assert sources.tolist() == [0]


def test_empty_masks_fall_back_to_grabcut_computed_on_demand(tmp_path, weights, fresh_cache, make_coco, export_cfg,
                                                             scored_model):
    json_file, image_root = make_coco(tmp_path / "data", num_images=2)
    name = f"export_bg_{uuid.uuid4().hex[:8]}"
    spec = f"{name}={json_file}:{image_root}"
    background = lambda images: torch.nn.functional.one_hot(  # noqa: E731  (everything background)
        torch.zeros_like(images.tensor[:, 0], dtype=torch.long), 4).permute(0, 3, 1, 2).float()
    try:
        strict = export_cfg(spec, name, weights[0], "GRABCUT.PREPARE_IF_MISSING", "False")
        with pytest.raises(ExportError, match=f"box2seg prepare-grabcut --dataset {name}"):
            export_dataset(strict, name, tmp_path / "strict", progress=False, model=scored_model(strict, background))
        cfg = export_cfg(spec, name, weights[0])
        summary = export_dataset(cfg, name, tmp_path / "out", progress=False, model=scored_model(cfg, background))
        assert summary["box2seg"] == 0 and summary["grabcut"] + summary["ellipse"] == summary["boxes"] > 0
        assert summary["grabcut"] > 0 and summary["grabcut_computed"] == 2
        # The on-demand maps are the cache's own files: prepare-grabcut finds them all done.
        done = prepare_dataset(name, DatasetCatalog.get(name), GrabCutSettings.from_config(cfg), progress=False)
        assert done["computed"] == 0 and done["reused"] == 2
    finally:
        unregister(name)
    pred = json.loads((tmp_path / "out" / "pseudo_masks.json").read_text())
    sources = [a.get("mask_source") for a in pred["annotations"] if not a["iscrowd"]]
    assert sources.count("grabcut") == summary["grabcut"]
    assert all(a["area"] > 0 for a in pred["annotations"] if not a["iscrowd"])


class _Source:
    """The part of export.source.Source that image_part calls."""

    def annotation(self, record_index, record, k, rle=None, area=0, source_kind=None):
        return k, {"id": k, "segmentation": rle, "area": int(area), "mask_source": source_kind}


def test_image_part_writes_each_masks_score_when_the_model_gives_one():
    record = {"height": 8, "width": 8, "annotations": [
        {"bbox": [0, 0, 4, 4], "bbox_mode": 0, "category_id": 0}, {"bbox": [4, 4, 8, 8], "bbox_mode": 0, "category_id": 0}]}
    masks = np.zeros((2, 8, 8), bool)
    masks[0, :4, :4] = masks[1, 4:, 4:] = True
    out = {"box_masks": torch.from_numpy(masks), "box_scores": torch.tensor([0.91234, 0.5])}
    scores = record_scores(record, {}, out)
    items, _ = image_part(0, record, masks, _Source(), lambda r: pytest.fail("no fallback needed"), scores)
    assert [ann["score"] for _, ann in items] == [0.9123, 0.5]
    assert record_scores(record, {}, {"box_masks": out["box_masks"]}) is None  # whole-image mode: none
    items, _ = image_part(0, record, masks, _Source(), lambda r: None)
    assert all("score" not in ann for _, ann in items)
