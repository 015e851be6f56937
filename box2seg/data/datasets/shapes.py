"""``box2seg_shapes_{train,val}``: a small, procedurally generated box dataset that ships with the code.

Why it exists: the demo and the tests need a dataset with boxes *and* true masks that can be trained and
evaluated on a CPU in minutes, with no download and no licence. Scenes are made so that boxes are a poor
mask (six non-box shapes that fill their box from ~30% to ~80%), GrabCut is good but clearly imperfect
(object colours come from the same palette as the textured background, two-tone object textures, unlabelled
clutter, occlusion, blur and noise), and a learner can still tell the classes apart (each class has a fixed
shape and, most of the time, a signature texture).

Layout: ``cache_root()/"shapes"/f"v1-{params hash}"/{train,val}/`` holding ``images/*.png`` and
``instances.json`` (COCO instances, RLE masks, ``bbox`` computed from the masks). Each split is generated
on first use into a temporary folder that is renamed into place, so an interrupted or concurrent generation
never leaves half a dataset. Every image has its own RNG seeded by (split seed, index): the output does not
depend on worker count or call order. ``PARAMS`` is frozen (baselines in bench/RESULTS.md were measured on
it); changing it changes the hash, hence the folder, never silently the data behind a cached GrabCut entry.

Registration is lazy: importing this module registers the names and their metadata; nothing is generated
until ``DatasetCatalog.get(name)`` is called.
"""
import json
import logging
import os
import shutil
import tempfile
from pathlib import Path

import cv2
import numpy as np
import pycocotools.mask as mask_util
from tqdm import tqdm

from ...structures import encode_rle
from ..cache import cache_root, stable_hash
from .coco import load_coco_boxes
from .common import DatasetError, register_box_dataset, registered_metadata, semantic_metadata

logger = logging.getLogger(__name__)

__all__ = [
    "SHAPES_CLASSES",
    "PARAMS",
    "params_hash",
    "shapes_split_dir",
    "ensure_shapes_split",
    "generate_image",
    "shapes_metadata",
    "register_shapes",
]

SHAPES_CLASSES = ["disc", "triangle", "star", "ring", "crescent", "cross"]

# Frozen generator parameters (part of the cache key). Sizes are chosen for the CPU demo: 160x160 px,
# 240 train / 80 val images -> generation takes seconds, GrabCut on val well under a minute on 2 workers.
PARAMS = {
    "generator": 1,  # bump when the drawing code changes in a way that changes pixels
    "classes": SHAPES_CLASSES,
    "image_size": [160, 160],  # height, width
    "splits": {"train": {"num_images": 240, "seed": 20200823}, "val": {"num_images": 80, "seed": 20201231}},
    "objects_per_image": [2, 5],
    "object_radius": [17, 40],  # px, radius of the shape's circumscribed circle
    "min_visible_fraction": 0.55,  # of an object's own area after later objects occlude it
    "min_visible_pixels": 120,
    "placement_attempts": 30,
    "clutter_per_image": [1, 4],  # unlabelled rectangles / bars / blobs in the background
    "signature_texture_prob": 0.7,  # probability an object uses its class's signature texture
    "colour_jitter": 22.0,
    "blur_sigma": 0.7,
    "noise_sigma": 6.0,
    "supersample": 4,  # shapes are drawn at 4x and area-downsampled: soft, antialiased edges
}

# One palette for background, clutter and objects alike (RGB), so colour alone never separates them.
_PALETTE = np.array(
    [
        [200, 60, 50], [230, 140, 40], [225, 205, 70], [90, 170, 70], [50, 150, 150], [60, 100, 200],
        [130, 80, 170], [215, 120, 170], [130, 90, 60], [140, 140, 140], [225, 225, 215], [50, 55, 60],
    ],
    dtype=np.float32,
)
_TEXTURES = ("flat", "stripes", "checker", "spots", "noise", "gradient")
# Class -> signature texture (used with probability PARAMS["signature_texture_prob"]).
_SIGNATURE = {"disc": "spots", "triangle": "stripes", "star": "flat", "ring": "checker",
              "crescent": "gradient", "cross": "noise"}


def params_hash():
    return stable_hash(PARAMS)


def _grid(h, w):
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    return xs, ys


def _smooth_noise(rng, h, w, cells):
    small = rng.random((cells, cells)).astype(np.float32)
    big = cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC)
    lo, hi = float(big.min()), float(big.max())
    return (big - lo) / max(hi - lo, 1e-6)


def _pattern(rng, kind, h, w, centre=None, scale=40.0):
    """A texture weight map in [0, 1] (0 -> first colour, 1 -> second colour)."""
    xs, ys = _grid(h, w)
    angle = rng.uniform(0, np.pi)
    proj = xs * np.cos(angle) + ys * np.sin(angle)
    if kind == "flat":
        return np.zeros((h, w), np.float32)
    if kind == "stripes":
        period = rng.uniform(6, 14)
        wave = np.sin(2 * np.pi * proj / period + rng.uniform(0, 2 * np.pi))
        return np.clip(0.5 + 1.5 * wave, 0, 1)  # fairly hard-edged stripes
    if kind == "checker":
        period = rng.uniform(8, 14)
        other = -xs * np.sin(angle) + ys * np.cos(angle)
        return ((np.floor(proj / period) + np.floor(other / period)) % 2).astype(np.float32)
    if kind == "spots":
        return (_smooth_noise(rng, h, w, int(rng.integers(14, 22))) > 0.62).astype(np.float32)
    if kind == "noise":
        return _smooth_noise(rng, h, w, int(rng.integers(6, 12)))
    if kind == "gradient":
        if centre is None:
            t = proj - proj.min()
            return t / max(float(t.max()), 1e-6)
        d = np.hypot(xs - centre[0], ys - centre[1]) / scale
        return np.clip(d, 0, 1)
    raise ValueError(f"unknown texture kind {kind!r}")


def _colour(rng, jitter):
    return np.clip(_PALETTE[rng.integers(len(_PALETTE))] + rng.normal(0, jitter, 3), 0, 255).astype(np.float32)


def _two_colours(rng, jitter):
    c1 = _colour(rng, jitter)
    if rng.random() < 0.5:
        c2 = _colour(rng, jitter)  # two-tone
    else:
        c2 = np.clip(c1 * rng.uniform(0.45, 0.75), 0, 255)  # shade of the same colour
    return c1, c2


def _textured(rng, kind, h, w, jitter, centre=None, scale=40.0):
    c1, c2 = _two_colours(rng, jitter)
    t = _pattern(rng, kind, h, w, centre, scale)[..., None]
    return c1 * (1 - t) + c2 * t


def _background(rng, h, w, jitter):
    """Two blended textures (smooth noise, stripes or a gradient) in palette colours."""
    base = _textured(rng, str(rng.choice(["noise", "gradient", "stripes"])), h, w, jitter)
    over = _textured(rng, str(rng.choice(["noise", "gradient", "stripes", "checker"])), h, w, jitter)
    mix = _smooth_noise(rng, h, w, 3)[..., None]
    return base * mix + over * (1 - mix)


def _rotated(points, angle):
    c, s = np.cos(angle), np.sin(angle)
    return points @ np.array([[c, s], [-s, c]], dtype=np.float64)


def _shape_canvas(rng, cls, cx, cy, r, h, w, ss):
    """Draw one shape at ``ss``x resolution; returns a uint8 {0,255} canvas of shape (h*ss, w*ss)."""
    canvas = np.zeros((h * ss, w * ss), np.uint8)
    angle = rng.uniform(0, 2 * np.pi)
    centre = np.array([cx, cy]) * ss
    R = r * ss

    def poly(pts):
        cv2.fillPoly(canvas, [np.round(_rotated(pts, angle) + centre).astype(np.int32)], 255, cv2.LINE_8)

    def ellipse(c, axes, value):
        c = tuple(int(round(v)) for v in c)
        axes = tuple(int(round(v)) for v in axes)
        cv2.ellipse(canvas, c, axes, float(np.degrees(angle)), 0, 360, value, -1, cv2.LINE_8)

    if cls == "disc":
        ellipse(centre, (R, R * rng.uniform(0.75, 1.0)), 255)
    elif cls == "triangle":
        a = np.deg2rad(np.array([90, 210, 330]) + rng.uniform(-12, 12, 3))
        rad = R * rng.uniform(0.85, 1.0, 3)
        poly(np.stack([rad * np.cos(a), rad * np.sin(a)], 1))
    elif cls == "star":
        n = int(rng.integers(5, 7))
        a = np.arange(2 * n) * np.pi / n
        rad = np.where(np.arange(2 * n) % 2 == 0, R, R * rng.uniform(0.4, 0.55))
        poly(np.stack([rad * np.cos(a), rad * np.sin(a)], 1))
    elif cls == "ring":
        ellipse(centre, (R, R), 255)
        ellipse(centre, (R * rng.uniform(0.45, 0.65),) * 2, 0)
    elif cls == "crescent":
        ellipse(centre, (R, R), 255)
        off = R * rng.uniform(0.35, 0.6)
        inner = centre + off * np.array([np.cos(angle), np.sin(angle)])
        ellipse(inner, (R * rng.uniform(0.8, 0.95),) * 2, 0)
    elif cls == "cross":
        k = rng.uniform(0.25, 0.38)  # half-width of an arm relative to R
        pts = np.array([[k, 1], [k, k], [1, k], [1, -k], [k, -k], [k, -1], [-k, -1], [-k, -k], [-1, -k],
                        [-1, k], [-k, k], [-k, 1]]) * R
        poly(pts)
    else:
        raise ValueError(f"unknown shapes class {cls!r}")
    return canvas


def _downsample(canvas, ss):
    h, w = canvas.shape[0] // ss, canvas.shape[1] // ss
    return cv2.resize(canvas.astype(np.float32) / 255.0, (w, h), interpolation=cv2.INTER_AREA)


def _clutter(rng, img, jitter, ss):
    """Unlabelled clutter (rectangles, bars, blobs): background that is not uniform inside a box margin."""
    h, w = img.shape[:2]
    lo, hi = PARAMS["clutter_per_image"]
    for _ in range(int(rng.integers(lo, hi + 1))):
        canvas = np.zeros((h * ss, w * ss), np.uint8)
        cx, cy = rng.uniform(0, w) * ss, rng.uniform(0, h) * ss
        kind = rng.integers(3)
        if kind == 0:  # rectangle
            hw, hh = rng.uniform(6, 22, 2) * ss
            cv2.rectangle(canvas, (int(cx - hw), int(cy - hh)), (int(cx + hw), int(cy + hh)), 255, -1)
        elif kind == 1:  # bar
            a = rng.uniform(0, np.pi)
            d = rng.uniform(25, 70) * ss * np.array([np.cos(a), np.sin(a)])
            p0, p1 = np.array([cx, cy]) - d / 2, np.array([cx, cy]) + d / 2
            cv2.line(canvas, tuple(int(v) for v in p0), tuple(int(v) for v in p1), 255,
                     int(rng.uniform(2, 6) * ss))
        else:  # blob
            blob = _smooth_noise(rng, h * ss, w * ss, 7)
            xs, ys = _grid(h * ss, w * ss)
            fall = np.hypot(xs - cx, ys - cy) / (rng.uniform(10, 22) * ss)
            canvas[(blob - fall) > 0.0] = 255
        alpha = _downsample(canvas, ss)[..., None]
        tex = _textured(rng, str(rng.choice(_TEXTURES)), h, w, jitter)
        img[:] = img * (1 - alpha) + tex * alpha


def generate_image(split, index):
    """One scene: ``(rgb uint8 HxWx3, [(class_id, bool mask HxW), ...])`` with visible (occluded) masks.

    Deterministic in (split, index) only.
    """
    p = PARAMS
    seed = p["splits"][split]["seed"]
    rng = np.random.default_rng([seed, index])
    h, w = p["image_size"]
    ss = p["supersample"]
    jitter = p["colour_jitter"]

    img = _background(rng, h, w, jitter)
    _clutter(rng, img, jitter, ss)

    lo, hi = p["objects_per_image"]
    n_objects = int(rng.integers(lo, hi + 1))
    classes, masks, alphas, textures = [], [], [], []
    for _ in range(n_objects):
        cls_id = int(rng.integers(len(SHAPES_CLASSES)))  # before placement: rejections must not bias classes
        for _attempt in range(p["placement_attempts"]):
            r = rng.uniform(*p["object_radius"])
            cx, cy = rng.uniform(0.6 * r, w - 0.6 * r), rng.uniform(0.6 * r, h - 0.6 * r)
            alpha = _downsample(_shape_canvas(rng, SHAPES_CLASSES[cls_id], cx, cy, r, h, w, ss), ss)
            mask = alpha >= 0.5
            area = int(mask.sum())
            if area < p["min_visible_pixels"]:
                continue
            # Would this object hide too much of an earlier one?
            if any((m & ~mask).sum() < max(p["min_visible_fraction"] * m.sum(), p["min_visible_pixels"])
                   for m in masks):
                continue
            break
        else:
            continue  # no acceptable placement: fewer objects in this image
        kind = SHAPES_CLASSES[cls_id]
        texture = _SIGNATURE[kind] if rng.random() < p["signature_texture_prob"] else str(rng.choice(_TEXTURES))
        classes.append(cls_id)
        masks.append(mask)
        alphas.append(alpha)
        textures.append(_textured(rng, texture, h, w, jitter, centre=(cx, cy), scale=r))

    for alpha, tex in zip(alphas, textures):
        img = img * (1 - alpha[..., None]) + tex * alpha[..., None]
    # Visible masks: later objects occlude earlier ones.
    visible = []
    covered = np.zeros((h, w), bool)
    for mask in reversed(masks):
        visible.append(mask & ~covered)
        covered |= mask
    visible.reverse()

    img = cv2.GaussianBlur(img, (0, 0), p["blur_sigma"])
    img = img + rng.normal(0, p["noise_sigma"], img.shape).astype(np.float32)
    rgb = np.clip(np.round(img), 0, 255).astype(np.uint8)
    return rgb, list(zip(classes, visible))


def shapes_split_dir(split, root=None):
    """Where ``split`` lives (or will live): ``root/v1-{hash}/{split}``, root defaulting to cache/shapes."""
    base = Path(root) if root is not None else cache_root() / "shapes"
    return base / f"v1-{params_hash()}" / split


def _write_split(split, out_dir):
    image_dir = out_dir / "images"
    image_dir.mkdir(parents=True)
    h, w = PARAMS["image_size"]
    images, annotations = [], []
    n = PARAMS["splits"][split]["num_images"]
    for index in tqdm(range(n), desc=f"generating box2seg_shapes {split}", unit="img", mininterval=1.0):
        rgb, objects = generate_image(split, index)
        file_name = f"{index:06d}.png"
        if not cv2.imwrite(str(image_dir / file_name), rgb[:, :, ::-1]):
            raise OSError(f"could not write {image_dir / file_name}")
        images.append({"id": index, "file_name": file_name, "height": h, "width": w})
        for cls_id, mask in objects:
            (rle,) = encode_rle(mask[None])
            annotations.append({
                "id": len(annotations) + 1,
                "image_id": index,
                "category_id": cls_id + 1,
                "bbox": [float(v) for v in mask_util.toBbox(rle)],
                "area": float(mask_util.area(rle)),
                "iscrowd": 0,
                "segmentation": rle,
            })
    coco = {
        "info": {"description": f"box2seg_shapes {split}", "params": PARAMS, "params_hash": params_hash()},
        "images": images,
        "annotations": annotations,
        "categories": [{"id": i + 1, "name": c, "supercategory": "shape"} for i, c in enumerate(SHAPES_CLASSES)],
    }
    with open(out_dir / "instances.json", "w") as f:
        json.dump(coco, f)
        f.flush()
        os.fsync(f.fileno())


def ensure_shapes_split(split, root=None):
    """Generate ``split`` if missing (atomically); return ``(json_file, image_root)``."""
    if split not in PARAMS["splits"]:
        raise KeyError(f"box2seg_shapes has no split {split!r}; splits: {sorted(PARAMS['splits'])}")
    final = shapes_split_dir(split, root)
    json_file, image_root = final / "instances.json", final / "images"
    if not json_file.is_file():
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{split}.", suffix=".partial", dir=final.parent))
        try:
            logger.info("Generating box2seg_shapes %s into %s", split, final)
            _write_split(split, tmp)
            try:
                os.rename(tmp, final)  # atomic: the split appears complete or not at all
            except OSError:
                if not json_file.is_file():  # not a lost race with a concurrent generator
                    raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return str(json_file), str(image_root)


def shapes_metadata(root=None):
    """Everything the catalog needs, known without generating anything."""
    meta = semantic_metadata(SHAPES_CLASSES, {i + 1: i for i in range(len(SHAPES_CLASSES))}, has_masks=True)
    meta.update(box_labels_exhaustive=True, shapes_root=None if root is None else str(root),
                shapes_params_hash=params_hash())
    return meta


def register_shapes(root=None, prefix="box2seg_shapes"):
    """Register ``{prefix}_train`` / ``{prefix}_val`` lazily (nothing is generated until they are read).

    ``root`` defaults to ``cache_root()/"shapes"``, resolved when the dataset is read (so a
    ``$BOX2SEG_CACHE`` set after import is honoured). Registering again with the same root is a no-op.
    """
    for split in PARAMS["splits"]:
        name = f"{prefix}_{split}"
        meta = shapes_metadata(root)
        existing = registered_metadata(name)
        if existing is not None:
            if existing.get("shapes_root", "-") == meta["shapes_root"]:
                continue
            raise DatasetError(f"dataset '{name}' is already registered (shapes_root="
                               f"{existing.get('shapes_root', '-')!r}); cannot register it with root={root!r}")

        def load(name=name, split=split):
            json_file, image_root = ensure_shapes_split(split, root)
            return load_coco_boxes(json_file, image_root, dataset_name=name)

        register_box_dataset(name, load, meta)


register_shapes()
