"""Box2SegDatasetMapper: image, boxes and the GrabCut class map stay aligned through the augmentations."""
import box2seg  # noqa: F401  (compat fixes before any detectron2 import)

import cv2
import numpy as np
import pytest
import torch
from detectron2.config import get_cfg
from detectron2.data import MetadataCatalog
from detectron2.data import transforms as T
from detectron2.structures import BoxMode

from box2seg.config import add_box2seg_config
from box2seg.data.mapper import Box2SegDatasetMapper

IGNORE = 255


def _write_record(tmp_path, boxes, classes, crowd=None, size=(90, 120), name="img", instance_map=None,
                  colours=None):
    """An image whose box k is painted ``colours[k]`` and an instance map whose box k is painted k + 1."""
    h, w = size
    crowd = crowd or [0] * len(boxes)
    image = np.full((h, w, 3), 20, np.uint8)
    inst = np.zeros((h, w), np.uint16)
    colours = colours or [(40 + 50 * k, 200 - 30 * k, 100) for k in range(len(boxes))]
    for k, (x0, y0, x1, y1) in enumerate(boxes):
        if crowd[k]:
            inst[y0:y1, x0:x1] = np.where(inst[y0:y1, x0:x1] == 0, 65535, inst[y0:y1, x0:x1])
        else:
            inst[y0:y1, x0:x1] = k + 1
            image[y0:y1, x0:x1] = colours[k]
    if instance_map is not None:
        inst = instance_map
    image_path, map_path = tmp_path / f"{name}.png", tmp_path / f"{name}_gc.png"
    cv2.imwrite(str(image_path), image)
    cv2.imwrite(str(map_path), inst)
    anns = [
        {"bbox": [float(v) for v in b], "bbox_mode": BoxMode.XYXY_ABS, "category_id": int(c),
         "iscrowd": int(cr), "id": k}
        for k, (b, c, cr) in enumerate(zip(boxes, classes, crowd))
    ]
    return {"file_name": str(image_path), "image_id": name, "height": h, "width": w, "annotations": anns,
            "grabcut_file_name": str(map_path)}


class _FixedCrop(T.Augmentation):
    def __init__(self, x0, y0, w, h):
        super().__init__()
        self._init(locals())

    def get_transform(self, image):
        return T.CropTransform(self.x0, self.y0, self.w, self.h)


def _cfg(resize="ResizeShortestEdge", crop=None, flip="horizontal"):
    cfg = get_cfg()
    add_box2seg_config(cfg)
    cfg.INPUT.RESIZE_TYPE = resize
    cfg.INPUT.MIN_SIZE_TRAIN = (64, 96, 128)
    cfg.INPUT.MAX_SIZE_TRAIN = 400
    cfg.INPUT.RESIZE_SCALE = (0.5, 2.0)
    cfg.INPUT.TARGET_SIZE = 128
    cfg.INPUT.MIN_SIZE_TEST = 180
    cfg.INPUT.MAX_SIZE_TEST = 400
    cfg.INPUT.CROP.ENABLED = crop is not None
    if crop is not None:
        cfg.INPUT.CROP.TYPE = "absolute"
        cfg.INPUT.CROP.SIZE = crop
    cfg.INPUT.RANDOM_FLIP = flip
    return cfg


def _rect(box, h, w, shrink=0.0):
    x0, y0, x1, y1 = box
    xs, ys = np.arange(w) + 0.5, np.arange(h) + 0.5
    return ((ys[:, None] > y0 + shrink) & (ys[:, None] < y1 - shrink)
            & (xs[None] > x0 + shrink) & (xs[None] < x1 - shrink))


@pytest.mark.parametrize("resize", ["ResizeShortestEdge", "ResizeScale"])
def test_boxes_labels_and_image_stay_aligned(tmp_path, resize):
    boxes = [(5, 8, 45, 40), (60, 30, 110, 85), (20, 50, 50, 88)]
    classes = [2, 0, 1]
    colours = [(250, 30, 30), (30, 250, 30), (30, 30, 250)]
    record = _write_record(tmp_path, boxes, classes, colours=colours)
    mapper = Box2SegDatasetMapper(_cfg(resize=resize, crop=(96, 96)), is_train=True)
    checked = 0
    for seed in range(12):
        np.random.seed(seed)
        out = mapper(record)
        labels, image = out["grabcut_labels"].numpy(), out["image"].numpy().transpose(1, 2, 0)
        h, w = labels.shape
        assert (h, w) == (96, 96) and image.shape[:2] == (96, 96)
        inst = out["instances"]
        # Every kept box: its pixels in M carry its class and the image carries its colour.
        for box, cls in zip(inst.gt_boxes.tensor.numpy(), inst.gt_classes.numpy()):
            src = classes.index(int(cls))
            inner = _rect(box, h, w, shrink=1.5)
            if inner.sum() < 4:
                continue
            assert (labels[inner] == cls + 1).mean() > 0.99
            assert np.abs(image[inner].astype(int) - colours[src]).max(axis=1).mean() < 20
            # and the box is tight around that label region (clipped to the output image)
            region = labels == cls + 1
            ys, xs = np.nonzero(region)
            assert abs(xs.min() - box[0]) <= 1.5 and abs(xs.max() + 1 - box[2]) <= 1.5
            assert abs(ys.min() - box[1]) <= 1.5 and abs(ys.max() + 1 - box[3]) <= 1.5
            checked += 1
        assert out["grabcut_labels"].dtype == torch.int64 and out["image"].dtype == torch.uint8
    assert checked >= 10


def test_padding_is_ignore_and_zero(tmp_path):
    record = _write_record(tmp_path, [(5, 5, 40, 30)], [0], size=(50, 70))
    mapper = Box2SegDatasetMapper(_cfg(resize="none", crop=(80, 100), flip="none"), is_train=True)
    out = mapper(record)
    labels, image = out["grabcut_labels"].numpy(), out["image"].numpy()
    assert labels.shape == (80, 100) and image.shape == (3, 80, 100)
    assert (labels[50:] == IGNORE).all() and (labels[:, 70:] == IGNORE).all()
    assert (image[:, 50:] == 0).all() and (image[:, :, 70:] == 0).all()
    assert (labels[:50, :70] != IGNORE).all()
    assert (labels[5:30, 5:40] == 1).all()


def test_crowd_regions_are_ignore(tmp_path):
    record = _write_record(tmp_path, [(10, 10, 60, 60), (40, 40, 80, 80)], [1, 0], crowd=[1, 0])
    mapper = Box2SegDatasetMapper(_cfg(resize="none", flip="none"), is_train=True)
    out = mapper(record)
    labels = out["grabcut_labels"].numpy()
    assert (labels[10:40, 10:60] == IGNORE).all()  # crowd box outside the normal box
    assert (labels[40:80, 40:80] == 1).all()  # the normal box wins where it overlaps the crowd box
    assert out["instances"].gt_is_crowd.tolist() == [True, False]


def test_cut_boxes_are_dropped_and_counted(tmp_path):
    # Crop x in [30, 120): box 0 keeps 2 of 40 columns (5% < 10%), box 1 keeps half, box 2 is gone.
    boxes = [(0, 10, 32, 50), (20, 50, 40, 80), (0, 60, 10, 70)]
    record = _write_record(tmp_path, boxes, [0, 1, 2])
    mapper = Box2SegDatasetMapper(
        is_train=True, augmentations=[_FixedCrop(30, 0, 90, 90)], image_format="BGR", ignore_label=IGNORE,
        min_box_area_kept=0.1,
    )
    out = mapper(record)
    assert out["num_dropped_boxes"] == 2 and mapper.num_dropped_boxes == 2
    inst = out["instances"]
    assert inst.gt_classes.tolist() == [1]
    assert torch.allclose(inst.gt_boxes.tensor, torch.tensor([[0.0, 50.0, 10.0, 80.0]]))
    labels = out["grabcut_labels"].numpy()
    assert (labels[10:50, 0:2] == IGNORE).all()  # the sliver of the dropped box is not a target
    assert (labels[50:80, 0:10] == 2).all()


def test_deterministic_with_fixed_seed(tmp_path):
    record = _write_record(tmp_path, [(5, 8, 45, 40), (60, 30, 110, 85)], [0, 1])
    mapper = Box2SegDatasetMapper(_cfg(resize="ResizeScale", crop=(64, 64)), is_train=True)
    runs = []
    for seed in (7, 7, 8):
        np.random.seed(seed)
        runs.append(mapper(record))
    a, b, c = runs
    assert torch.equal(a["image"], b["image"]) and torch.equal(a["grabcut_labels"], b["grabcut_labels"])
    assert torch.equal(a["instances"].gt_boxes.tensor, b["instances"].gt_boxes.tensor)
    assert not (torch.equal(a["image"], c["image"]) and torch.equal(a["grabcut_labels"], c["grabcut_labels"]))


def test_missing_grabcut_is_a_clear_error_in_training_only(tmp_path):
    record = _write_record(tmp_path, [(5, 8, 45, 40)], [0])
    del record["grabcut_file_name"]
    with pytest.raises(KeyError, match=r"img\.png.*box2seg prepare-grabcut"):
        Box2SegDatasetMapper(_cfg(), is_train=True)(record)
    out = Box2SegDatasetMapper(_cfg(), is_train=False)(record)
    # test time: shortest edge 90 -> 180, boxes scaled, annotations kept
    assert out["image"].shape == (3, 180, 240)
    assert torch.allclose(out["instances"].gt_boxes.tensor, torch.tensor([[10.0, 16.0, 90.0, 80.0]]))
    assert "grabcut_labels" not in out and out["height"] == 90 and out["width"] == 120


def test_output_shapes_do_not_depend_on_the_number_of_classes(tmp_path):
    """601 classes (Open Images): uint16 maps, ignore 65535, same output shapes as with 3 classes."""
    boxes = [(5, 8, 45, 40), (60, 30, 110, 85)]
    shapes = {}
    for num_classes, classes in ((3, [0, 2]), (601, [599, 600])):
        ignore = 255 if num_classes + 1 <= 255 else 65535
        name = f"box2seg_test_mapper_{num_classes}"
        MetadataCatalog.get(name).set(thing_classes=[f"c{i}" for i in range(num_classes)], ignore_label=ignore)
        record = _write_record(tmp_path, boxes, classes, name=name)
        record["verified_classes"] = classes
        cfg = _cfg(resize="ResizeShortestEdge", crop=(128, 128))
        cfg.DATASETS.TRAIN = (name,)
        mapper = Box2SegDatasetMapper(cfg, is_train=True)
        assert mapper.ignore_label == ignore
        np.random.seed(0)
        out = mapper(record)
        labels = out["grabcut_labels"]
        assert labels.dtype == torch.int64 and "sem_seg" not in out
        assert set(labels.unique().tolist()) <= {0, classes[0] + 1, classes[1] + 1, ignore}
        assert classes[1] + 1 in labels.unique().tolist()
        assert (labels == ignore).any()  # padding up to the 128 crop
        assert out["verified_classes"].tolist() == classes
        shapes[num_classes] = {k: tuple(v.shape) for k, v in out.items() if torch.is_tensor(v)}
        shapes[num_classes]["gt_classes"] = tuple(out["instances"].gt_classes.shape)
    assert shapes[3] == shapes[601]
