"""Drawing helpers shared by ``box2seg predict``, ``box2seg visualize`` and the demo, and the
``box2seg visualize`` subcommand.

``box2seg visualize --dataset NAME --output DIR`` writes one PNG grid per image of a dataset, to check what
a Box2Seg model learnt and what it hands to Mask R-CNN: the image with its boxes, the pseudo-masks (read
from a pseudo-mask COCO JSON with ``--pseudo-masks``, or computed by the model), and, for a trained model
(``--config-file`` + ``MODEL.WEIGHTS``), its semantic prediction and each boxed class's attention map
sigmoid(alpha), upsampled to the image.

All images here are OpenCV BGR uint8 arrays. Colours are indexed by semantic label (0 = background,
class + 1), the same for every panel and every image, so a class keeps its colour everywhere.
"""
import argparse
import json
import logging
import math
import os

import cv2
import numpy as np

from .data.cache import atomic_path, safe_name

__all__ = [
    "CAPTION_HEIGHT",
    "GAP",
    "palette",
    "colorize_labels",
    "blend",
    "overlay_labels",
    "draw_boxes",
    "draw_instance_masks",
    "attention_panel",
    "caption",
    "make_grid",
    "grid_size",
    "write_png",
    "write_label_png",
    "write_overlay",
    "PseudoMasks",
    "load_pseudo_masks",
    "add_arguments",
    "main",
]

logger = logging.getLogger(__name__)

CAPTION_HEIGHT = 16  # px strip above each grid panel
GAP = 4  # px between grid cells
_GAP_VALUE = 255  # white separators


def palette(num_classes, seed=3):
    """(L + 1, 3) uint8 BGR colours indexed by semantic label; label 0 (background) is black.

    Fixed seed: the same class has the same colour in every file and every run.
    """
    rng = np.random.default_rng(seed)
    colours = rng.integers(60, 255, (num_classes + 1, 3), dtype=np.uint8)
    colours[0] = 0
    return colours


def colorize_labels(labels, colours, ignore_label=None):
    """(H, W) semantic labels -> (H, W, 3) colour image; ignore (and out-of-range) pixels are white."""
    labels = np.asarray(labels)
    valid = (labels >= 0) & (labels < len(colours))
    if ignore_label is not None:
        valid &= labels != ignore_label
    out = colours[np.where(valid, labels, 0)]
    out[~valid] = 255
    return out


def blend(image, colour_image, alpha=0.5, where=None):
    """``alpha`` of ``colour_image`` over ``image`` (only at ``where`` when given)."""
    mixed = (1.0 - alpha) * image.astype(np.float32) + alpha * colour_image.astype(np.float32)
    mixed = np.clip(np.rint(mixed), 0, 255).astype(np.uint8)
    if where is None:
        return mixed
    out = image.copy()
    out[where] = mixed[where]
    return out


def overlay_labels(image, labels, colours, alpha=0.5, ignore_label=None):
    """The image tinted by its semantic labels; background pixels are left as they are."""
    labels = np.asarray(labels)
    return blend(image, colorize_labels(labels, colours, ignore_label), alpha, where=labels != 0)


def draw_boxes(image, boxes, classes, colours, thickness=1):
    """A copy of ``image`` with xyxy ``boxes`` outlined in their class colours (label = class + 1)."""
    out = np.ascontiguousarray(image.copy())
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    for (x0, y0, x1, y1), c in zip(boxes, np.asarray(classes).reshape(-1)):
        colour = tuple(int(v) for v in colours[int(c) + 1])
        p0 = (int(round(x0)), int(round(y0)))
        p1 = (max(int(round(x1)) - 1, p0[0]), max(int(round(y1)) - 1, p0[1]))
        cv2.rectangle(out, p0, p1, colour, thickness)
    return out


def draw_instance_masks(image, masks, classes, boxes, colours, alpha=0.5):
    """Per-box masks painted in their class colours (smaller box on top), boxes outlined."""
    from .evaluation.mask_scoring import paint_box_masks

    h, w = image.shape[:2]
    masks = np.asarray(masks, dtype=bool).reshape(-1, h, w)
    labels = paint_box_masks(masks, np.asarray(classes, dtype=np.int64), boxes, h, w)
    return draw_boxes(overlay_labels(image, labels, colours, alpha), boxes, classes, colours)


def attention_panel(image, attention, alpha=0.6):
    """An attention map in [0, 1] (H, W) as a JET heat map over the image."""
    heat = cv2.applyColorMap(np.clip(np.rint(255 * np.asarray(attention, dtype=np.float32)), 0, 255)
                             .astype(np.uint8), cv2.COLORMAP_JET)
    return blend(image, heat, alpha)


def caption(panel, text):
    """The panel with a ``CAPTION_HEIGHT`` px strip above it holding ``text`` (clipped to the width)."""
    h, w = panel.shape[:2]
    strip = np.full((CAPTION_HEIGHT, w, 3), 32, dtype=np.uint8)
    cv2.putText(strip, str(text), (2, CAPTION_HEIGHT - 4), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (255, 255, 255), 1,
                cv2.LINE_AA)
    return np.concatenate([strip, panel], axis=0)


def grid_size(num_panels, panel_height, panel_width, columns):
    """(height, width) of :func:`make_grid`'s output for captioned panels of the given size."""
    columns = max(1, min(columns, num_panels))
    rows = math.ceil(num_panels / columns)
    return rows * panel_height + (rows - 1) * GAP, columns * panel_width + (columns - 1) * GAP


def make_grid(panels, columns=4):
    """Tile equally sized (H, W, 3) panels row by row, ``GAP`` px apart."""
    if not panels:
        raise ValueError("make_grid needs at least one panel")
    h, w = panels[0].shape[:2]
    for i, p in enumerate(panels):
        if p.shape[:2] != (h, w):
            raise ValueError(f"panel {i} is {p.shape[:2]}, expected {(h, w)} like panel 0")
    columns = max(1, min(columns, len(panels)))
    height, width = grid_size(len(panels), h, w, columns)
    grid = np.full((height, width, 3), _GAP_VALUE, dtype=np.uint8)
    for i, p in enumerate(panels):
        r, c = divmod(i, columns)
        grid[r * (h + GAP) : r * (h + GAP) + h, c * (w + GAP) : c * (w + GAP) + w] = p
    return grid


def write_png(path, image):
    """Atomic PNG write (a crash never leaves a truncated file behind)."""
    with atomic_path(path) as tmp:
        if not cv2.imwrite(tmp, image):
            raise OSError(f"could not write {path}")


def write_label_png(path, labels, num_classes):
    """A semantic label PNG: 0 background, class + 1; uint8 when the labels fit, else uint16."""
    dtype = np.uint8 if num_classes + 1 <= 255 else np.uint16
    write_png(path, np.asarray(labels).astype(dtype))


def write_overlay(path, record, labels, box_masks, meta):
    """Three panels side by side: image with its boxes | image-only prediction | box-conditioned masks.

    The demo's overlay, kept here so every tool draws the same way. ``record`` is a dataset dict,
    ``labels`` the (H, W) semantic prediction, ``box_masks`` one mask per annotation.
    """
    image = cv2.imread(record["file_name"], cv2.IMREAD_COLOR)
    if image is None:
        raise OSError(f"cannot read image {record['file_name']}")
    colours = palette(len(meta.thing_classes))
    anns = record["annotations"]
    boxes = np.array([a["bbox"] for a in anns], dtype=np.float64).reshape(-1, 4)
    classes = np.array([a["category_id"] for a in anns], dtype=np.int64)
    boxed = draw_boxes(image, boxes, classes, colours)
    pred = overlay_labels(image, labels, colours)
    cond = draw_instance_masks(image, box_masks, classes, boxes, colours)
    write_png(path, np.concatenate([boxed, pred, cond], axis=1))


# --------------------------------------------------------------------------------------------------
# Pseudo-mask JSON


class PseudoMasks:
    """A pseudo-mask COCO JSON indexed for lookup by dataset record.

    Records are matched by image id when the JSON image with that id has the same file name, else by
    file name alone (so a JSON written for a copy of the images still matches).
    """

    def __init__(self, json_file, thing_classes):
        self.json_file = json_file
        try:
            with open(json_file) as f:
                data = json.load(f)
        except FileNotFoundError:
            raise FileNotFoundError(f"pseudo-mask file {json_file} does not exist") from None
        except json.JSONDecodeError as e:
            raise ValueError(f"pseudo-mask file {json_file} is not valid JSON: {e}") from None
        for key in ("images", "annotations", "categories"):
            if not isinstance(data.get(key), list):
                raise ValueError(f"pseudo-mask file {json_file}: missing or malformed '{key}' list")
        # JSON category id -> the dataset's contiguous id: by name when the dataset knows it, else by
        # position among the JSON's sorted ids.
        cats = sorted(data["categories"], key=lambda c: c["id"])
        by_name = {n: i for i, n in enumerate(thing_classes)}
        self.category_to_contiguous = {c["id"]: by_name.get(c.get("name"), i) for i, c in enumerate(cats)}
        self.images_by_id = {img["id"]: img for img in data["images"]}
        names = {}
        for img in data["images"]:
            names.setdefault(os.path.basename(img["file_name"]), []).append(img)
        self.images_by_name = {k: v[0] for k, v in names.items() if len(v) == 1}
        self.annotations = {}
        for ann in data["annotations"]:
            self.annotations.setdefault(ann.get("image_id"), []).append(ann)

    def find_image(self, record):
        base = os.path.basename(record["file_name"])
        img = self.images_by_id.get(record.get("image_id"))
        if img is not None and os.path.basename(img["file_name"]) == base:
            return img
        return self.images_by_name.get(base)

    def masks_for(self, record):
        """(masks (N, H, W) bool, classes (N,), boxes (N, 4) xyxy) at the record's size, or None when
        the JSON has no entry for this image. Crowd and mask-less annotations are left out."""
        from .evaluation.instance_iou import annotation_mask

        img = self.find_image(record)
        if img is None:
            return None
        h, w = record["height"], record["width"]
        masks, classes, boxes = [], [], []
        for ann in self.annotations.get(img["id"], []):
            if ann.get("iscrowd", 0) or not ann.get("segmentation"):
                continue
            mask = annotation_mask(ann["segmentation"], int(img.get("height", h)), int(img.get("width", w)))
            if mask.shape != (h, w):
                raise ValueError(
                    f"pseudo-mask file {self.json_file}: annotation {ann.get('id')!r} of image "
                    f"{img['file_name']!r} is {mask.shape[0]}x{mask.shape[1]}, but the dataset image "
                    f"{record['file_name']} is {h}x{w}"
                )
            x, y, bw, bh = ann["bbox"]
            masks.append(mask)
            classes.append(self.category_to_contiguous.get(ann["category_id"], 0))
            boxes.append([x, y, x + bw, y + bh])
        return (np.asarray(masks, dtype=bool).reshape(-1, h, w), np.asarray(classes, dtype=np.int64),
                np.asarray(boxes, dtype=np.float64).reshape(-1, 4))


def load_pseudo_masks(json_file, thing_classes):
    return PseudoMasks(json_file, thing_classes)


# --------------------------------------------------------------------------------------------------
# The subcommand


def add_arguments(parser):
    parser.add_argument("--dataset", required=True, metavar="NAME",
                        help="registered dataset (built-in, or --coco-dataset NAME=JSON:IMAGE_ROOT)")
    parser.add_argument("--output", required=True, metavar="DIR", help="folder for the PNG grids")
    parser.add_argument("--pseudo-masks", default="", metavar="JSON",
                        help="pseudo-mask COCO JSON to show (e.g. written by box2seg export); without it "
                             "the model's box-conditioned masks are shown")
    parser.add_argument("--config-file", default="", metavar="FILE",
                        help="Box2Seg config of a trained model (set MODEL.WEIGHTS in the overrides): adds "
                             "its prediction and one attention map per boxed class")
    parser.add_argument("--max-images", type=int, default=16, metavar="K", help="first K images (0 = all)")
    parser.add_argument("--columns", type=int, default=4, help="panels per grid row")
    parser.add_argument("--scale", type=float, default=1.0, help="panel magnification (small images)")
    parser.add_argument("opts", nargs=argparse.REMAINDER, default=[], metavar="KEY VALUE",
                        help="config overrides (last, as for box2seg export), e.g. MODEL.WEIGHTS out/model_final.pth")


def _record_boxes(record):
    anns = [a for a in record["annotations"] if not a.get("iscrowd", 0)]
    boxes = np.array([a["bbox"] for a in anns], dtype=np.float64).reshape(-1, 4)
    classes = np.array([a["category_id"] for a in anns], dtype=np.int64)
    return boxes, classes


def _scaled(panel, scale):
    if scale == 1.0:
        return panel
    h, w = panel.shape[:2]
    return cv2.resize(panel, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_NEAREST)


def record_panels(record, image, thing_classes, pseudo=None, predictor=None):
    """[(caption, panel)] for one dataset record: boxes, pseudo-masks, prediction, attention maps."""
    colours = palette(len(thing_classes))
    boxes, classes = _record_boxes(record)
    panels = [("image + boxes", draw_boxes(image, boxes, classes, colours))]
    output = None
    if predictor is not None:
        output = predictor(image, boxes=boxes, classes=classes)
    if pseudo is not None:
        found = pseudo.masks_for(record)
        if found is None:
            logger.warning(f"{pseudo.json_file} has no entry for image {record['file_name']}")
            panels.append(("pseudo-masks: none", image.copy()))
        else:
            masks, mclasses, mboxes = found
            panels.append(("pseudo-masks", draw_instance_masks(image, masks, mclasses, mboxes, colours)))
    elif output is not None:
        panels.append(("model masks", draw_instance_masks(image, output["box_masks"].numpy(), classes, boxes,
                                                         colours)))
    if output is not None:
        panels.append(("prediction", overlay_labels(image, output["labels"].numpy(), colours)))
        present = np.unique(classes)
        if len(present):
            attention = predictor.attention(image, present).numpy()
            for c, amap in zip(present, attention):
                panels.append((f"alpha: {thing_classes[c]}", attention_panel(image, amap)))
    return panels


def main(args):
    import torch
    from detectron2.data import DatasetCatalog, MetadataCatalog
    from tqdm import tqdm

    if not args.pseudo_masks and not args.config_file:
        raise SystemExit("box2seg visualize: give --pseudo-masks JSON and/or --config-file (with MODEL.WEIGHTS) "
                         "so there is something to show besides the boxes")
    if args.dataset not in DatasetCatalog.list():
        raise SystemExit(f"box2seg visualize: dataset {args.dataset!r} is not registered; register it with "
                         f"--coco-dataset NAME=JSON:IMAGE_ROOT (known: {', '.join(sorted(DatasetCatalog.list()))})")
    records = DatasetCatalog.get(args.dataset)
    if args.max_images > 0:
        records = records[: args.max_images]
    thing_classes = list(MetadataCatalog.get(args.dataset).thing_classes)

    predictor = None
    if args.config_file:
        from .predict import Box2SegPredictor, setup_predict_cfg

        cfg = setup_predict_cfg(args.config_file, args.opts)
        if cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES != len(thing_classes) + 1:
            raise SystemExit(
                f"box2seg visualize: the model predicts MODEL.SEM_SEG_HEAD.NUM_CLASSES="
                f"{cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES} (background included) but dataset {args.dataset!r} "
                f"has {len(thing_classes)} classes plus background"
            )
        predictor = Box2SegPredictor(cfg)
    pseudo = load_pseudo_masks(args.pseudo_masks, thing_classes) if args.pseudo_masks else None

    os.makedirs(args.output, exist_ok=True)
    written = 0
    with torch.no_grad():
        for record in tqdm(records, desc="visualize", unit="image"):
            image = cv2.imread(record["file_name"], cv2.IMREAD_COLOR)
            if image is None:
                logger.error(f"cannot read image {record['file_name']} (dataset {args.dataset}); skipped")
                continue
            panels = record_panels(record, image, thing_classes, pseudo, predictor)
            grid = make_grid([caption(_scaled(p, args.scale), text) for text, p in panels], args.columns)
            write_png(os.path.join(args.output, f"{safe_name(record['image_id'])}.png"), grid)
            written += 1
    logger.info(f"wrote {written} grid(s) to {args.output}")
    return 0 if written == len(records) else 1
