"""``box2seg_scenes_{train,val}``: generated photo-like scenes on which GrabCut is about as wrong as on photos.

Why it exists: on box2seg_shapes (flat colours) GrabCut scores 0.81 and its errors are systematic (it fills
every ring's hole), so no learner of its labels can beat it. The paper's regime is GrabCut labels whose
errors vary from image to image: colour overlap between object and background, texture, clutter, small
objects. These scenes have all of that, procedurally (nothing downloaded, no licence):

- textures: fractal value noise (Perlin-like octaves), warped stripes, rotated checkers, spots and shaded
  flat colour, each through a few colours of one shared palette, with low-frequency shading;
- colour overlap: an object's two colours are, with probability ``colour_overlap``, two of the colours of
  the background around it;
- clutter (unlabelled textured blobs and bars) behind the objects, unlabelled occluders in front of them,
  objects occluding each other, soft shadows, blur and sensor noise;
- six non-convex shape families (blobs, animals, figures, bottles, leaves, tools) whose sizes are drawn per
  COCO area bucket (small < 32^2 <= medium < 96^2 <= large) with the shares of coco_tiny's 43 / 37 / 20%.

``PARAMS`` was calibrated from the box-only baselines' scores alone (bench/scenes_calibration.py, the one
scorer per box: GrabCut with the default settings and the filled ellipse, as on COCO photos;
bench/RESULTS.md, "Issue 15"); its hash names the cache folder, so a changed generator never silently
replaces the data behind a cached GrabCut label. Every image has its own RNG seeded by (split seed, index):
a split of N images is the first N images of any longer one, whatever the worker count or call order.

Layout: ``cache_root()/"scenes"/f"v1-{params hash}"/{train,val}/`` with ``images/*.png`` and
``instances.json`` (COCO instances, RLE masks of the visible parts, ``bbox`` from the masks), generated on
first read into a temporary folder renamed into place. Registration is lazy: importing this module
registers the names and their metadata; nothing is generated until ``DatasetCatalog.get(name)``.
"""
import copy
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

__all__ = ["SCENES_CLASSES", "PARAMS", "SIZE_SHARES", "params_hash", "scene_params", "scenes_split_dir",
           "ensure_scenes_split", "generate_scene", "scenes_metadata", "register_scenes"]

SCENES_CLASSES = ["blob", "animal", "figure", "bottle", "leaf", "tool"]
# coco_tiny's shares of small / medium / large objects (true mask area, COCO's thresholds).
SIZE_SHARES = {"small": 0.43, "medium": 0.37, "large": 0.20}

# Frozen generator parameters (the cache key). Calibrated by bench/scenes_calibration.py (bench/RESULTS.md).
PARAMS = {
    "generator": 1,  # bump when the drawing code changes pixels
    "classes": SCENES_CLASSES,
    "image_size": [256, 256],  # height, width
    "splits": {"train": {"num_images": 160, "seed": 15150001}, "val": {"num_images": 64, "seed": 15150002}},
    "objects_per_image": [3, 7],
    # Drawn area (px, before occlusion) per size bucket: log-uniform in [low, high); bucket probabilities
    # are set so that the *visible* masks' shares come out near SIZE_SHARES.
    "bucket_probs": [0.42, 0.33, 0.25],
    "bucket_areas": [[90, 1024], [1024, 9216], [12000, 40000]],
    "limb_width": 2.2,  # scales legs, arms, handles, necks and stems (thin parts: far from an ellipse)
    "blob_roughness": 0.7,  # scales the blobs' harmonics
    "max_tilt": 0.3,  # radians: most objects stand upright, tilted by at most this
    "free_rotation_prob": 0.15,  # ... the others at any angle
    "colour_overlap": 0.8,  # probability an object's colours are taken from the background's colours
    "camouflage": 0.4,  # an object's texture is blended with the scene behind it by U(0, camouflage)
    "colour_jitter": 10.0,
    "shading": 0.45,  # amplitude of the low-frequency brightness field (objects and background)
    "clutter_behind": [4, 9],  # unlabelled textured blobs / bars behind the objects
    "occluders_in_front": [0, 2],  # unlabelled textured blobs / bars drawn over the objects
    "shadow_prob": 0.8,
    "min_visible_fraction": 0.7,  # of an object's own area once later objects and occluders cover it
    "min_visible_pixels": 40,
    "placement_attempts": 25,
    "blur_sigma": 1.0,
    "noise_sigma": 10.0,
    "supersample": 3,
}

# One palette for background, clutter and objects (RGB, muted photo-like colours).
_PALETTE = np.array(
    [
        [168, 62, 52], [205, 133, 63], [214, 190, 110], [107, 142, 35], [60, 110, 70], [70, 130, 140],
        [70, 95, 150], [120, 90, 140], [190, 120, 140], [120, 85, 60], [150, 150, 145], [215, 210, 200],
        [60, 60, 65], [95, 80, 70], [175, 160, 130], [40, 70, 100],
    ],
    dtype=np.float32,
)
_TEXTURES = ("noise", "stripes", "checker", "spots", "flat")


def params_hash(params=None):
    return stable_hash(PARAMS if params is None else params)


def scene_params(num_images=None):
    """A copy of PARAMS with the splits' ``num_images`` replaced ({split: n}, e.g. small ones for tests)."""
    params = copy.deepcopy(PARAMS)
    for split, n in (num_images or {}).items():
        if split not in params["splits"]:
            raise KeyError(f"box2seg_scenes has no split {split!r}; splits: {sorted(params['splits'])}")
        params["splits"][split]["num_images"] = int(n)
    return params


# ---------------------------------------------------------------------------------------------- textures

def _value_noise(rng, h, w, cells):
    """Smooth noise in [0, 1]: a random grid of ``cells`` x ``cells`` values, bicubically upsampled."""
    small = rng.random((cells, cells)).astype(np.float32)
    big = cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC)
    lo, hi = float(big.min()), float(big.max())
    return (big - lo) / max(hi - lo, 1e-6)


def _fractal_noise(rng, h, w, base_cells, octaves=4):
    """Perlin-like octaves of value noise (each twice as fine, half as strong), normalised to [0, 1]."""
    total = np.zeros((h, w), np.float32)
    for k in range(octaves):
        total += 0.5 ** k * _value_noise(rng, h, w, base_cells * 2 ** k)
    lo, hi = float(total.min()), float(total.max())
    return (total - lo) / max(hi - lo, 1e-6)


def _pattern(rng, kind, h, w):
    """A weight map in [0, 1] that mixes a texture's colours."""
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    angle = rng.uniform(0, np.pi)
    proj = xs * np.cos(angle) + ys * np.sin(angle)
    if kind == "noise":
        return _fractal_noise(rng, h, w, int(rng.integers(2, 6)))
    if kind == "stripes":
        period = rng.uniform(4, 16)
        warp = _value_noise(rng, h, w, 4) * rng.uniform(0, 2.5 * period)
        wave = np.sin(2 * np.pi * (proj + warp) / period)
        return np.clip(0.5 + rng.uniform(0.6, 2.0) * wave, 0, 1)
    if kind == "checker":
        period = rng.uniform(5, 16)
        other = -xs * np.sin(angle) + ys * np.cos(angle)
        return ((np.floor(proj / period) + np.floor(other / period)) % 2).astype(np.float32)
    if kind == "spots":
        return (_fractal_noise(rng, h, w, int(rng.integers(8, 16)), 2) > rng.uniform(0.55, 0.7)).astype(np.float32)
    if kind == "flat":
        return np.zeros((h, w), np.float32)
    raise ValueError(f"unknown texture kind {kind!r}")


def _jittered(rng, colour, jitter):
    return np.clip(colour + rng.normal(0, jitter, 3), 0, 255).astype(np.float32)


def _textured(rng, kind, colours, h, w, jitter, shading):
    """A texture of ``kind`` mixing two of ``colours`` (jittered), times a low-frequency shading field."""
    c1 = _jittered(rng, colours[0], jitter)
    c2 = _jittered(rng, colours[1] if len(colours) > 1 else colours[0] * rng.uniform(0.5, 0.8), jitter)
    t = _pattern(rng, kind, h, w)[..., None]
    shade = 1.0 + shading * (2 * _value_noise(rng, h, w, 3) - 1)
    return (c1 * (1 - t) + c2 * t) * shade[..., None]


def _palette_colours(rng, n):
    return [_PALETTE[i] for i in rng.choice(len(_PALETTE), n, replace=False)]


# ------------------------------------------------------------------------------------------------ shapes

def _ellipse_pts(cx, cy, ax, ay, angle=0.0, n=40):
    t = np.linspace(0, 2 * np.pi, n, endpoint=False)
    x, y = ax * np.cos(t), ay * np.sin(t)
    c, s = np.cos(angle), np.sin(angle)
    return np.stack([cx + c * x - s * y, cy + s * x + c * y], 1)


def _bar_pts(p0, p1, half_width):
    p0, p1 = np.asarray(p0, np.float64), np.asarray(p1, np.float64)
    d = p1 - p0
    n = np.array([-d[1], d[0]]) / max(np.hypot(*d), 1e-6) * half_width
    return np.stack([p0 + n, p1 + n, p1 - n, p0 - n])


def _shape_polygons(rng, cls, limb=1.0, rough=1.0):
    """The polygons (unit frame, about [-1, 1]^2) whose union is one object of class ``cls``; ``limb`` scales
    the widths of legs, arms, handles and stems, ``rough`` the blob's harmonics (how far from an ellipse)."""
    u = rng.uniform
    if cls == "blob":  # star-convex: a radius with a few random Fourier harmonics
        t = np.linspace(0, 2 * np.pi, 64, endpoint=False)
        r = np.ones_like(t)
        for k in range(2, 6):
            r += rough * u(0, 0.64 / k) * np.cos(k * t + u(0, 2 * np.pi))
        r = np.clip(r, 0.35, None) * 0.8
        return [np.stack([r * np.cos(t) * u(0.7, 1.0), r * np.sin(t)], 1)]
    if cls == "animal":  # body, head, four legs, tail
        body_w, body_h = u(0.55, 0.75), u(0.25, 0.38)
        polys = [_ellipse_pts(0, -0.1, body_w, body_h)]
        hx = body_w * u(0.8, 1.05)
        polys.append(_ellipse_pts(hx, -0.1 - body_h * u(0.6, 1.2), u(0.15, 0.24), u(0.13, 0.2)))
        leg = u(0.35, 0.6)
        for x in (-0.75, -0.45, 0.45, 0.75):
            x0 = x * body_w
            polys.append(_bar_pts((x0, 0.0), (x0 + u(-0.1, 0.1), body_h + leg - 0.1), limb * u(0.04, 0.08)))
        polys.append(_bar_pts((-body_w * 0.9, -0.15), (-body_w - u(0.2, 0.35), -0.15 - u(-0.3, 0.3)), limb * 0.035))
        return polys
    if cls == "figure":  # head, torso, two arms, two legs
        polys = [_ellipse_pts(0, -0.78, 0.15, 0.17), _ellipse_pts(0, -0.2, u(0.2, 0.28), u(0.4, 0.46))]
        for side in (-1, 1):
            polys.append(_bar_pts((side * 0.15, -0.5), (side * u(0.3, 0.55), u(-0.4, 0.15)), limb * u(0.05, 0.08)))
            polys.append(_bar_pts((side * 0.1, 0.15), (side * u(0.1, 0.35), 1.0), limb * u(0.07, 0.1)))
        return polys
    if cls == "bottle":  # body, shoulder, neck
        bw, neck = u(0.25, 0.4), limb * u(0.07, 0.12)
        body = np.array([[-bw, 1.0], [bw, 1.0], [bw, -0.2], [neck, -0.55], [neck, -1.0], [-neck, -1.0],
                         [-neck, -0.55], [-bw, -0.2]])
        return [body]
    if cls == "leaf":  # a pointed lens plus a stem
        t = np.linspace(-1, 1, 32)
        width = u(0.3, 0.5) * (1 - t ** 2) ** u(0.7, 1.2)
        bend = u(-0.2, 0.2) * (1 - t ** 2)
        pts = np.concatenate([np.stack([bend + width, t * 0.85], 1), np.stack([bend - width, t * 0.85], 1)[::-1]])
        return [pts, _bar_pts((0, 0.8), (u(-0.15, 0.15), 1.05), limb * 0.03)]
    if cls == "tool":  # a long handle and a head across it (hammer / axe / brush)
        hw = limb * u(0.05, 0.09)
        head_w, head_h = u(0.35, 0.6), u(0.12, 0.22)
        return [_bar_pts((0, -0.7), (0, 1.0), hw),
                np.array([[-head_w, -1.0], [head_w * u(0.6, 1.0), -1.0], [head_w, -1.0 + 2 * head_h],
                          [-head_w, -1.0 + 2 * head_h]])]
    raise ValueError(f"unknown scenes class {cls!r}")


def _draw(polygons, angle, scale, centre, h, w, ss):
    """The union of ``polygons`` rotated, scaled and moved, drawn at ``ss``x and area-downsampled: soft
    (antialiased) coverage in [0, 1], (h, w) float32."""
    canvas = np.zeros((h * ss, w * ss), np.uint8)
    c, s = np.cos(angle), np.sin(angle)
    rot = np.array([[c, s], [-s, c]])
    pts = [np.round((p @ rot * scale + centre) * ss).astype(np.int32) for p in polygons]
    cv2.fillPoly(canvas, pts, 255, cv2.LINE_8)
    return cv2.resize(canvas.astype(np.float32) / 255.0, (w, h), interpolation=cv2.INTER_AREA)


def _clutter_polygons(rng, p):
    if rng.random() < 0.35:  # a bar (branch, pole, edge of furniture)
        return [_bar_pts((-1, 0), (1, rng.uniform(-0.3, 0.3)), rng.uniform(0.05, 0.2))]
    return _shape_polygons(rng, "blob", rough=p["blob_roughness"])


# ------------------------------------------------------------------------------------------------- scene

def _object_area(rng, p):
    bucket = rng.choice(3, p=np.asarray(p["bucket_probs"], np.float64) / sum(p["bucket_probs"]))
    low, high = p["bucket_areas"][bucket]
    return float(np.exp(rng.uniform(np.log(low), np.log(high))))


def _paste(img, alpha, tex):
    img *= 1 - alpha[..., None]
    img += tex * alpha[..., None]


def generate_scene(split, index, params=None):
    """One scene: ``(rgb uint8 HxWx3, [(class_id, bool mask HxW), ...])``, masks of the visible parts.

    Deterministic in (params, split, index) only.
    """
    p = PARAMS if params is None else params
    rng = np.random.default_rng([p["splits"][split]["seed"], index])
    h, w = p["image_size"]
    ss, jitter, shading = p["supersample"], p["colour_jitter"], p["shading"]

    bg_colours = _palette_colours(rng, 3)
    img = _textured(rng, str(rng.choice(_TEXTURES[:4])), bg_colours[:2], h, w, jitter, shading)
    over = _textured(rng, str(rng.choice(_TEXTURES)), bg_colours[1:], h, w, jitter, shading)
    _paste(img, _value_noise(rng, h, w, 3), over)

    def textured_thing(colour_pool):
        pair = [colour_pool[i] for i in rng.choice(len(colour_pool), 2, replace=False)]
        return _textured(rng, str(rng.choice(_TEXTURES)), pair, h, w, jitter, shading)

    def random_place(polygons, size):
        centre = np.array([rng.uniform(0, w), rng.uniform(0, h)])
        return _draw(polygons, rng.uniform(0, 2 * np.pi), size, centre, h, w, ss)

    for _ in range(int(rng.integers(p["clutter_behind"][0], p["clutter_behind"][1] + 1))):
        alpha = random_place(_clutter_polygons(rng, p), np.sqrt(rng.uniform(150, 5000)))
        _paste(img, alpha, textured_thing(bg_colours + list(_PALETTE)))

    n_objects = int(rng.integers(p["objects_per_image"][0], p["objects_per_image"][1] + 1))
    # Classes and sizes are drawn before placement (rejections must not bias them); larger objects are
    # placed first, further back, as in photos, so that the smaller ones in front rarely hide them.
    planned = sorted(((int(rng.integers(len(SCENES_CLASSES))), _object_area(rng, p)) for _ in range(n_objects)),
                     key=lambda item: -item[1])
    classes, alphas = [], []
    for cls_id, area in planned:
        polygons = _shape_polygons(rng, SCENES_CLASSES[cls_id], p["limb_width"], p["blob_roughness"])
        unit = max(float(_draw(polygons, 0.0, 40.0, np.array([60.0, 60.0]), 120, 120, 1).sum()) / 1600.0, 0.05)
        for attempt in range(p["placement_attempts"]):
            scale = np.sqrt(area / unit) * 0.97 ** attempt  # a little smaller after each rejection
            if scale > 1.2 * min(h, w) / 2:
                continue
            centre = np.array([rng.uniform(0.3 * scale, w - 0.3 * scale), rng.uniform(0.3 * scale, h - 0.3 * scale)])
            upright = rng.random() >= p["free_rotation_prob"]
            angle = rng.uniform(-p["max_tilt"], p["max_tilt"]) if upright else rng.uniform(0, 2 * np.pi)
            alpha = _draw(polygons, angle, scale, centre, h, w, ss)
            mask = alpha >= 0.5
            if mask.sum() < p["min_visible_pixels"]:
                continue
            if any(((m >= 0.5) & ~mask).sum() < max(p["min_visible_fraction"] * (m >= 0.5).sum(),
                                                     p["min_visible_pixels"]) for m in alphas):
                continue  # it would hide too much of an earlier object
            break
        else:
            continue  # no acceptable placement: fewer objects in this image
        # The colour-overlap knob: the colours from the background's colours, or any palette colours.
        pool = bg_colours if rng.random() < p["colour_overlap"] else list(_PALETTE)
        tex = textured_thing(pool)
        # Low contrast (haze, shade, similar material): the object's texture blended with what is behind it.
        blend = rng.uniform(0, p["camouflage"])
        tex = (1 - blend) * tex + blend * img
        if rng.random() < p["shadow_prob"]:
            shift = rng.uniform(-0.12, 0.12, 2) * np.sqrt(mask.sum())
            shadow = cv2.GaussianBlur(np.roll(alpha, (int(shift[1]), int(shift[0])), (0, 1)), (0, 0),
                                      1 + 0.08 * np.sqrt(mask.sum()))
            img *= 1 - rng.uniform(0.25, 0.5) * shadow[..., None]
        _paste(img, alpha, tex)
        classes.append(cls_id)
        alphas.append(alpha)

    occluders = np.zeros((h, w), np.float32)
    for _ in range(int(rng.integers(p["occluders_in_front"][0], p["occluders_in_front"][1] + 1))):
        alpha = random_place(_clutter_polygons(rng, p), np.sqrt(rng.uniform(100, 1500)))
        covered = np.maximum(occluders, alpha) >= 0.5
        if any(((a >= 0.5) & ~covered).sum() < max(p["min_visible_fraction"] * (a >= 0.5).sum(),
                                                    p["min_visible_pixels"]) for a in alphas):
            continue  # an occluder must not hide most of an object
        occluders = np.maximum(occluders, alpha)
        _paste(img, alpha, textured_thing(bg_colours + list(_PALETTE)))

    visible, covered = [], occluders >= 0.5
    for alpha in reversed(alphas):  # later objects occlude earlier ones
        mask = alpha >= 0.5
        visible.append(mask & ~covered)
        covered |= mask
    visible.reverse()

    img = cv2.GaussianBlur(img, (0, 0), p["blur_sigma"])
    img += rng.normal(0, p["noise_sigma"], img.shape).astype(np.float32)
    rgb = np.clip(np.round(img), 0, 255).astype(np.uint8)
    return rgb, list(zip(classes, visible))


# ------------------------------------------------------------------------------------------- the catalog

def scenes_split_dir(split, root=None, params=None):
    """Where ``split`` lives (or will live): ``root/v1-{hash}/{split}``, root defaulting to cache/scenes."""
    base = Path(root) if root is not None else cache_root() / "scenes"
    return base / f"v1-{params_hash(params)}" / split


def _write_split(split, out_dir, params):
    image_dir = out_dir / "images"
    image_dir.mkdir(parents=True)
    h, w = params["image_size"]
    images, annotations = [], []
    n = params["splits"][split]["num_images"]
    for index in tqdm(range(n), desc=f"generating box2seg_scenes {split}", unit="img", mininterval=1.0):
        rgb, objects = generate_scene(split, index, params)
        file_name = f"{index:06d}.png"
        if not cv2.imwrite(str(image_dir / file_name), rgb[:, :, ::-1]):
            raise OSError(f"could not write {image_dir / file_name}")
        images.append({"id": index + 1, "file_name": file_name, "height": h, "width": w})
        for cls_id, mask in objects:
            if not mask.any():
                continue
            (rle,) = encode_rle(mask[None])
            annotations.append({"id": len(annotations) + 1, "image_id": index + 1, "category_id": cls_id + 1,
                                "bbox": [float(v) for v in mask_util.toBbox(rle)],
                                "area": float(mask_util.area(rle)), "iscrowd": 0, "segmentation": rle})
    coco = {
        "info": {"description": f"box2seg_scenes {split}", "params": params, "params_hash": params_hash(params)},
        "images": images,
        "annotations": annotations,
        "categories": [{"id": i + 1, "name": c, "supercategory": "scene"} for i, c in enumerate(SCENES_CLASSES)],
    }
    with open(out_dir / "instances.json", "w") as f:
        json.dump(coco, f)
        f.flush()
        os.fsync(f.fileno())


def ensure_scenes_split(split, root=None, params=None):
    """Generate ``split`` if missing (atomically); return ``(json_file, image_root)``."""
    params = PARAMS if params is None else params
    if split not in params["splits"]:
        raise KeyError(f"box2seg_scenes has no split {split!r}; splits: {sorted(params['splits'])}")
    final = scenes_split_dir(split, root, params)
    json_file, image_root = final / "instances.json", final / "images"
    if not json_file.is_file():
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{split}.", suffix=".partial", dir=final.parent))
        try:
            logger.info("Generating box2seg_scenes %s into %s", split, final)
            _write_split(split, tmp, params)
            try:
                os.rename(tmp, final)  # atomic: the split appears complete or not at all
            except OSError:
                if not json_file.is_file():  # not a lost race with a concurrent generator
                    raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return str(json_file), str(image_root)


def scenes_metadata(root=None, params=None):
    """Everything the catalog needs, known without generating anything."""
    meta = semantic_metadata(SCENES_CLASSES, {i + 1: i for i in range(len(SCENES_CLASSES))}, has_masks=True)
    meta.update(box_labels_exhaustive=True, scenes_root=None if root is None else str(root),
                scenes_params_hash=params_hash(params))
    return meta


def register_scenes(root=None, prefix="box2seg_scenes", num_images=None, params=None):
    """Register ``{prefix}_train`` / ``{prefix}_val`` lazily (nothing is generated until they are read).

    ``num_images`` ({split: n}) shortens or lengthens splits (a different hash, so a different folder);
    ``params`` replaces PARAMS altogether (the calibration bench). ``root`` defaults to
    ``cache_root()/"scenes"``, resolved when the dataset is read. Registering the same names again with the
    same root and parameters is a no-op; with others it is refused.
    """
    params = scene_params(num_images) if params is None else params
    names = []
    for split in params["splits"]:
        name = f"{prefix}_{split}"
        names.append(name)
        meta = scenes_metadata(root, params)
        existing = registered_metadata(name)
        if existing is not None:
            if (existing.get("scenes_root", "-"), existing.get("scenes_params_hash")) == (
                    meta["scenes_root"], meta["scenes_params_hash"]):
                continue
            raise DatasetError(f"dataset '{name}' is already registered (scenes_root="
                               f"{existing.get('scenes_root', '-')!r}, params hash "
                               f"{existing.get('scenes_params_hash')}); cannot register it again with other ones")

        def load(name=name, split=split):
            json_file, image_root = ensure_scenes_split(split, root, params)
            return load_coco_boxes(json_file, image_root, dataset_name=name)

        register_box_dataset(name, load, meta)
    return names


register_scenes()
