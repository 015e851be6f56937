"""Stock Mask R-CNN (Lite0-FPN) on a pseudo-mask COCO JSON (box2seg.maskrcnn): its config, its checked
training batches, refused inputs, the shipped configs. Training and COCO evaluation end to end are in
tests/commands/test_train_maskrcnn.py."""
import json
import os

import box2seg  # noqa: F401
import cv2
import numpy as np
import pycocotools.mask as mask_util
import pytest
import torch

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.modeling import build_model
from detectron2.structures import BitMasks, Boxes, Instances
from detectron2.utils.events import EventStorage

from box2seg import maskrcnn
from box2seg.engine import setup_cfg
from box2seg.evaluation.box_scorer import BoxScorer, baseline_masks
from box2seg.structures import PIXEL_CENTRES, box_pixel_masks, record_boxes

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LITE0_CFG = os.path.join(REPO, "configs", "maskrcnn", "mask_rcnn_lite0_FPN_pseudo.yaml")
CATEGORIES = [{"id": 1, "name": "disc"}, {"id": 2, "name": "diamond"}]


def make_shapes_json(root, num_images=4, size=96, seed=0, with_masks=True):
    """A few box2seg_shapes-like scenes: discs and diamonds (masks far from their filled boxes), as a COCO
    instances JSON with compressed-RLE masks. Returns (json path, image folder)."""
    rng = np.random.default_rng(seed)
    image_dir = root / "images"
    image_dir.mkdir(parents=True, exist_ok=True)
    yy, xx = np.mgrid[:size, :size] + 0.5
    colours = [(40, 200, 240), (220, 90, 60)]
    images, anns = [], []
    for i in range(num_images):
        image = rng.integers(0, 80, (size, size, 3), dtype=np.uint8)
        for k in range(2):
            r = rng.uniform(12, 20)
            cx, cy = rng.uniform(r + 2, size - r - 2, 2)
            mask = (xx - cx) ** 2 + (yy - cy) ** 2 <= r * r if k == 0 else np.abs(xx - cx) + np.abs(yy - cy) <= r
            image[mask] = colours[k]
            ys, xs = np.nonzero(mask)
            x0, y0, x1, y1 = int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1
            ann = {"id": len(anns) + 1, "image_id": i + 1, "category_id": k + 1, "bbox": [x0, y0, x1 - x0, y1 - y0],
                   "area": int(mask.sum()), "iscrowd": 0}
            if with_masks:
                rle = mask_util.encode(np.asfortranarray(mask.astype(np.uint8)))
                ann["segmentation"] = {"size": rle["size"], "counts": rle["counts"].decode("ascii")}
            anns.append(ann)
        cv2.imwrite(str(image_dir / f"{i:03d}.png"), image)
        images.append({"id": i + 1, "file_name": f"{i:03d}.png", "height": size, "width": size})
    json_file = root / "instances.json"
    json_file.write_text(json.dumps({"info": {}, "images": images, "annotations": anns, "categories": CATEGORIES}))
    return str(json_file), str(image_dir)


TINY_OPTS = [
    "MODEL.EFFICIENTNET.PRETRAINED", "False",
    "MODEL.FPN.OUT_CHANNELS", "32",
    "MODEL.ROI_BOX_HEAD.FC_DIM", "64",
    "MODEL.ROI_MASK_HEAD.CONV_DIM", "32",
    "MODEL.RPN.PRE_NMS_TOPK_TRAIN", "200", "MODEL.RPN.POST_NMS_TOPK_TRAIN", "32",
    "MODEL.RPN.PRE_NMS_TOPK_TEST", "100", "MODEL.RPN.POST_NMS_TOPK_TEST", "32",
    "MODEL.RPN.BATCH_SIZE_PER_IMAGE", "64",
    "MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE", "32",
    "MODEL.ROI_HEADS.SCORE_THRESH_TEST", "0.0",
    "TEST.DETECTIONS_PER_IMAGE", "20",
    "INPUT.MIN_SIZE_TRAIN", "(96,)", "INPUT.MAX_SIZE_TRAIN", "128",
    "INPUT.MIN_SIZE_TEST", "96", "INPUT.MAX_SIZE_TEST", "128",
    "SOLVER.IMS_PER_BATCH", "2", "SOLVER.MAX_ITER", "2", "SOLVER.STEPS", "()", "SOLVER.WARMUP_ITERS", "1",
    "SOLVER.BASE_LR", "0.001", "SOLVER.CHECKPOINT_PERIOD", "1000",
    "DATALOADER.NUM_WORKERS", "0",
]


def setup(config_file, *opts, **kwargs):
    return maskrcnn.setup_maskrcnn_cfg(config_file, list(opts), **kwargs)


def test_training_batches_carry_the_pseudo_masks(tmp_path):
    train_json, image_root = make_shapes_json(tmp_path / "pseudo", seed=0)
    gt_json, gt_root = make_shapes_json(tmp_path / "gt", num_images=2, seed=1)
    cfg = setup(LITE0_CFG, *TINY_OPTS, "OUTPUT_DIR", str(tmp_path / "out"), train_json=train_json,
                image_root=image_root, eval_json=gt_json, eval_image_root=gt_root)
    assert cfg.MODEL.ROI_HEADS.NUM_CLASSES == 2 and cfg.DATASETS.TRAIN == (maskrcnn.TRAIN_NAME,)
    assert cfg.DATASETS.TEST == (maskrcnn.EVAL_NAME,) and cfg.is_frozen()
    torch.manual_seed(0)
    # The training batches carry the pseudo-masks themselves, not filled boxes.
    batch = next(iter(maskrcnn.MaskRCNNTrainer.build_train_loader(cfg)))
    for item in batch:
        inst = item["instances"]
        masks = inst.gt_masks.tensor
        filled = box_pixel_masks(inst.gt_boxes.tensor, *masks.shape[-2:], PIXEL_CENTRES)
        iou = (masks & filled).sum((1, 2)).float() / (masks | filled).sum((1, 2)).float()
        assert len(masks) and (iou < 0.9).all() and (iou > 0.3).all(), iou


def test_box_only_json_and_class_mismatch_are_refused(tmp_path):
    boxes_json, image_root = make_shapes_json(tmp_path / "boxes", num_images=1, with_masks=False)
    with pytest.raises(ValueError, match="no 'segmentation'"):
        setup(LITE0_CFG, "OUTPUT_DIR", str(tmp_path / "o1"), train_json=boxes_json, image_root=image_root)

    train_json, image_root = make_shapes_json(tmp_path / "pseudo", num_images=1)
    other_json, other_root = make_shapes_json(tmp_path / "other", num_images=1)
    data = json.loads(open(other_json).read())
    data["categories"][1]["name"] = "star"
    open(other_json, "w").write(json.dumps(data))
    with pytest.raises(ValueError, match="star"):
        setup(LITE0_CFG, "OUTPUT_DIR", str(tmp_path / "o2"), train_json=train_json, image_root=image_root,
              eval_json=other_json, eval_image_root=other_root)
    with pytest.raises(ValueError, match="--eval-only needs --eval-json"):
        setup(LITE0_CFG, train_json=train_json, image_root=image_root, eval_only=True)


def test_missing_masks_and_polygon_format_are_reported():
    rle = {"size": [4, 4], "counts": "04L4"}
    records = [{"file_name": "/x/a.png", "annotations": [{"bbox": [0, 0, 2, 2], "segmentation": rle, "iscrowd": 0}]}]
    with pytest.raises(ValueError, match="MASK_FORMAT bitmask"):
        maskrcnn.check_pseudo_masks(records, ["p.json"], "polygon")
    maskrcnn.check_pseudo_masks(records, ["p.json"], "bitmask")
    records[0]["annotations"].append({"bbox": [1, 1, 3, 3], "iscrowd": 0})
    with pytest.raises(ValueError, match=r"annotation #1 of image /x/a.png"):
        maskrcnn.check_pseudo_masks(records, ["p.json"], "bitmask")


@pytest.mark.parametrize("name", ["mask_rcnn_R_50_FPN_pseudo.yaml", "mask_rcnn_lite0_FPN_pseudo.yaml"])
def test_shipped_configs_build_and_train_one_step(name):
    """Both downstream configs build detectron2's stock Mask R-CNN (no weights downloaded) and give finite
    losses with bitmask targets."""
    cfg = setup_cfg(os.path.join(REPO, "configs", "maskrcnn", name), freeze=False)
    assert cfg.MODEL.META_ARCHITECTURE == "GeneralizedRCNN" and cfg.MODEL.MASK_ON
    assert cfg.INPUT.MASK_FORMAT == "bitmask"
    cfg.merge_from_list(["MODEL.WEIGHTS", "", "MODEL.DEVICE", "cpu", "MODEL.EFFICIENTNET.PRETRAINED", "False",
                         "MODEL.ROI_HEADS.NUM_CLASSES", "2"])
    torch.manual_seed(0)
    model = build_model(cfg)
    model.train()
    inst = Instances((64, 64))
    inst.gt_boxes = Boxes(torch.tensor([[4.0, 6.0, 40.0, 50.0]]))
    inst.gt_classes = torch.tensor([1])
    masks = torch.zeros((1, 64, 64), dtype=torch.bool)
    masks[0, 10:45, 8:36] = True
    inst.gt_masks = BitMasks(masks)
    image = torch.randint(0, 255, (3, 64, 64), dtype=torch.uint8)
    with EventStorage(0):  # GeneralizedRCNN logs training statistics
        losses = model([{"image": image, "instances": inst, "height": 64, "width": 64}])
    assert "loss_mask" in losses and all(torch.isfinite(v) for v in losses.values())


class FilledBoxMaskHead(torch.nn.Module):
    """A stand-in for a trained Mask R-CNN on the ``detected_instances`` path: each given box (in the resized
    input's frame, as detectron2 passes it) filled, pasted back at the image's own size."""

    def __init__(self):
        super().__init__()
        self.calls = []

    def inference(self, batched_inputs, detected_instances=None, do_postprocess=True):
        (inp,), (given,) = batched_inputs, detected_instances
        th, tw = inp["image"].shape[-2:]
        h, w = inp["height"], inp["width"]
        self.calls.append((tuple(given.image_size), (th, tw), given.pred_classes.tolist()))
        boxes = given.pred_boxes.tensor.numpy() / np.array([tw / w, th / h, tw / w, th / h])
        out = Instances((h, w))
        out.pred_masks = torch.as_tensor(baseline_masks("box", boxes, h, w))
        return [{"instances": out}]


def test_given_box_score_feeds_the_true_boxes_in_the_resized_frame(tmp_path):
    """The true boxes reach the mask head scaled to the test-time resize, with their true classes, and the
    masks that come back are scored by the one per-box scorer against the true masks."""
    train_json, image_root = make_shapes_json(tmp_path / "pseudo", num_images=1)
    gt_json, gt_root = make_shapes_json(tmp_path / "gt", num_images=3, seed=2)
    cfg = setup(LITE0_CFG, *TINY_OPTS, "INPUT.MIN_SIZE_TEST", "144", "INPUT.MAX_SIZE_TEST", "200",
                "OUTPUT_DIR", str(tmp_path / "out"), train_json=train_json, image_root=image_root,
                eval_json=gt_json, eval_image_root=gt_root)
    model = FilledBoxMaskHead()
    scores = maskrcnn.given_box_scores(cfg, model, progress=False)

    assert [c[:2] for c in model.calls] == [((144, 144), (144, 144))] * 3
    assert all(c[2] == [0, 1] for c in model.calls)  # contiguous true classes: disc, diamond
    expected = BoxScorer()
    for record in DatasetCatalog.get(maskrcnn.EVAL_NAME):
        boxes, _, _ = record_boxes(record)
        true = np.stack([mask_util.decode(dict(a["segmentation"], counts=a["segmentation"]["counts"].encode()))
                         for a in record["annotations"]]).astype(bool)
        expected.add(baseline_masks("box", boxes, record["height"], record["width"]), boxes, true)
    assert scores["count"] == 6 and scores == pytest.approx(dict(expected.figures(), count=6), nan_ok=True)
    assert 0.3 < scores["per_box"] < 0.9  # discs and diamonds are far from their filled boxes


def test_given_box_score_of_a_real_mask_rcnn_and_the_report(tmp_path):
    """detectron2's own detected_instances path on the Lite0-FPN Mask R-CNN: one mask per true box, at the
    image's size; the command's report flags an uninformative box AP and prints the given-box score."""
    from box2seg.commands.train_maskrcnn import format_results

    train_json, image_root = make_shapes_json(tmp_path / "pseudo", num_images=1)
    gt_json, gt_root = make_shapes_json(tmp_path / "gt", num_images=2, seed=3)
    cfg = setup(LITE0_CFG, *TINY_OPTS, "OUTPUT_DIR", str(tmp_path / "out"), train_json=train_json,
                image_root=image_root, eval_json=gt_json, eval_image_root=gt_root)
    torch.manual_seed(0)
    model = build_model(cfg)
    model.train()
    scores = maskrcnn.given_box_scores(cfg, model, progress=False)
    assert model.training  # its mode is restored
    assert scores["count"] == 4 and 0.0 <= scores["per_box"] <= 1.0 and 0.0 <= scores["painted"] <= 1.0

    results = {"segm": {"AP": 1.0}, "bbox": {"AP": 4.0}, maskrcnn.GIVEN_BOXES: scores}
    lines = format_results(results)
    assert any("not informative: box AP 4.0 < 10" in line for line in lines)
    assert any(line.startswith("mask head given the true boxes (4 boxes): per box") for line in lines)
    assert not maskrcnn.box_ap_note({"bbox": {"AP": 35.0}})


def test_filled_box_json_replaces_every_mask_by_its_box(tmp_path):
    gt_json, _ = make_shapes_json(tmp_path / "gt", num_images=2)
    out = maskrcnn.write_filled_box_json(gt_json, str(tmp_path / "boxes.json"))
    data = json.loads(open(out).read())
    for ann in data["annotations"]:
        rle = dict(ann["segmentation"], counts=ann["segmentation"]["counts"].encode())
        x, y, w, h = ann["bbox"]
        mask = mask_util.decode(rle).astype(bool)
        assert mask.sum() == ann["area"] == w * h  # integer boxes: exactly the box's pixels
        assert mask[int(y):int(y + h), int(x):int(x + w)].all()


def test_ellipse_json_holds_the_scorers_ellipse_inside_each_box(tmp_path):
    gt_json, _ = make_shapes_json(tmp_path / "gt", num_images=2)
    out = maskrcnn.write_baseline_mask_json(gt_json, str(tmp_path / "ellipses.json"), "ellipse")
    data = json.loads(open(out).read())
    sizes = {im["id"]: (im["height"], im["width"]) for im in data["images"]}
    for ann in data["annotations"]:
        rle = dict(ann["segmentation"], counts=ann["segmentation"]["counts"].encode())
        x, y, w, h = ann["bbox"]
        mask = mask_util.decode(rle).astype(bool)
        (expected,) = baseline_masks("ellipse", [[x, y, x + w, y + h]], *sizes[ann["image_id"]])
        assert np.array_equal(mask, expected) and ann["area"] == expected.sum()
        assert 0.70 * w * h < mask.sum() < 0.86 * w * h  # pi / 4 of the box, up to pixel rounding
        assert not mask[:, : int(x)].any() and not mask[: int(y)].any()  # nothing outside the box


def test_indexed_shard_files_train_lazily(tmp_path):
    """Shard files written by export's indexed writer are read lazily for training (export.shards): the
    config takes the list, and the batches carry the same pseudo-masks as the plain JSON gives."""
    from box2seg.export.folder import dumps
    from box2seg.export.indexed import write_indexed_coco

    train_json, image_root = make_shapes_json(tmp_path / "pseudo", seed=0)
    with open(train_json) as f:
        doc = json.load(f)
    shards = []
    for k in range(2):  # two shard files, images split between them
        images = doc["images"][k::2]
        ids = {img["id"]: j for j, img in enumerate(images)}
        anns = [a for a in doc["annotations"] if a["image_id"] in ids]
        head = [(key, value) for key, value in doc.items() if key not in ("images", "annotations")]
        path = tmp_path / f"shard-{k:05d}-of-00002.json"
        write_indexed_coco(path, head + [("images", []), ("annotations", [])],
                           ((j, dumps(img)) for j, img in enumerate(images)),
                           ((a["id"], ids[a["image_id"]], a.get("iscrowd", 0), dumps(a)) for a in anns), {})
        shards.append(str(path))
    cfg = setup(LITE0_CFG, *TINY_OPTS, "OUTPUT_DIR", str(tmp_path / "out"), train_json=shards, image_root=image_root)
    assert MetadataCatalog.get(cfg.DATASETS.TRAIN[0]).pseudo_mask_files == shards
    assert cfg.MODEL.ROI_HEADS.NUM_CLASSES == 2
    torch.manual_seed(0)
    batch = next(iter(maskrcnn.MaskRCNNTrainer.build_train_loader(cfg)))
    for item in batch:
        masks = item["instances"].gt_masks.tensor
        filled = box_pixel_masks(item["instances"].gt_boxes.tensor, *masks.shape[-2:], PIXEL_CENTRES)
        iou = (masks & filled).sum((1, 2)).float() / (masks | filled).sum((1, 2)).float()
        assert len(masks) and (iou < 0.9).all() and (iou > 0.3).all(), iou
