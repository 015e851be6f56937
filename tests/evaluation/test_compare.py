"""box2seg.evaluation.compare: scoring a model's image-only and box-conditioned masks, extra box rules, table."""
import box2seg  # noqa: F401  (compat fixes before any detectron2 import)
import numpy as np
import torch
from detectron2.data import MetadataCatalog
from PIL import Image
from pycocotools import mask as mask_util

from box2seg.evaluation.compare import format_table, score_model
from box2seg.modeling.box_conditioned import box_conditioned_masks

DATASET = "box2seg_test_compare"


class SplitMassModel(torch.nn.Module):
    """Inside the box the foreground mass (0.6) is split over two classes, each below background (0.4)."""

    box_rule = "class"  # the rule its box_masks follow, as Box2Seg.box_rule

    def forward(self, inputs):
        probs = torch.zeros((3, 8, 8))
        probs[0] = 1.0
        probs[:, :4, :4] = torch.tensor([0.4, 0.35, 0.25])[:, None, None]
        boxes, classes = torch.tensor([[0.0, 0.0, 4.0, 4.0]]), torch.tensor([0])
        return [{"sem_seg": probs, "box_masks": box_conditioned_masks(probs, boxes, classes)} for _ in inputs]


def test_extra_box_rules_are_scored_on_the_same_forward_pass(tmp_path):
    MetadataCatalog.get(DATASET).set(thing_classes=["a", "b"], ignore_label=255)
    gt = np.zeros((8, 8), np.uint8)
    gt[:4, :4] = 1  # the object fills its box
    Image.fromarray(gt).save(tmp_path / "gt.png")
    true_mask = mask_util.encode(np.asfortranarray((gt == 1).astype(np.uint8)))
    record = {"file_name": "x.png", "height": 8, "width": 8, "sem_seg_file_name": str(tmp_path / "gt.png"),
              "annotations": [{"bbox": [0.0, 0.0, 4.0, 4.0], "category_id": 0, "segmentation": true_mask}]}
    loader = [[{"file_name": "x.png"}]]
    scores = score_model(SplitMassModel(), loader, DATASET, [record], extra_box_rules=("class", "foreground"))
    # The model's own rule is the plain box-conditioned row, not scored a second time.
    assert "Box2Seg box-conditioned (class rule)" not in scores
    # The method's rule: class 0 (0.35) never beats background (0.4) -> empty mask; foreground rule: 0.6 > 0.4.
    assert scores["Box2Seg box-conditioned"]["instance_mIoU"] == 0.0
    assert scores["Box2Seg box-conditioned (foreground rule)"]["instance_mIoU"] == 1.0
    assert scores["Box2Seg box-conditioned (foreground rule)"]["semantic_mIoU"] == 1.0
    table = format_table({"seed 0": scores})
    assert "| Box2Seg box-conditioned (foreground rule) | 100.0 | 100.0 |" in table
    assert "| Box2Seg box-conditioned | " in table


def test_grabcut_per_box_masks_are_its_own_masks_before_painting(tmp_path):
    """A big box whose GrabCut mask a smaller box painted over: per box it is scored with its own mask (the
    occluder's pixels included, as for the other baselines' masks), painted it loses them to the smaller box."""
    from box2seg.data.grabcut import encode_instance_map, overpainted, paint_instance_map
    from box2seg.evaluation.compare import score_baselines

    MetadataCatalog.get(DATASET).set(thing_classes=["a", "b"], ignore_label=255)
    big = np.zeros((10, 12), bool)
    big[2:9, 1:11] = True  # 70 px, annotation 0
    small = np.ones((4, 5), bool)  # annotation 1 over (4, 3)-(9, 7): 20 px inside the big mask
    extents = [(0, 0, 12, 10), (4, 3, 9, 7)]
    instance_map = paint_instance_map(10, 12, [big, small], extents, [120.0, 20.0], [0, 1])
    stats = {"boxes": [], "overpainted": overpainted(instance_map, [big, small], extents, [0, 1])}
    cache = tmp_path / "grabcut.png"
    cache.write_bytes(encode_instance_map(instance_map, stats))
    true = [instance_map == 1, instance_map == 2]  # the visible parts: GrabCut painted is exact
    gt = np.zeros((10, 12), np.uint8)
    gt[true[0]], gt[true[1]] = 1, 2
    Image.fromarray(gt).save(tmp_path / "gt.png")
    anns = [{"bbox": list(map(float, e)), "bbox_mode": 0, "category_id": c,
             "segmentation": mask_util.encode(np.asfortranarray(t.astype(np.uint8)))}
            for e, c, t in zip(extents, (0, 1), true)]
    record = {"file_name": "x.png", "height": 10, "width": 12, "sem_seg_file_name": str(tmp_path / "gt.png"),
              "grabcut_file_name": str(cache), "annotations": anns}
    scores = score_baselines(DATASET, [record])["GrabCut"]
    assert np.isclose(scores["instance_mIoU"], (50 / 70 + 1.0) / 2)
    assert np.isclose(scores["painted_mIoU"], 1.0)
