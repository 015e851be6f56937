"""One mask per box of an image: the model's box-conditioned mask, or a fallback when it is empty.

A box whose mask comes out empty falls back to its own GrabCut mask (instance map value ``k + 1``), and, if
GrabCut left it nothing either (a smaller box took all its pixels), to the ellipse inscribed in the box;
both fallbacks are counted (:data:`MASK_SOURCES`). Crowd annotations get no mask: they are copied through.
"""
from collections.abc import Sequence

import numpy as np

from ..data.cache import atomic_write_bytes, folder_lock
from ..data.images import ImageReadError, read_image
from ..data.grabcut import (compute_instance_map, ellipse_mask, encode_instance_map, grabcut_cache_dir,
                            grabcut_file_for, load_instance_map, prepare_command)
from ..modeling.box_conditioned import annotation_box_masks
from ..structures import PIXELS_TOUCHED, encode_rle, pixel_extents, record_boxes
from .folder import ExportError

__all__ = ["MASK_SOURCES", "fill_empty_masks", "record_masks", "record_scores", "image_part", "sum_stats", "GrabCutMaps", "WithGrabCutFiles"]

MASK_SOURCES = ("box2seg", "grabcut", "ellipse")


def fill_empty_masks(masks, boxes, crowd, instance_map_fn):
    """Give every non-crowd box a non-empty mask where its own fallbacks allow.

    Args:
        masks: (N, H, W) bool box-conditioned masks (crowd rows are ignored).
        boxes: (N, 4) XYXY in the masks' frame; crowd: (N,) bool.
        instance_map_fn: () -> (H, W) uint16 GrabCut instance map; only called when a mask is empty.
    Returns:
        (masks, sources): masks with empty ones replaced; sources (N,) index into MASK_SOURCES, -1 for crowd.
    """
    masks = np.array(masks, dtype=bool, copy=True)
    crowd = np.asarray(crowd, dtype=bool).reshape(-1)
    n, height, width = masks.shape
    masks[crowd] = False
    sources = np.where(crowd, -1, 0)
    empty = ~crowd & ~masks.reshape(n, height * width).any(1)  # n may be 0: no -1
    if not empty.any():
        return masks, sources
    instance_map = np.asarray(instance_map_fn())
    if instance_map.shape != (height, width):
        raise ValueError(f"GrabCut instance map is {instance_map.shape} but the masks are {(height, width)}")
    idx = np.flatnonzero(empty)
    masks[idx] = instance_map[None] == (idx + 1)[:, None, None].astype(instance_map.dtype)
    sources[idx] = 1
    still = idx[~masks[idx].reshape(len(idx), height * width).any(1)]
    # GrabCut's cv2 ellipse over the box's touched extent; boxes GrabCut left nothing of are rare: a loop is fine
    for k, extent in zip(still, pixel_extents(np.asarray(boxes)[still], height, width, PIXELS_TOUCHED)):
        x0, y0, x1, y1 = (int(v) for v in extent)
        masks[k, y0:y1, x0:x1] = ellipse_mask(y1 - y0, x1 - x0)
        sources[k] = 2
    return masks, sources


def _lines_up(record, inp, out):
    masks = out.get("box_masks")
    return masks is not None and len(masks) == len(record.get("annotations", [])) and not inp.get("num_dropped_boxes", 0)


def record_masks(record, inp, out, rule="class"):
    """The model's box masks when they line up with the record's annotations; otherwise (the test mapper
    dropped a sub-pixel box, or MODEL.BOX2SEG.TEST.BOX_MASKS is off) the same rule on the record's boxes."""
    if _lines_up(record, inp, out):
        return out["box_masks"].to("cpu").numpy()
    return annotation_box_masks(out["sem_seg"], record.get("annotations", []), rule).numpy()


def record_scores(record, inp, out):
    """(N,) confidence of each annotation's mask (chip mode's ``box_scores``: the mask's mean probability), or
    None when the model gives none."""
    scores = out.get("box_scores")
    if scores is None or not _lines_up(record, inp, out):
        return None
    return scores.to("cpu").numpy()


def image_part(record_index, record, box_masks, source, grabcut_maps, scores=None):
    """One image's exported annotations ``[sort key, dict]`` (sorted by source order) and its counts.

    Args:
        box_masks: (N, H, W) bool, one per annotation of ``record`` (:func:`record_masks`).
        source: the :class:`~box2seg.export.source.Source` of the dataset.
        grabcut_maps: record -> GrabCut instance map (:class:`GrabCutMaps`), read only for empty masks.
        scores: None or (N,) mask confidences (:func:`record_scores`), written as each annotation's "score".
    """
    anns = record.get("annotations", [])
    height, width = record["height"], record["width"]
    boxes, _, crowd = record_boxes(record)
    masks = np.asarray(box_masks, dtype=bool).reshape(len(anns), height, width)
    masks, sources = fill_empty_masks(masks, boxes, crowd, lambda: grabcut_maps(record))
    normal = np.flatnonzero(~crowd)
    rles = dict(zip(normal.tolist(), encode_rle(masks[normal])))
    areas = masks.reshape(len(anns), height * width).sum(1)  # an image without annotations: 0 rows
    items = []
    for k in range(len(anns)):
        if crowd[k]:
            items.append(source.annotation(record_index, record, k))
        else:
            items.append(source.annotation(record_index, record, k, rles[k], areas[k], MASK_SOURCES[sources[k]]))
            if scores is not None:
                items[-1][1]["score"] = round(float(scores[k]), 4)
    items.sort(key=lambda item: item[0])
    stats = {"boxes": int(len(normal)), "crowd": int(crowd.sum())}
    stats.update({name: int((sources == i).sum()) for i, name in enumerate(MASK_SOURCES)})
    return [list(item) for item in items], stats


def sum_stats(items):
    """Sum per-image (or per-shard) counts."""
    keys = ("boxes",) + MASK_SOURCES + ("crowd",)
    return {k: int(sum(s[k] for s in items)) for k in keys}


class GrabCutMaps:
    """GrabCut instance maps from the shared cache; a missing image is computed on demand (the same bytes
    ``prepare-grabcut`` writes, under the cache folder's lock, which ``prepare-grabcut`` takes too) when
    GRABCUT.PREPARE_IF_MISSING is set, so a shard job never has to GrabCut the whole dataset for the
    few boxes that need a fallback."""

    def __init__(self, dataset_name, dicts, settings, compute_missing):
        self.dataset_name = dataset_name
        self.settings = settings
        self.compute_missing = compute_missing
        self.folder = grabcut_cache_dir(dataset_name, dicts, settings)
        self.computed = 0

    def __call__(self, record):
        return load_instance_map({**record, "grabcut_file_name": str(self.file(record, "has an empty "
                                                                              "box-conditioned mask"))})

    def file(self, record, why="needs its GrabCut masks (CHIPS.GRABCUT_WEIGHT)"):
        """The cache file of ``record``'s GrabCut labels, computed first where missing and allowed."""
        path = grabcut_file_for(self.folder, record)
        if not path.is_file():
            if not self.compute_missing:
                raise ExportError(
                    f"image {record['file_name']} (image_id {record['image_id']!r}) {why} and has no GrabCut "
                    f"labels in {self.folder}; compute them with:\n    "
                    f"{prepare_command(self.dataset_name, self.settings)}\n(or set "
                    "GRABCUT.PREPARE_IF_MISSING True to compute them on demand)")
            with folder_lock(self.folder):  # prepare-grabcut may be writing this folder
                if not path.is_file():
                    try:
                        image = read_image(record["file_name"], format="BGR")
                    except ImageReadError as e:
                        raise ExportError(f"cannot read image for its GrabCut fallback: {e}") from None
                    instance_map, stats = compute_instance_map(image, record, self.settings)
                    atomic_write_bytes(path, encode_instance_map(instance_map, stats))
                    self.computed += 1
        return path


class WithGrabCutFiles(Sequence):
    """``dicts[i]`` with ``grabcut_file_name`` set for the indices of ``files`` ({i: path}): what an engine's
    mapper reads each box's own GrabCut mask from when inference averages it in. A copy per access, so a lazy
    record sequence is never turned into a list."""

    def __init__(self, dicts, files):
        self.dicts, self.files = dicts, files

    def __len__(self):
        return len(self.dicts)

    def __getitem__(self, i):
        record = self.dicts[i]
        return {**record, "grabcut_file_name": self.files[i]} if i in self.files else record
