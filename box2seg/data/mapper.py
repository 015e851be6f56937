"""``Box2SegDatasetMapper``: one dataset dict -> image, boxes and the GrabCut class map M, augmented together.

Like detectron2's ``DatasetMapper`` (boxes) and DeepLab's semantic mapper (label maps), but with both at
once: the same resize / crop / flip is applied to the image, the boxes and M, so a box still frames its
object in M after augmentation. M is built from the cached GrabCut *instance* map before augmentation
(instance index -> class + 1), so nothing later needs the per-instance map.

Padding: an absolute crop larger than the resized image first pads the image (value 0) and every label map
(value ``ignore_label``) up to the crop size, so pixels outside the original image are never background.
Label maps are resized with OpenCV's nearest-exact interpolation, which is PIL's nearest (what detectron2
uses for uint8 maps) for any dtype: uint16 maps (more than 254 classes, ignore 65535) resize exactly too.

No output tensor has a class dimension: B(i, c) masks and filling rates are built on the fly by the loss
from ``instances``, so memory does not grow with the number of classes (Open Images: 601).
"""
import copy
import logging
import os

import cv2
import numpy as np
import torch
from detectron2.config import configurable
from detectron2.data import MetadataCatalog
from detectron2.data import detection_utils as utils
from detectron2.data import transforms as T
from detectron2.structures import Boxes, BoxMode, Instances
from fvcore.transforms.transform import PadTransform

from .semseg_gt import read_label_map

__all__ = ["Box2SegDatasetMapper", "PadToSize", "build_box2seg_augmentations", "apply_segmentation"]

logger = logging.getLogger(__name__)


class PadToSize(T.Augmentation):
    """Pad bottom/right up to at least ``(height, width)``: image with ``pad_value``, labels with ``seg_pad_value``.

    Placed before an absolute ``RandomCrop`` so the crop always has the requested size and the part that
    lies outside the image is marked ignore rather than background.
    """

    def __init__(self, height, width, pad_value=0, seg_pad_value=255):
        super().__init__()
        self._init(locals())

    def get_transform(self, image):
        h, w = image.shape[:2]
        pad_h, pad_w = max(self.height - h, 0), max(self.width - w, 0)
        if pad_h == 0 and pad_w == 0:
            return T.NoOpTransform()
        return PadTransform(0, 0, pad_w, pad_h, orig_w=w, orig_h=h, pad_value=self.pad_value,
                            seg_pad_value=self.seg_pad_value)


def build_box2seg_augmentations(cfg, is_train, ignore_label):
    """Training: resize (ResizeShortestEdge or ResizeScale), pad + absolute crop, flip. Test: resize only."""
    if not is_train:
        return [T.ResizeShortestEdge(cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MAX_SIZE_TEST, "choice")]
    kind = cfg.INPUT.BOX2SEG_RESIZE
    if kind == "ResizeShortestEdge":
        augs = [T.ResizeShortestEdge(cfg.INPUT.MIN_SIZE_TRAIN, cfg.INPUT.MAX_SIZE_TRAIN,
                                     cfg.INPUT.MIN_SIZE_TRAIN_SAMPLING)]
    elif kind == "ResizeScale":
        lo, hi = cfg.INPUT.RESIZE_SCALE
        augs = [T.ResizeScale(float(lo), float(hi), cfg.INPUT.TARGET_SIZE, cfg.INPUT.TARGET_SIZE)]
    elif kind in ("", "none", "None"):
        augs = []
    else:
        raise ValueError(f"INPUT.BOX2SEG_RESIZE={kind!r}: expected 'ResizeShortestEdge', 'ResizeScale' or 'none'")
    if cfg.INPUT.CROP.ENABLED:
        if cfg.INPUT.CROP.TYPE == "absolute":
            crop_h, crop_w = (int(v) for v in cfg.INPUT.CROP.SIZE)
            augs.append(PadToSize(crop_h, crop_w, pad_value=0, seg_pad_value=ignore_label))
        augs.append(T.RandomCrop(cfg.INPUT.CROP.TYPE, cfg.INPUT.CROP.SIZE))
    flip = cfg.INPUT.RANDOM_FLIP
    if flip != "none":
        augs.append(T.RandomFlip(horizontal=flip == "horizontal", vertical=flip == "vertical"))
    return augs


def apply_segmentation(transforms, label_map):
    """Apply ``transforms`` to an integer label map (any dtype); resizes use nearest-exact (= PIL nearest)."""
    for t in transforms.transforms if isinstance(transforms, T.TransformList) else transforms:
        if isinstance(t, T.ResizeTransform):
            label_map = cv2.resize(label_map, (t.new_w, t.new_h), interpolation=cv2.INTER_NEAREST_EXACT)
        else:
            label_map = t.apply_segmentation(label_map)
    return label_map


def _label_dtype(ignore_label):
    return np.uint8 if ignore_label <= 255 else np.uint16


def _read_label_png(path, ignore_label, what, file_name):
    # PIL (read_label_map): palette PNGs give class indices, 16-bit PNGs stay 16-bit.
    if not os.path.exists(path):
        raise FileNotFoundError(f"{what} {path} (for image {file_name}) is missing")
    try:
        labels = read_label_map(path)
    except (OSError, ValueError) as e:
        raise ValueError(f"{what} {path} (for image {file_name}) is not a readable label PNG: {e}") from e
    if labels.ndim != 2:
        raise ValueError(f"{what} {path} (for image {file_name}) must be a single-channel PNG, got {labels.shape}")
    return labels.astype(_label_dtype(ignore_label), copy=False)


class Box2SegDatasetMapper:
    """Map a Box2Seg dataset dict to the model's input (see the contract in the module docstring).

    Output keys: ``image`` (uint8 CxHxW, ``image_format``), ``instances`` (gt_boxes, gt_classes,
    gt_is_crowd, in output-image coordinates), ``grabcut_labels`` (int64 HxW: 0 background, class + 1,
    ``ignore_label`` on padding / crowd / dropped boxes), ``height``, ``width``, ``file_name``,
    ``image_id``, ``num_dropped_boxes``; ``sem_seg`` (true labels) only with ``use_true_masks``;
    ``verified_classes`` when the record has it.
    """

    @configurable
    def __init__(
        self,
        is_train=True,
        *,
        augmentations,
        image_format,
        ignore_label,
        min_box_area_kept=0.1,
        use_true_masks=False,
    ):
        self.is_train = is_train
        self.augmentations = T.AugmentationList(augmentations)
        self.image_format = image_format
        self.ignore_label = int(ignore_label)
        self.min_box_area_kept = float(min_box_area_kept)
        self.use_true_masks = bool(use_true_masks)
        self.num_dropped_boxes = 0  # in this process (DataLoader workers each keep their own)
        mode = "training" if is_train else "inference"
        logger.info(f"[Box2SegDatasetMapper] Augmentations used in {mode}: {augmentations}")

    @classmethod
    def from_config(cls, cfg, is_train=True):
        datasets = cfg.DATASETS.TRAIN if is_train else cfg.DATASETS.TEST
        ignore_label = 255
        if len(datasets):
            meta = MetadataCatalog.get(datasets[0])
            if hasattr(meta, "ignore_label"):
                ignore_label = meta.ignore_label
            elif hasattr(meta, "thing_classes"):
                from box2seg.data.datasets.common import ignore_label_for

                ignore_label = ignore_label_for(len(meta.thing_classes))
        return {
            "is_train": is_train,
            "augmentations": build_box2seg_augmentations(cfg, is_train, ignore_label),
            "image_format": cfg.INPUT.FORMAT,
            "ignore_label": ignore_label,
            "min_box_area_kept": cfg.INPUT.MIN_BOX_AREA_KEPT,
            "use_true_masks": cfg.BOX2SEG.get("USE_TRUE_MASKS", False) if "BOX2SEG" in cfg else False,
        }

    # ------------------------------------------------------------------------------------------------
    def _annotations(self, record):
        anns = record.get("annotations", [])
        n = len(anns)
        boxes = np.zeros((n, 4), np.float64)
        if n:
            boxes[:] = [a["bbox"] for a in anns]
            modes = np.array([int(a.get("bbox_mode", BoxMode.XYXY_ABS)) for a in anns])
            for mode in set(modes.tolist()) - {int(BoxMode.XYXY_ABS)}:  # load-time code converts already
                boxes[modes == mode] = BoxMode.convert(boxes[modes == mode], BoxMode(mode), BoxMode.XYXY_ABS)
        classes = np.array([int(a["category_id"]) for a in anns], np.int64)
        crowd = np.array([bool(a.get("iscrowd", 0)) for a in anns], bool)
        return boxes, classes, crowd

    def _grabcut_class_map(self, record, classes, shape):
        from box2seg.data import grabcut

        path = record.get("grabcut_file_name")
        if path is None:
            if self.is_train:
                raise KeyError(
                    f"Image {record.get('file_name')} (image_id {record.get('image_id')}) has no "
                    "'grabcut_file_name': its GrabCut pseudo-labels were not attached. Run "
                    "`box2seg prepare-grabcut --dataset NAME` for the training dataset, then train again."
                )
            return None
        instance_map = grabcut.load_instance_map(path)
        if instance_map.shape[:2] != tuple(shape):
            raise ValueError(
                f"GrabCut map {path} has size {instance_map.shape[:2]} but image {record['file_name']} has "
                f"{tuple(shape)}; the cache entry is stale: rerun `box2seg prepare-grabcut`."
            )
        labels = np.asarray(grabcut.instance_map_to_labels(instance_map, classes, self.ignore_label))
        return labels.astype(_label_dtype(self.ignore_label), copy=False)

    def __call__(self, dataset_dict):
        record = copy.deepcopy(dataset_dict)  # it will be modified below
        image = utils.read_image(record["file_name"], format=self.image_format)
        utils.check_image_size(record, image)
        boxes, classes, crowd = self._annotations(record)
        grabcut_map = self._grabcut_class_map(record, classes, image.shape[:2])
        true_map = None
        if self.use_true_masks:
            if "sem_seg_file_name" not in record:
                raise KeyError(f"use_true_masks is set but image {record['file_name']} has no 'sem_seg_file_name'")
            true_map = _read_label_png(record["sem_seg_file_name"], self.ignore_label, "semantic ground truth",
                                       record["file_name"])
            if true_map.shape != image.shape[:2]:
                raise ValueError(f"semantic ground truth {record['sem_seg_file_name']} has size {true_map.shape} "
                                 f"but image {record['file_name']} has {image.shape[:2]}")

        image_shape = image.shape[:2]
        aug_input = T.AugInput(image, boxes=boxes.copy())
        transforms = self.augmentations(aug_input)
        image = aug_input.image
        h, w = image.shape[:2]

        # Boxes: transformed but not yet clipped -> their area before any crop, in output pixels.
        moved = np.asarray(aug_input.boxes, np.float64).reshape(-1, 4)
        clipped = moved.copy()
        clipped[:, 0::2] = moved[:, 0::2].clip(0, w)
        clipped[:, 1::2] = moved[:, 1::2].clip(0, h)
        area_before = (moved[:, 2] - moved[:, 0]) * (moved[:, 3] - moved[:, 1])
        cw, ch = clipped[:, 2] - clipped[:, 0], clipped[:, 3] - clipped[:, 1]
        keep = (cw >= 1) & (ch >= 1) & (cw * ch >= self.min_box_area_kept * area_before)
        num_dropped = int((~keep).sum())
        self.num_dropped_boxes += num_dropped

        out = {
            "file_name": record["file_name"],
            "image_id": record.get("image_id"),
            "height": record.get("height", image_shape[0]),
            "width": record.get("width", image_shape[1]),
            "image": torch.as_tensor(np.ascontiguousarray(image.transpose(2, 0, 1))),
            "num_dropped_boxes": num_dropped,
        }
        if grabcut_map is not None:
            labels = apply_segmentation(transforms, grabcut_map).astype(np.int64)
            if num_dropped:
                # What is left of a dropped box is neither a target nor sure background: ignore it
                # (except where a kept box's rectangle covers it: those pixels keep their label).
                labels[_rect_mask(clipped[~keep], h, w) & ~_rect_mask(clipped[keep], h, w)] = self.ignore_label
            out["grabcut_labels"] = torch.from_numpy(np.ascontiguousarray(labels))
        if true_map is not None:
            out["sem_seg"] = torch.from_numpy(np.ascontiguousarray(apply_segmentation(transforms, true_map))).long()
        if "verified_classes" in record:
            out["verified_classes"] = torch.as_tensor(record["verified_classes"], dtype=torch.int64)

        instances = Instances((h, w))
        instances.gt_boxes = Boxes(torch.as_tensor(clipped[keep], dtype=torch.float32).reshape(-1, 4))
        instances.gt_classes = torch.as_tensor(classes[keep], dtype=torch.int64)
        instances.gt_is_crowd = torch.as_tensor(crowd[keep], dtype=torch.bool)
        out["instances"] = instances
        return out


def _rect_mask(boxes, h, w):
    """Union of the pixels touched by XYXY ``boxes`` (vectorised over boxes)."""
    if len(boxes) == 0:
        return np.zeros((h, w), bool)
    x0 = np.floor(boxes[:, 0]).astype(int)[:, None]
    y0 = np.floor(boxes[:, 1]).astype(int)[:, None]
    x1 = np.ceil(boxes[:, 2]).astype(int)[:, None]
    y1 = np.ceil(boxes[:, 3]).astype(int)[:, None]
    xs, ys = np.arange(w)[None], np.arange(h)[None]
    in_x = (xs >= x0) & (xs < x1)  # (n, w)
    in_y = (ys >= y0) & (ys < y1)  # (n, h)
    return (in_y.T.astype(np.int32) @ in_x.astype(np.int32)) > 0  # (h, w): some box covers both
