"""Offline GrabCut pseudo-labels: one "instance map" per image, cached as a 16-bit PNG.

Why an instance map and not a class map: the map stores, per pixel, *which annotation* claims it
(``k`` = index ``k - 1`` into ``record["annotations"]``), so the mapper can derive the class map ``M`` for any
class subset (boxes dropped by a crop, relabelled datasets) with one LUT, and the export can fall back to a
single box's GrabCut mask. Values: 0 = no box claims the pixel (background), ``k >= 1`` = GrabCut foreground
of annotation ``k - 1``, 65535 (``IGNORE_INDEX``) = inside a crowd box's rectangle and outside every normal
box's rectangle. Stored at the image's original resolution.

Per box (:func:`grabcut_box`): ``cv2.grabCut`` on a crop of the box plus a background margin (``margin`` x
box side, at least ``min_margin`` px of the GrabCut input, clipped to the image). A small box's crop is
upscaled (bilinear) so the box's short side reaches ``upscale_to`` px (at most 8x): GrabCut's colour models
and its pairwise term need pixels, and a 20 px box has too few; the result comes back by area averaging
(> 0.5). With ``core`` > 0 the central ellipse of ``core`` x the box is definite foreground and the rest of the
box probable foreground (``GC_INIT_WITH_MASK``): it stops GrabCut from giving the whole box to the
background. A crop whose longer side exceeds ``max_side`` (original pixels) is downscaled to it instead (the
memory cap: GrabCut needs a few hundred bytes per pixel; a crop of an image of at most ``max_side`` px never
exceeds it, so those labels are unchanged by the cap). The box's pixels are those it touches
(``structures.PIXELS_TOUCHED``: ``floor(x0) <= x < ceil(x1)``, the rectangle GrabCut is given). GrabCut's
GMM initialisation runs k-means on OpenCV's RNG, so the RNG is re-seeded before every box with
``seed + a stable value of (image id, annotation index)``: the result does not depend on worker count,
processing order or resume. A degenerate box (side < 4 px), a failed run or a result covering less than
``fallback_fill`` of the box (a small result is usually a wrong one) falls back to the ellipse inscribed in
the box (pixel centres, the scorer's rule: :func:`box_ellipse`); fallbacks are counted. Crowd boxes get no
GrabCut. Defaults and the measurements behind them: docs/grabcut.md.

Painting (:func:`paint_instance_map`): descending box area, so the smaller box wins overlaps (equal areas:
the later annotation wins); each box's mask is written into its extent in that order (memory: the map and
one box mask, whatever the image size). What painting takes from a box is kept too: the statistics hold, per
box that lost pixels, the RLE of its overpainted pixels over its extent, so :func:`own_grabcut_mask` gives
each box's own GrabCut mask back (chip mode's per-box target: on coco_tiny val2017 the own masks score 0.659
per box, the painted map 0.642).

Cache layout: ``cache_root()/"grabcut"/f"{dataset}-{settings.key()}-{annotations_hash(dicts)}"/`` holding
``{safe_name(image_id)}.png`` per image and ``summary.json``. Each PNG carries its own per-box statistics
(class, GrabCut / fallback / crowd, filling rate) in a ``tEXt`` chunk, written in the same atomic rename as
the pixels, so the summary after a resumed or re-parallelised run is computed from the files themselves and
is byte-identical to a clean run's.
"""
import hashlib
import json
import logging
import math
import struct
import zlib
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
from pycocotools import mask as mask_util

from ..structures import (
    PIXELS_TOUCHED,
    box_areas,
    box_union_mask,
    crop_to_extent,
    ellipse_masks,
    pixel_extents,
    record_boxes,
)
from .cache import annotations_hash, cache_root, safe_name, stable_hash
from .datasets.lazy import is_lazy

__all__ = [
    "IGNORE_INDEX",
    "GrabCutSettings",
    "annotation_seed",
    "grabcut_box",
    "ellipse_mask",
    "box_ellipse",
    "paint_instance_map",
    "compute_instance_map",
    "instance_map_to_labels",
    "encode_instance_map",
    "read_png_stats",
    "own_grabcut_mask",
    "own_grabcut_masks",
    "compute_own_masks",
    "grabcut_cache_dir",
    "grabcut_file_for",
    "prepare_command",
    "attach_grabcut_files",
    "other_settings_caches",
    "warn_other_settings",
    "load_instance_map",
    "own_grabcut_mask",
    "summarize_stats",
]

logger = logging.getLogger(__name__)

IGNORE_INDEX = 65535  # instance-map value for crowd regions
MIN_SIDE = 4  # px: a box narrower than this gets the ellipse fallback
MAX_UPSCALE = 8.0  # upscale_to never enlarges a crop more than this
# Bump when the per-box algorithm or the file format changes: it is part of the cache key.
# 2: fallback_fill / upscale_to / core, pixel-centre fallback ellipse, max_side default 1024.
# 3: the stats keep each box's overpainted pixels, so every box's own GrabCut mask can be read back.
ALGORITHM_VERSION = 3
_STATS_KEY = b"box2seg-grabcut"
# Per-box kinds in the statistics.
GRABCUT, FALLBACK, CROWD = 0, 1, 2


@dataclass(frozen=True)
class GrabCutSettings:
    """What GrabCut's output depends on (besides image and boxes); all of it is part of the cache key."""

    iterations: int = 5
    margin: float = 0.5  # background margin around the box, relative to the box side
    min_margin: int = 32  # ... and at least this many pixels (of GrabCut's input, i.e. after upscaling)
    max_side: int = 1024  # memory cap on the crop's longer side in image pixels (0 = no cap)
    seed: int = 0
    fallback_fill: float = 0.4  # a result covering less than this share of its box -> ellipse
    upscale_to: int = 64  # upscale the crop so the box's short side is at least this many px (0 = off)
    core: float = 0.45  # central ellipse of core x the box marked definite foreground (0 = off: rect init)

    def __post_init__(self):
        # Normalise types so that MARGIN: 1 and MARGIN: 1.0 give the same key.
        for name, kind in (("iterations", int), ("margin", float), ("min_margin", int), ("max_side", int),
                           ("seed", int), ("fallback_fill", float), ("upscale_to", int), ("core", float)):
            value = getattr(self, name)
            if kind is int and float(value) != int(value):
                raise ValueError(f"GrabCutSettings.{name} must be an integer, got {value!r}")
            object.__setattr__(self, name, kind(value))
        if self.iterations < 1:
            raise ValueError(f"GrabCutSettings.iterations must be >= 1, got {self.iterations}")
        if self.margin < 0 or self.min_margin < 0 or self.seed < 0:
            raise ValueError(f"GrabCutSettings: margin, min_margin and seed must be >= 0, got {self}")
        if self.max_side != 0 and self.max_side < 16:
            raise ValueError(f"GrabCutSettings.max_side must be 0 (no cap) or >= 16, got {self.max_side}")
        if not 0.0 <= self.fallback_fill <= 1.0:
            raise ValueError(f"GrabCutSettings.fallback_fill must be in [0, 1], got {self.fallback_fill}")
        if self.upscale_to < 0:
            raise ValueError(f"GrabCutSettings.upscale_to must be >= 0 (0 = off), got {self.upscale_to}")
        if not 0.0 <= self.core < 1.0:
            raise ValueError(f"GrabCutSettings.core must be in [0, 1) (0 = off), got {self.core}")

    @classmethod
    def from_config(cls, cfg):
        g = cfg.GRABCUT
        return cls(iterations=g.ITERATIONS, margin=g.MARGIN, min_margin=g.MIN_MARGIN, max_side=g.MAX_SIDE,
                   seed=g.SEED, fallback_fill=g.FALLBACK_FILL, upscale_to=g.UPSCALE_TO, core=g.CORE)

    def key(self):
        """Short stable hash of the settings and the algorithm version (the cache folder's middle part)."""
        return stable_hash({"algorithm": ALGORITHM_VERSION, **asdict(self)}, length=8)

    def cli_flags(self):
        """The ``prepare-grabcut`` flags that reproduce these settings (only those differing from defaults)."""
        default, flags = GrabCutSettings(), []
        for name, value in asdict(self).items():
            if value != getattr(default, name):
                flags.append(f"--{name.replace('_', '-')} {value:g}" if isinstance(value, float)
                             else f"--{name.replace('_', '-')} {value}")
        return " ".join(flags)


# ----------------------------------------------------------------------------------------------------------
# Per box


def _touched_extent(box, height, width):
    """``(x0, y0, x1, y1)`` Python ints: the pixels one XYXY box touches, clipped (``PIXELS_TOUCHED``)."""
    return tuple(pixel_extents(np.asarray(box, np.float64).reshape(1, 4), height, width, PIXELS_TOUCHED)[0].tolist())


def ellipse_mask(h, w):
    """(h, w) bool: the cv2-drawn ellipse inscribed in an h x w extent (GrabCut's fallback before
    ALGORITHM_VERSION 2; kept for callers that fill an extent). Never empty for h, w >= 1."""
    canvas = np.zeros((h, w), np.uint8)
    if h and w:
        cv2.ellipse(canvas, (w // 2, h // 2), (w // 2, h // 2), 0, 0, 360, 1, -1)
    return canvas.astype(bool)


def box_ellipse(box, extent):
    """(h, w) bool over the box's integer ``extent``: pixel centres inside the ellipse inscribed in the XYXY
    ``box`` (``structures.ellipse_masks``, the scorer's rule), i.e. GrabCut's fallback shape."""
    x0, y0, x1, y1 = extent
    shifted = np.asarray(box, np.float64).reshape(1, 4) - np.array([x0, y0, x0, y0], np.float64)
    return ellipse_masks(shifted, y1 - y0, x1 - x0)[0]


def annotation_seed(seed, image_id, index):
    """The RNG seed of one annotation's GrabCut: stable across processes, runs and worker counts."""
    digest = hashlib.sha1(f"{image_id}/{index}".encode()).digest()
    return (seed + int.from_bytes(digest[:4], "little")) % (2**31 - 1)


def grabcut_box(image, box, settings, rng_seed, fallback=True):
    """GrabCut of one XYXY box on a crop with margin.

    Returns ``(mask, extent, fell_back)``: ``mask`` (h, w) bool over the box's pixel ``extent``
    ``(x0, y0, x1, y1)``, and whether the ellipse fallback was used (degenerate box, GrabCut error, or a
    result covering less than ``settings.fallback_fill`` of the box). ``fallback=False`` (benchmarks) returns GrabCut's own result even
    then (empty for a degenerate box or an error), ``fell_back`` still telling whether it would have fallen back.
    """
    height, width = image.shape[:2]
    x0, y0, x1, y1 = extent = _touched_extent(box, height, width)
    raw = _grabcut_raw(image, box, extent, settings, rng_seed)
    bw, bh = x1 - x0, y1 - y0
    if raw is not None and raw.sum() >= settings.fallback_fill * bw * bh and raw.any():
        return raw, extent, False
    if fallback:
        return box_ellipse(box, extent), extent, True
    return (raw if raw is not None else np.zeros((bh, bw), bool)), extent, True


def _grabcut_raw(image, box, extent, settings, rng_seed):
    """GrabCut's foreground over the box's extent, or None for a degenerate box or a GrabCut error."""
    height, width = image.shape[:2]
    x0, y0, x1, y1 = extent
    bw, bh = x1 - x0, y1 - y0
    side_w = min(float(box[2]), width) - max(float(box[0]), 0.0)
    side_h = min(float(box[3]), height) - max(float(box[1]), 0.0)
    if side_w < MIN_SIDE or side_h < MIN_SIDE:
        return None

    scale = 1.0
    if settings.upscale_to:
        scale = min(max(1.0, settings.upscale_to / min(bw, bh)), MAX_UPSCALE)
    # min_margin counts pixels of GrabCut's input: min_margin / scale image pixels.
    mx = max(math.ceil(settings.margin * bw), math.ceil(settings.min_margin / scale))
    my = max(math.ceil(settings.margin * bh), math.ceil(settings.min_margin / scale))
    cx0, cy0 = max(x0 - mx, 0), max(y0 - my, 0)
    cx1, cy1 = min(x1 + mx, width), min(y1 + my, height)
    crop = image[cy0:cy1, cx0:cx1]
    ch, cw = crop.shape[:2]
    rect = [x0 - cx0, y0 - cy0, x1 - cx0, y1 - cy0]  # xyxy in crop coordinates
    if settings.max_side and max(ch, cw) > settings.max_side:
        scale = 1.0  # the memory cap wins over upscaling
        scale = settings.max_side / max(ch, cw)
        crop = cv2.resize(crop, (max(round(cw * scale), 1), max(round(ch * scale), 1)), interpolation=cv2.INTER_AREA)
        sh, sw = crop.shape[:2]
        rect = [min(math.floor(rect[0] * scale), sw - 1), min(math.floor(rect[1] * scale), sh - 1),
                min(math.ceil(rect[2] * scale), sw), min(math.ceil(rect[3] * scale), sh)]
        back = cv2.INTER_NEAREST
    elif scale != 1.0:
        sw, sh = max(round(cw * scale), 1), max(round(ch * scale), 1)
        crop = cv2.resize(crop, (sw, sh), interpolation=cv2.INTER_LINEAR)
        rect = [math.floor(rect[0] * sw / cw), math.floor(rect[1] * sh / ch),
                min(math.ceil(rect[2] * sw / cw), sw), min(math.ceil(rect[3] * sh / ch), sh)]
        back = cv2.INTER_AREA
    sh, sw = crop.shape[:2]
    if (rect[2] - rect[0]) * (rect[3] - rect[1]) >= sh * sw - 16:
        # The box covers (nearly) the whole crop: GrabCut needs background samples for its GMM.
        rect = [rect[0] + 1, rect[1] + 1, rect[2] - 1, rect[3] - 1]
    mask = np.zeros((sh, sw), np.uint8)
    bgd, fgd = np.zeros((1, 65), np.float64), np.zeros((1, 65), np.float64)
    cv2.setRNGSeed(int(rng_seed))
    try:
        if settings.core > 0:
            mask[rect[1]:rect[3], rect[0]:rect[2]] = cv2.GC_PR_FGD
            rw, rh = rect[2] - rect[0], rect[3] - rect[1]
            axes = (max(int(round(settings.core * rw / 2)), 1), max(int(round(settings.core * rh / 2)), 1))
            centre = (int((rect[0] + rect[2]) / 2), int((rect[1] + rect[3]) / 2))
            cv2.ellipse(mask, centre, axes, 0, 0, 360, cv2.GC_FGD, -1)
            cv2.grabCut(np.ascontiguousarray(crop), mask, None, bgd, fgd, settings.iterations,
                        cv2.GC_INIT_WITH_MASK)
        else:
            cv2.grabCut(np.ascontiguousarray(crop), mask, (rect[0], rect[1], rect[2] - rect[0], rect[3] - rect[1]),
                        bgd, fgd, settings.iterations, cv2.GC_INIT_WITH_RECT)
    except cv2.error:
        return None
    fg = (mask == cv2.GC_FGD) | (mask == cv2.GC_PR_FGD)
    if scale != 1.0:
        if back == cv2.INTER_AREA:
            fg = cv2.resize(fg.astype(np.float32), (cw, ch), interpolation=cv2.INTER_AREA) > 0.5
        else:
            fg = cv2.resize(fg.astype(np.uint8), (cw, ch), interpolation=cv2.INTER_NEAREST) > 0
    return crop_to_extent(fg, (x0 - cx0, y0 - cy0, x1 - cx0, y1 - cy0)).astype(bool)


# ----------------------------------------------------------------------------------------------------------
# Per image


def paint_instance_map(height, width, masks, extents, areas, indices, crowd_extents=()):
    """Instance map (uint16) from per-box masks.

    ``masks[j]`` is a bool mask over ``extents[j]`` for annotation ``indices[j]`` with box area ``areas[j]``.
    Boxes are painted in descending area (ties: higher annotation index last) so the smaller box wins; then
    pixels of ``crowd_extents`` rectangles outside every normal rectangle become ``IGNORE_INDEX``.
    """
    if len(indices) + 1 >= IGNORE_INDEX:
        raise ValueError(f"an image with {len(indices)} boxes does not fit a 16-bit instance map")
    out = np.zeros((height, width), np.uint16)
    indices = np.asarray(indices, np.int64)
    if len(indices):
        for j in np.lexsort((indices, -np.asarray(areas, np.float64))).tolist():  # painting order
            x0, y0, x1, y1 = extents[j]
            out[y0:y1, x0:x1][np.asarray(masks[j], bool)] = indices[j] + 1
    if len(crowd_extents):
        # Integer extents are their own touched pixels, so the union of the rectangles is exact.
        crowd_area = box_union_mask(np.asarray(crowd_extents).reshape(-1, 4), height, width, PIXELS_TOUCHED)
        ignore = crowd_area & ~box_union_mask(np.asarray(extents).reshape(-1, 4), height, width, PIXELS_TOUCHED)
        out[ignore] = IGNORE_INDEX
    return out


def compute_instance_map(image, record, settings):
    """GrabCut every normal box of ``record`` on ``image`` (BGR uint8) and paint the instance map.

    Returns ``(instance_map (H, W) uint16, stats)``; ``stats["boxes"]`` lists ``[category_id, kind, fill]`` per
    annotation (kind 0 GrabCut, 1 ellipse fallback, 2 crowd; fill = foreground pixels / box pixels before
    painting, 0 for crowd).
    """
    height, width = image.shape[:2]
    boxes, classes, crowd = record_boxes(record)
    if len(boxes) + 1 >= IGNORE_INDEX:
        raise ValueError(f"{record.get('file_name')}: {len(boxes)} annotations do not fit a 16-bit instance map")
    touched, box_area = pixel_extents(boxes, height, width, PIXELS_TOUCHED), box_areas(boxes)
    masks, extents, areas, indices, crowd_extents, per_box = [], [], [], [], [], []
    for i, box in enumerate(boxes):
        if crowd[i]:
            crowd_extents.append(tuple(touched[i].tolist()))
            per_box.append([int(classes[i]), CROWD, 0.0])
            continue
        seed = annotation_seed(settings.seed, record.get("image_id"), i)
        mask, extent, fallback = grabcut_box(image, box, settings, seed)
        box_pixels = max(mask.size, 1)
        masks.append(mask)
        extents.append(extent)
        areas.append(float(box_area[i]))
        indices.append(i)
        per_box.append([int(classes[i]), FALLBACK if fallback else GRABCUT, round(float(mask.sum()) / box_pixels, 5)])
    instance_map = paint_instance_map(height, width, masks, extents, areas, indices, crowd_extents)
    return instance_map, {"boxes": per_box, "overpainted": overpainted(instance_map, masks, extents, indices)}


def overpainted(instance_map, masks, extents, indices):
    """{str(annotation index): [x0, y0, x1, y1, RLE counts]} for each box whose GrabCut mask painting took
    pixels from (by a smaller box), the RLE over its extent (pycocotools, Fortran order)."""
    out = {}
    for mask, (x0, y0, x1, y1), i in zip(masks, extents, indices):
        lost = np.asarray(mask, bool) & (instance_map[y0:y1, x0:x1] != i + 1)
        if lost.any():
            rle = mask_util.encode(np.asfortranarray(lost.astype(np.uint8)))
            out[str(int(i))] = [int(x0), int(y0), int(x1), int(y1), rle["counts"].decode("ascii")]
    return out


def _add_overpainted(own, entry):
    """ORs one ``overpainted`` entry (extent and RLE of the pixels a smaller box took) into ``own``."""
    x0, y0, x1, y1, counts = entry
    lost = mask_util.decode({"size": [y1 - y0, x1 - x0], "counts": counts.encode("ascii")}).astype(bool)
    own[y0:y1, x0:x1] |= lost


def own_grabcut_mask(instance_map, stats, index):
    """(H, W) bool: annotation ``index``'s own GrabCut mask, its pixels of the painted ``instance_map`` plus
    those a smaller box's mask painted over (``stats["overpainted"]``, from the cache PNG: read_png_stats)."""
    own = instance_map == index + 1
    entry = (stats or {}).get("overpainted", {}).get(str(int(index)))
    if entry is not None:
        _add_overpainted(own, entry)
    return own


def own_grabcut_masks(instance_map, stats, count):
    """(count, H, W) bool: every annotation's own GrabCut mask (:func:`own_grabcut_mask` for indices
    0..count-1), overlaps allowed: one comparison for the painted pixels, then only the boxes that lost some."""
    own = instance_map[None] == (np.arange(count) + 1)[:, None, None]
    for key, entry in (stats or {}).get("overpainted", {}).items():
        if int(key) < count:
            _add_overpainted(own[int(key)], entry)
    return own


def compute_own_masks(image, record, settings):
    """(N, H, W) bool: each of ``record``'s N annotations' own GrabCut mask (:func:`own_grabcut_masks`) computed
    on ``image`` (BGR uint8) with ``settings``, the masks ``prepare-grabcut`` would cache: for an image predicted
    without cached labels when inference averages GrabCut in (CHIPS.GRABCUT_WEIGHT)."""
    instance_map, stats = compute_instance_map(image, record, settings)
    return own_grabcut_masks(instance_map, stats, len(record.get("annotations", ())))


def instance_map_to_labels(instance_map, classes, ignore_label):
    """Class map M from an instance map: 0 background, ``classes[k - 1] + 1`` where the map is k, and
    ``ignore_label`` on crowd pixels (65535), on values with no annotation, and for annotations whose class is
    negative (e.g. a box the mapper dropped). One LUT gather, no loop.

    numpy input -> uint8 (``ignore_label`` 255) or uint16; torch input -> uint8 or int64.
    """
    classes_np = np.asarray(classes.cpu() if hasattr(classes, "cpu") else classes, dtype=np.int64).reshape(-1)
    if classes_np.size and classes_np.max() + 1 >= ignore_label:
        raise ValueError(f"class id {int(classes_np.max())} + 1 collides with ignore_label {ignore_label}")
    if len(classes_np) + 1 >= IGNORE_INDEX:
        raise ValueError(f"{len(classes_np)} annotations do not fit a 16-bit instance map")
    dtype = np.uint8 if ignore_label == 255 else np.uint16
    lut = np.full(IGNORE_INDEX + 1, ignore_label, dtype=np.int64)
    lut[0] = 0
    lut[1:len(classes_np) + 1] = np.where(classes_np >= 0, classes_np + 1, ignore_label)
    if isinstance(instance_map, torch.Tensor):
        table = torch.as_tensor(lut, device=instance_map.device)
        out = table[instance_map.long()]
        return out.to(torch.uint8) if ignore_label == 255 else out
    return lut.astype(dtype)[np.asarray(instance_map).astype(np.int64, copy=False)]


# ----------------------------------------------------------------------------------------------------------
# Files


def _png_chunk(kind, data):
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def encode_instance_map(instance_map, stats):
    """16-bit PNG bytes of the map with ``stats`` (JSON) in a ``tEXt`` chunk before ``IEND``."""
    ok, buf = cv2.imencode(".png", np.ascontiguousarray(instance_map, dtype=np.uint16))
    if not ok:
        raise RuntimeError("cv2.imencode failed to encode a GrabCut instance map")
    png = buf.tobytes()
    text = _STATS_KEY + b"\0" + json.dumps(stats, sort_keys=True, separators=(",", ":")).encode("ascii")
    return png[:-12] + _png_chunk(b"tEXt", text) + png[-12:]


def read_png_stats(path):
    """The statistics stored in a cache PNG, or None if the file is unreadable / lacks them."""
    try:
        data = Path(path).read_bytes()
    except OSError:
        return None
    if data[:8] != b"\x89PNG\r\n\x1a\n" or data[-12:-8] != b"\0\0\0\0" or data[-8:-4] != b"IEND":
        return None  # not a complete PNG
    pos = 8
    while pos + 8 <= len(data):
        (length,) = struct.unpack(">I", data[pos:pos + 4])
        kind, body = data[pos + 4:pos + 8], data[pos + 8:pos + 8 + length]
        if kind == b"tEXt" and body.startswith(_STATS_KEY + b"\0"):
            try:
                return json.loads(body[len(_STATS_KEY) + 1:])
            except ValueError:
                return None
        pos += 12 + length
    return None


def grabcut_cache_dir(dataset_name, dataset_dicts, settings):
    """The folder holding ``dataset_name``'s GrabCut maps for these annotations and settings."""
    return cache_root() / "grabcut" / f"{safe_name(dataset_name)}-{settings.key()}-{annotations_hash(dataset_dicts)}"


def grabcut_file_for(folder, record):
    return Path(folder) / f"{safe_name(record['image_id'])}.png"


class GrabCutPaths(Sequence):
    """``grabcut_file_for(folder, record)`` of every record of a lazy record sequence, from a fixed-width
    string array of the file names (about 64 bytes an image, not a ``Path`` object each: 1.7M for Open
    Images), without building the records."""

    def __init__(self, folder, dataset_dicts):
        self.folder = Path(folder)
        width = max((len(safe_name(i)) for i in dataset_dicts.image_ids()), default=1)
        self.names = np.fromiter((safe_name(i) for i in dataset_dicts.image_ids()), dtype=f"U{width}",
                                 count=len(dataset_dicts))

    def __len__(self):
        return len(self.names)

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        return self.folder / f"{self.names[i]}.png"

    def duplicate(self):
        """Two positions whose records share a file name (the same image_id), or None."""
        order = np.argsort(self.names, kind="stable")
        same = np.flatnonzero(self.names[order[1:]] == self.names[order[:-1]])
        return (int(order[same[0]]), int(order[same[0] + 1])) if len(same) else None


def prepare_command(dataset_name, settings):
    flags = settings.cli_flags()
    return f"box2seg prepare-grabcut --dataset {dataset_name}" + (f" {flags}" if flags else "")


def other_settings_caches(dataset_name, dataset_dicts, settings):
    """``[(folder, settings dict or None)]``: cache folders of the same dataset and annotations computed with
    other GrabCut settings (their ``summary.json`` names the settings)."""
    folder = grabcut_cache_dir(dataset_name, dataset_dicts, settings)
    prefix, suffix = f"{safe_name(dataset_name)}-", f"-{annotations_hash(dataset_dicts)}"
    found = []
    for other in sorted(folder.parent.glob(f"{prefix}*{suffix}")):
        key = other.name[len(prefix):len(other.name) - len(suffix)]
        if other == folder or len(key) != 8 or "-" in key or not other.is_dir():
            continue
        try:
            summary = json.loads((other / "summary.json").read_text())
            found.append((other, summary.get("settings")))
        except (OSError, ValueError):
            found.append((other, None))
    return found


def _describe_settings(values):
    return ", ".join(f"{k}={v}" for k, v in values.items()) if values else "unknown (no summary.json)"


def warn_other_settings(dataset_name, dataset_dicts, settings, action="are missing"):
    """Log a warning per cache folder of the same dataset and annotations made with other GrabCut settings
    (issue 13 item 7: training whose GRABCUT settings differ from prepare-grabcut's used to recompute the whole
    cache into a second folder without a word). Returns how many such folders there are."""
    others = other_settings_caches(dataset_name, dataset_dicts, settings)
    for other, values in others:
        logger.warning(
            "GrabCut labels of dataset %r for the current settings (%s) %s, but %s holds labels of the same "
            "annotations computed with other settings (%s): these GRABCUT settings differ from the ones "
            "prepare-grabcut used, so those labels are not used. The command that prepares the cache for the "
            "current settings:\n    %s\n(or set GRABCUT to the other settings to use the existing labels)",
            dataset_name, _describe_settings(asdict(settings)), action, other, _describe_settings(values),
            prepare_command(dataset_name, settings))
    return len(others)


def attach_grabcut_files(dataset_name, dataset_dicts, settings=None):
    """Set ``record["grabcut_file_name"]`` on every record (in place; also returned).

    Raises FileNotFoundError naming the missing images and the exact command that computes them. When labels
    are missing but the same dataset and annotations have a cache computed with other settings (training's
    GrabCut settings differ from prepare-grabcut's), a warning says so, with both settings and the command.
    """
    settings = settings or GrabCutSettings()
    folder = grabcut_cache_dir(dataset_name, dataset_dicts, settings)
    lazy = is_lazy(dataset_dicts)  # records built on access: the field is added as each one is built
    ids = dataset_dicts.image_ids() if lazy else (r["image_id"] for r in dataset_dicts)
    missing = [i for i, image_id in enumerate(ids) if not grabcut_file_for(folder, {"image_id": image_id}).is_file()]
    if missing:
        warn_other_settings(dataset_name, dataset_dicts, settings)
        first = ", ".join(
            f"{dataset_dicts[i]['file_name']} (image_id {dataset_dicts[i].get('image_id')!r})" for i in missing[:3]
        )
        raise FileNotFoundError(
            f"GrabCut labels are missing for {len(missing)} of {len(dataset_dicts)} images of dataset {dataset_name!r} "
            f"(first: {first}) in {folder}. Compute them with:\n    {prepare_command(dataset_name, settings)}\n"
            "(add --coco-dataset NAME=JSON:IMAGE_ROOT or --config-file if the dataset is registered by a flag "
            "or config; a changed annotation file or GrabCut setting needs a new run)"
        )
    if lazy:
        dataset_dicts.add_field("grabcut_file_name", grabcut_file_field, str(folder))
        return dataset_dicts
    for record in dataset_dicts:
        record["grabcut_file_name"] = str(grabcut_file_for(folder, record))
    return dataset_dicts


def grabcut_file_field(record, folder):
    """``record["grabcut_file_name"]`` of a lazy record sequence (``LazyRecords.add_field``)."""
    return str(grabcut_file_for(folder, record))


def load_instance_map(record_or_path):
    """Read an instance map (H, W) uint16 from a record carrying ``grabcut_file_name`` or from a path.

    Given a record, the map's size is checked against its ``height`` / ``width``.
    """
    record = record_or_path if isinstance(record_or_path, dict) else None
    if record is not None:
        if "grabcut_file_name" not in record:
            raise KeyError(f"image {record.get('file_name')} has no 'grabcut_file_name': call "
                           "attach_grabcut_files(dataset_name, dicts, settings) first")
        path = record["grabcut_file_name"]
    else:
        path = record_or_path
    instance_map = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if instance_map is None or instance_map.ndim != 2 or instance_map.dtype != np.uint16:
        raise ValueError(
            f"GrabCut cache file {path} is missing, corrupt or not a 16-bit single-channel PNG; delete it and "
            "run `box2seg prepare-grabcut` again"
        )
    if record is not None and "height" in record and "width" in record:
        if instance_map.shape != (record["height"], record["width"]):
            raise ValueError(
                f"GrabCut cache file {path} is {instance_map.shape[1]}x{instance_map.shape[0]} but image "
                f"{record['file_name']} is {record['width']}x{record['height']}; delete it and run "
                "`box2seg prepare-grabcut --force`"
            )
    return instance_map


def summarize_stats(per_image_stats, class_names=None):
    """Dataset totals and per-class GrabCut filling rates (mean/std over boxes that did not fall back)."""
    rows = [b for s in per_image_stats for b in s["boxes"]]
    arr = np.array(rows, np.float64).reshape(-1, 3)
    cls, kind, fill = arr[:, 0].astype(np.int64), arr[:, 1].astype(np.int64), arr[:, 2]
    per_class = {}
    for c in np.unique(cls[kind != CROWD]).tolist():
        sel = (cls == c) & (kind != CROWD)
        ok = sel & (kind == GRABCUT)
        name = class_names[c] if class_names is not None and 0 <= c < len(class_names) else str(c)
        per_class[name] = {
            "class_id": c,
            "boxes": int(sel.sum()),
            "fallbacks": int((sel & (kind == FALLBACK)).sum()),
            "mean_filling_rate": round(float(fill[ok].mean()), 4) if ok.any() else None,
            "std_filling_rate": round(float(fill[ok].std()), 4) if ok.any() else None,
        }
    grabcut_ok = kind == GRABCUT
    return {
        "images": len(per_image_stats),
        "boxes": int((kind != CROWD).sum()),
        "fallbacks": int((kind == FALLBACK).sum()),
        "crowd_boxes": int((kind == CROWD).sum()),
        "mean_filling_rate": round(float(fill[grabcut_ok].mean()), 4) if grabcut_ok.any() else None,
        "per_class": per_class,
    }
