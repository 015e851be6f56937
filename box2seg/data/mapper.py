"""``Box2SegDatasetMapper``: one dataset dict -> image, boxes and the GrabCut class map M, augmented together.

Like detectron2's ``DatasetMapper`` (boxes) and DeepLab's semantic mapper (label maps), but with both at
once: the same resize / crop / flip is applied to the image, the boxes and M, so a box still frames its
object in M after augmentation. M is built from the cached GrabCut *instance* map before augmentation
(instance index -> class + 1), so nothing later needs the per-instance map. An image that carries pixel
labels (``data.pixel_labels``: fine-tuning on masks, the attention loss with full masks) gets its true mask
as M instead, and its ``supervision`` tells the loss how to use it.

Padding: an absolute crop larger than the resized image first pads the image (value 0) and every label map
(value ``ignore_label``) up to the crop size, so pixels outside the original image are never background.
Label maps are resized with OpenCV's nearest-exact interpolation, which is PIL's nearest (what detectron2
uses for uint8 maps) for any dtype: uint16 maps (more than 254 classes, ignore 65535) resize exactly too.

No output tensor has a class dimension: B(i, c) masks and filling rates are built on the fly by the loss
from ``instances``, so memory does not grow with the number of classes (Open Images: 601).
"""
import copy
import logging

import cv2
import numpy as np
import torch
from detectron2.config import configurable
from detectron2.data import MetadataCatalog
from detectron2.data import detection_utils as utils
from detectron2.data import transforms as T
from detectron2.structures import Boxes, Instances
from fvcore.transforms.transform import PadTransform

from ..structures import PIXELS_TOUCHED, box_union_mask, record_boxes
from .datasets.common import ignore_label_for
from .grabcut import (GrabCutSettings, compute_own_masks, instance_map_to_labels, load_instance_map, own_grabcut_masks,
                      read_png_stats)
from .images import read_image
from .pixel_labels import true_class_map

__all__ = ["Box2SegDatasetMapper", "fuses_grabcut", "PadToSize", "build_box2seg_augmentations", "apply_segmentation"]

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
    kind = cfg.INPUT.RESIZE_TYPE
    if kind == "ResizeShortestEdge":
        augs = [T.ResizeShortestEdge(cfg.INPUT.MIN_SIZE_TRAIN, cfg.INPUT.MAX_SIZE_TRAIN,
                                     cfg.INPUT.MIN_SIZE_TRAIN_SAMPLING)]
    elif kind == "ResizeScale":
        lo, hi = cfg.INPUT.RESIZE_SCALE
        augs = [T.ResizeScale(float(lo), float(hi), cfg.INPUT.TARGET_SIZE, cfg.INPUT.TARGET_SIZE)]
    elif kind in ("", "none", "None"):
        augs = []
    else:
        raise ValueError(f"INPUT.RESIZE_TYPE={kind!r}: expected 'ResizeShortestEdge', 'ResizeScale' or 'none'")
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


def fuses_grabcut(cfg):
    """Whether inference averages each box's own GrabCut mask in (chip mode, CHIPS.GRABCUT_WEIGHT > 0): then the
    images predicted need GrabCut labels too, not only the training images."""
    return bool(cfg.MODEL.BOX2SEG.CHIPS.ENABLED and cfg.MODEL.BOX2SEG.CHIPS.GRABCUT_WEIGHT > 0)


class Box2SegDatasetMapper:
    """Map a Box2Seg dataset dict to the model's input (see the contract in the module docstring).

    Output keys: ``image`` (uint8 CxHxW, ``image_format``), ``instances`` (gt_boxes, gt_classes,
    gt_is_crowd, in output-image coordinates), ``grabcut_labels`` (int64 HxW: 0 background, class + 1,
    ``ignore_label`` on padding / crowd / dropped boxes), ``height``, ``width``, ``file_name``,
    ``image_id``, ``num_dropped_boxes``; ``verified_classes`` when the record has it; in training
    ``supervision`` ("boxes", or "mask" / "mask_ce" for an image whose ``grabcut_labels`` are its true mask,
    ``data.pixel_labels``); at inference with CHIPS.GRABCUT_WEIGHT > 0 ``grabcut_own_masks`` (bool K x height x
    width, the kept boxes' own GrabCut masks).
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
        grabcut_settings=None,
    ):
        """``grabcut_settings``: at inference, also give each kept box's own GrabCut mask (``grabcut_own_masks``,
        in the record's height x width) with these settings where no cache file is attached (chip mode's
        CHIPS.GRABCUT_WEIGHT); None: not given."""
        self.is_train = is_train
        self.augmentations = T.AugmentationList(augmentations)
        self.image_format = image_format
        self.ignore_label = int(ignore_label)
        self.min_box_area_kept = float(min_box_area_kept)
        self.grabcut_settings = None if is_train else grabcut_settings
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
                ignore_label = ignore_label_for(len(meta.thing_classes))
        return {
            "is_train": is_train,
            "augmentations": build_box2seg_augmentations(cfg, is_train, ignore_label),
            "image_format": cfg.INPUT.FORMAT,
            "ignore_label": ignore_label,
            "min_box_area_kept": cfg.INPUT.MIN_BOX_AREA_KEPT,
            "grabcut_settings": GrabCutSettings.from_config(cfg) if fuses_grabcut(cfg) and not is_train else None,
        }

    # ------------------------------------------------------------------------------------------------
    def _instance_map(self, record, shape):
        """The record's cached GrabCut instance map, checked against the image's ``shape``."""
        path = record["grabcut_file_name"]
        instance_map = load_instance_map(path)
        if instance_map.shape[:2] != tuple(shape):
            raise ValueError(
                f"GrabCut map {path} has size {instance_map.shape[:2]} but image {record['file_name']} has "
                f"{tuple(shape)}; the cache entry is stale: rerun `box2seg prepare-grabcut`."
            )
        return instance_map

    def _grabcut_class_map(self, record, classes, shape, instance_map=None):
        path = record.get("grabcut_file_name")
        if path is None:
            if self.is_train:
                raise KeyError(
                    f"Image {record.get('file_name')} (image_id {record.get('image_id')}) has no "
                    "'grabcut_file_name': its GrabCut pseudo-labels were not attached. Run "
                    "`box2seg prepare-grabcut --dataset NAME` for the training dataset, then train again."
                )
            return None
        if instance_map is None:
            instance_map = self._instance_map(record, shape)
        labels = np.asarray(instance_map_to_labels(instance_map, classes, self.ignore_label))
        return labels.astype(_label_dtype(self.ignore_label), copy=False)

    def _class_map(self, record, classes, shape, instance_map=None):
        """M before augmentation: the true mask for a record that carries pixel labels (``supervision`` other
        than "boxes", set by ``data.pixel_labels.mark_pixel_labels``), else GrabCut's map (from ``instance_map``
        when the caller has read it already)."""
        if not self.is_train or record.get("supervision", "boxes") == "boxes":
            return self._grabcut_class_map(record, classes, shape, instance_map)
        labels = true_class_map(record, classes, self.ignore_label)
        if labels.shape != tuple(shape):
            raise ValueError(f"the true mask of image {record['file_name']} is {labels.shape[1]}x{labels.shape[0]} "
                             f"but the image is {shape[1]}x{shape[0]}")
        return labels

    def __call__(self, dataset_dict):
        record = copy.deepcopy(dataset_dict)  # it will be modified below
        image = read_image(record["file_name"], format=self.image_format)
        utils.check_image_size(record, image)
        boxes, classes, crowd = record_boxes(record)
        own = instance_map = None
        if self.grabcut_settings is not None:  # inference averages each box's own GrabCut mask in
            if record.get("grabcut_file_name"):  # the cached map, read once for M and the own masks
                instance_map = self._instance_map(record, image.shape[:2])
                own = own_grabcut_masks(instance_map, read_png_stats(record["grabcut_file_name"]), len(boxes))
            else:
                bgr = np.ascontiguousarray(utils.convert_image_to_rgb(image, self.image_format)[:, :, ::-1])
                own = compute_own_masks(bgr, record, self.grabcut_settings)
        grabcut_map = self._class_map(record, classes, image.shape[:2], instance_map)

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
                # Touched pixels (structures.PIXELS_TOUCHED): a partly covered edge pixel is not sure background.
                dropped = box_union_mask(clipped[~keep], h, w, PIXELS_TOUCHED)
                labels[dropped & ~box_union_mask(clipped[keep], h, w, PIXELS_TOUCHED)] = self.ignore_label
            out["grabcut_labels"] = torch.from_numpy(np.ascontiguousarray(labels))
        if "verified_classes" in record:
            out["verified_classes"] = torch.as_tensor(record["verified_classes"], dtype=torch.int64)
        if self.is_train:
            out["supervision"] = record.get("supervision", "boxes")

        instances = Instances((h, w))
        instances.gt_boxes = Boxes(torch.as_tensor(clipped[keep], dtype=torch.float32).reshape(-1, 4))
        instances.gt_classes = torch.as_tensor(classes[keep], dtype=torch.int64)
        instances.gt_is_crowd = torch.as_tensor(crowd[keep], dtype=torch.bool)
        out["instances"] = instances
        if own is not None:
            out["grabcut_own_masks"] = torch.from_numpy(own[keep])
        return out
