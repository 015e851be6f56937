"""Chip mode's training samples: one box-centred chip per (image, box) item, SNIPER-style.

The whole-image mapper shows a small object under a few stride-4 cells; a chip shows every box at one
normalised scale (``structures.chips``: the box's longer side at ``size / (1 + 2 * context)`` px), with
jittered scale and centre and a horizontal flip. A chip carries what the whole-image mapper's output does,
in the chip's frame, so the model and every loss are unchanged: the image, the GrabCut class map M (ignore
outside the image) and every box the chip overlaps (its in-chip part; ``gt_cut`` marks a box the chip edge
clips, which the filling-rate hinge leaves out because only part of its object is in view). An image that
carries pixel labels (``data.pixel_labels``) gives chips of its true mask instead of GrabCut's.

The training set of chip mode lists (record index, annotation index) items, one per non-crowd box
(:func:`chip_items`), so seeded shuffling of items is seeded chip sampling; the records themselves are kept
once, serialised, in the mapper (detectron2's ``DatasetFromList``), not copied per box.
"""
import numpy as np
import torch
from detectron2.config import configurable
from detectron2.data.common import DatasetFromList
from detectron2.data import detection_utils as utils
from detectron2.structures import Boxes, Instances

from ..structures import boxes_in_chip, chip_regions, crop_chips, flip_boxes_horizontally, record_boxes, sample_label_chip
from .datasets.lazy import is_lazy
from .grabcut import IGNORE_INDEX, own_grabcut_mask, read_png_stats
from .images import read_image
from .mapper import Box2SegDatasetMapper
from .pixel_labels import true_own_labels

__all__ = ["CHIP_TARGETS", "ChipDatasetMapper", "chip_items", "jitter_colours"]

CHIP_TARGETS = ("all", "own")


def jitter_colours(chip, factors):
    """A (3, S, S) uint8 chip with its brightness, contrast and saturation scaled by ``factors`` (3,), in that
    order (torchvision's ColorJitter without hue): unseen images differ in exposure and colour, and a frozen
    backbone's features with them, which a head trained on a few hundred images would otherwise memorise."""
    brightness, contrast, saturation = (float(f) for f in factors)
    x = chip.float() * brightness
    x = (x - x.mean()) * contrast + x.mean()
    grey = x.mean(0, keepdim=True)  # the channels' mean: the same in RGB and BGR
    x = (x - grey) * saturation + grey
    return x.round().clamp(0, 255).to(torch.uint8)


def chip_items(records):
    """(record index, annotation index) of every non-crowd annotation: the chip-mode training set."""
    items = []
    for i, record in enumerate(records):
        for k, ann in enumerate(record.get("annotations", ())):
            if not ann.get("iscrowd", 0):
                items.append((i, k))
    return items


class ChipDatasetMapper(Box2SegDatasetMapper):
    """(record index, annotation index) -> a chip around that box, in the whole-image mapper's format.

    Output keys: ``image`` (uint8 3 x size x size), ``grabcut_labels`` (int64, ignore outside the image),
    ``instances`` (gt_boxes in chip pixels, gt_classes, gt_is_crowd, gt_cut), ``height`` = ``width`` = size,
    ``file_name``, ``image_id``, ``chip_region`` (the region in image pixels, XYXY), ``chip_box`` (the chip's own
    box in chip pixels, after the flip), ``supervision`` (as the whole-image mapper's: a chip of an image with
    pixel labels is cut from its true mask).
    """

    @configurable
    def __init__(self, records, *, size, context, scale_jitter, shift_jitter, flip, image_format, ignore_label,
                 target="all", color_jitter=0.0):
        """``target``: "all" (every box in the chip and M as painted, the semantic view) or "own" (only the
        chip's own box; M is its own GrabCut mask, other objects background: the per-box view the masks are
        judged by, since a box's mask must not take the objects in front of it)."""
        if target not in CHIP_TARGETS:
            raise ValueError(f"MODEL.BOX2SEG.CHIPS.TARGET={target!r}: must be one of {CHIP_TARGETS}")
        self.target = target
        self.is_train = True
        # A lazy sequence (Open Images) builds a fresh record per access already; a list is serialised once.
        self.records = records if is_lazy(records) else DatasetFromList(list(records), copy=False, serialize=True)
        self.size = int(size)
        self.context = float(context)
        self.scale_jitter = float(scale_jitter)
        self.shift_jitter = float(shift_jitter)
        self.flip = bool(flip)
        self.color_jitter = float(color_jitter)
        self.image_format = image_format
        self.ignore_label = int(ignore_label)

    @classmethod
    def from_config(cls, cfg, records):
        c = cfg.MODEL.BOX2SEG.CHIPS
        base = Box2SegDatasetMapper.from_config(cfg, is_train=True)
        return {
            "records": records,
            "size": c.SIZE,
            "context": c.CONTEXT,
            "scale_jitter": c.SCALE_JITTER,
            "shift_jitter": c.SHIFT_JITTER,
            "flip": cfg.INPUT.RANDOM_FLIP == "horizontal",
            "image_format": base["image_format"],
            "ignore_label": base["ignore_label"],
            "target": c.TARGET,
            "color_jitter": c.COLOR_JITTER,
        }

    def __call__(self, item):
        record_index, annotation_index = item
        record = self.records[record_index]  # a fresh copy (unpickled)
        image = read_image(record["file_name"], format=self.image_format)
        utils.check_image_size(record, image)
        boxes, classes, crowd = record_boxes(record)
        supervision = record.get("supervision", "boxes")
        if self.target == "own":
            if supervision == "boxes":
                # The own box's GrabCut mask (before painting: what smaller boxes took is given back) as its
                # class, everything else background; crowd stays ignore.
                instance_map = self._instance_map(record, image.shape[:2])
                own_mask = own_grabcut_mask(instance_map, read_png_stats(record["grabcut_file_name"]), annotation_index)
                labels = np.where(own_mask, classes[annotation_index] + 1, 0)
                labels = np.where(instance_map == IGNORE_INDEX, self.ignore_label, labels).astype(np.int64)
            else:  # an image with pixel labels: the own box's true mask, the same way
                labels = true_own_labels(record, annotation_index, classes, self.ignore_label).astype(np.int64)
            own = slice(annotation_index, annotation_index + 1)
            boxes, classes, crowd, annotation_index = boxes[own], classes[own], crowd[own], 0
        else:
            labels = self._class_map(record, classes, image.shape[:2])

        region = chip_regions(boxes[annotation_index:annotation_index + 1], self.context,
                              self.scale_jitter, self.shift_jitter)[0]
        pixels = torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)))
        chip = crop_chips(pixels, region[None], self.size)[0].round().clamp(0, 255).to(torch.uint8)
        chip_labels = sample_label_chip(labels, region, self.size, self.ignore_label).astype(np.int64)
        chip_boxes, index, cut = boxes_in_chip(boxes, region, self.size)
        own = int(np.flatnonzero(index == annotation_index)[0])  # the chip's own box is always in view
        if self.flip and np.random.rand() < 0.5:
            chip = chip.flip(-1)
            chip_labels = chip_labels[:, ::-1]
            chip_boxes = flip_boxes_horizontally(chip_boxes, self.size)
        if self.color_jitter > 0:
            chip = jitter_colours(chip, np.random.uniform(1 - self.color_jitter, 1 + self.color_jitter, 3))

        instances = Instances((self.size, self.size))
        instances.gt_boxes = Boxes(torch.as_tensor(chip_boxes, dtype=torch.float32).reshape(-1, 4))
        instances.gt_classes = torch.as_tensor(classes[index], dtype=torch.int64)
        instances.gt_is_crowd = torch.as_tensor(crowd[index], dtype=torch.bool)
        instances.gt_cut = torch.as_tensor(cut, dtype=torch.bool)
        out = {
            "file_name": record["file_name"],
            "image_id": record.get("image_id"),
            "height": self.size,
            "width": self.size,
            "image": chip.contiguous(),
            "grabcut_labels": torch.from_numpy(np.ascontiguousarray(chip_labels)),
            "instances": instances,
            "chip_region": torch.as_tensor(region, dtype=torch.float32),
            "chip_box": torch.as_tensor(chip_boxes[own], dtype=torch.float32),
            "supervision": supervision,
        }
        if "verified_classes" in record:
            out["verified_classes"] = torch.as_tensor(record["verified_classes"], dtype=torch.int64)
        return out
