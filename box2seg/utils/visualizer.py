"""Drawing shared by the demo's overlays (``evaluation.compare``), ``box2seg predict`` and ``box2seg visualize``.

Low in the layers (above ``data``, below ``evaluation``) and light (numpy and OpenCV: everything that
imports the engine imports this), so the scoring loop can draw without importing a command-level module.
All images are OpenCV BGR uint8 arrays. Colours are indexed by semantic label (0 = background, class + 1),
the same for every panel and every image, so a class keeps its colour everywhere. Per-box masks are drawn
from the label map they paint (``evaluation.mask_scoring.paint_box_masks``: the smaller box wins overlaps),
which the caller passes in, so a picture shows what the scores count.
"""
import math

import cv2
import numpy as np

from ..data.cache import atomic_path
from ..data.images import read_image
from ..structures import record_boxes

__all__ = [
    "CAPTION_HEIGHT",
    "GAP",
    "palette",
    "colorize_labels",
    "blend",
    "overlay_labels",
    "draw_boxes",
    "draw_instances",
    "attention_panel",
    "caption",
    "make_grid",
    "grid_size",
    "write_png",
    "write_label_png",
    "write_overlay",
]

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


def draw_instances(image, instance_labels, boxes, classes, colours, alpha=0.5):
    """Per-box masks, painted into one label map ``instance_labels`` (0 background, class + 1), tinted over
    the image in their class colours, and their boxes outlined."""
    return draw_boxes(overlay_labels(image, instance_labels, colours, alpha), boxes, classes, colours)


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


def write_overlay(path, record, labels, box_labels, meta):
    """Three panels side by side: image with its boxes | image-only prediction | box-conditioned masks.

    The demo's overlay. ``record`` is a dataset dict, ``labels`` the (H, W) semantic prediction,
    ``box_labels`` the label map its box-conditioned masks paint (``paint_box_masks``).
    """
    image = read_image(record["file_name"], format="BGR")
    colours = palette(len(meta.thing_classes))
    boxes, classes, _ = record_boxes(record)
    boxed = draw_boxes(image, boxes, classes, colours)
    pred = overlay_labels(image, labels, colours)
    cond = draw_instances(image, box_labels, boxes, classes, colours)
    write_png(path, np.concatenate([boxed, pred, cond], axis=1))
