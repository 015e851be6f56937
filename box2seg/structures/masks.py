"""Instance masks: COCO segmentations <-> bool masks through pycocotools RLE, and masks between a box's
frame and the image.

A "box frame" is an integer pixel extent ``(x0, y0, x1, y1)``, end exclusive, inside the image, as
:func:`box2seg.structures.boxes.pixel_extents` returns it; a mask over it is (y1 - y0, x1 - x0).
"""
import numpy as np
import pycocotools.mask as mask_util
import torch

__all__ = ["encode_rle", "segmentation_to_rle", "decode_segmentation", "crop_to_extent", "paste_in_image"]


def encode_rle(masks):
    """(N, H, W) bool (numpy or torch) -> N compressed COCO RLEs ``{"size": [H, W], "counts": str}``
    (JSON-ready; pycocotools reads them back as they are)."""
    if isinstance(masks, torch.Tensor):
        masks = masks.cpu().numpy()
    masks = np.asarray(masks, dtype=bool)
    if masks.ndim != 3:
        raise ValueError(f"encode_rle: expected (N, H, W) masks, got shape {masks.shape}")
    if len(masks) == 0:
        return []
    rles = mask_util.encode(np.asfortranarray(masks.transpose(1, 2, 0).astype(np.uint8)))
    return [{"size": [int(r["size"][0]), int(r["size"][1])], "counts": r["counts"].decode("ascii")} for r in rles]


def segmentation_to_rle(segmentation, height, width):
    """A compressed RLE of a COCO ``segmentation`` (polygons, uncompressed or compressed RLE) of a
    ``height`` x ``width`` image, or None when nothing usable is left: no polygon with 3 or more points,
    an RLE of another size, an uncompressed RLE whose runs do not add up to the image."""
    if isinstance(segmentation, list):
        polygons = [p for p in segmentation if len(p) >= 6 and len(p) % 2 == 0]
        if not polygons:
            return None
        return mask_util.merge(mask_util.frPyObjects(polygons, height, width))
    if isinstance(segmentation, dict) and "counts" in segmentation and "size" in segmentation:
        if [int(v) for v in segmentation["size"]] != [height, width]:
            return None
        if isinstance(segmentation["counts"], list):
            if sum(segmentation["counts"]) != height * width:
                return None
            return mask_util.frPyObjects(segmentation, height, width)
        counts = segmentation["counts"]
        return {"size": [height, width], "counts": counts.encode() if isinstance(counts, str) else counts}
    return None


def decode_segmentation(segmentation, height, width):
    """(H, W) bool mask of a COCO ``segmentation`` (polygons, uncompressed or compressed RLE); raises
    ValueError when it holds no usable mask of that size (see :func:`segmentation_to_rle`)."""
    rle = segmentation_to_rle(segmentation, height, width)
    if rle is None:
        size = segmentation.get("size") if isinstance(segmentation, dict) else None
        raise ValueError(
            f"segmentation holds no usable {width}x{height} mask (degenerate polygons, an RLE of size "
            f"{size}, or malformed): {str(segmentation)[:80]}"
        )
    return mask_util.decode(rle).astype(bool)


def crop_to_extent(mask, extent):
    """The part of an image-frame mask ((..., H, W), numpy or torch) inside ``extent``: a view."""
    x0, y0, x1, y1 = (int(v) for v in extent)
    return mask[..., y0:y1, x0:x1]


def paste_in_image(mask, extent, height, width):
    """(H, W) bool image-frame mask holding a box-frame ``mask`` (y1 - y0, x1 - x0) at ``extent``, False
    elsewhere; numpy or torch (same device) like ``mask``."""
    x0, y0, x1, y1 = (int(v) for v in extent)
    if tuple(mask.shape) != (y1 - y0, x1 - x0) or not (0 <= x0 <= x1 <= width and 0 <= y0 <= y1 <= height):
        raise ValueError(f"paste_in_image: a {tuple(mask.shape)} mask does not fit extent {(x0, y0, x1, y1)} "
                         f"of a {width}x{height} image")
    if isinstance(mask, torch.Tensor):
        out = torch.zeros((height, width), dtype=torch.bool, device=mask.device)
    else:
        out = np.zeros((height, width), bool)
    out[y0:y1, x0:x1] = mask
    return out
