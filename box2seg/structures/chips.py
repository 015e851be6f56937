"""Box-centred chips: the square image region a box is seen through in chip mode, and the maps between
that region and a ``size`` x ``size`` chip.

A box's chip region is a square centred on the box whose side is the box's longer side times
``1 + 2 * context`` (context on each side), so every box, whatever its size in the image, appears in its
chip with its longer side at ``size / (1 + 2 * context)`` pixels: SNIPER-style normalised scale. Training
jitters the region's scale (log-uniform) and centre; inference uses the plain region.

Chip pixel (u, v) has its centre at image point ``(x0 + (u + 0.5) * s, y0 + (v + 0.5) * s)``, s = side / size,
the convention of torchvision's ``roi_align(aligned=True)`` (used to crop images) and detectron2's
``paste_masks_in_image`` (used to paste chip masks back), so crop and paste are exact inverses of each
other. Label maps are sampled at the same centres with nearest-neighbour lookup.
"""
import numpy as np
import torch
from detectron2.layers import paste_masks_in_image
from torchvision.ops import roi_align

__all__ = ["chip_regions", "boxes_in_chip", "crop_chips", "crop_own_chips", "paste_chip_probs", "sample_label_chip",
           "flip_boxes_horizontally", "boxes_in_own_chips", "ellipse_prior", "box_coordinates"]


def chip_regions(boxes, context, scale_jitter=0.0, shift_jitter=0.0, rng=None):
    """(N, 4) XYXY square regions, one per box (numpy in, numpy out; a tensor in gives a tensor).

    Args:
        boxes: (N, 4) XYXY_ABS boxes; degenerate boxes get a region of side ``1 + 2 * context`` px.
        context: margin on each side as a fraction of the box's longer side.
        scale_jitter: the side is multiplied by ``exp(U(-j, j))`` (training only).
        shift_jitter: the centre moves by ``U(-j, j)`` times the longer side in x and y, at most as far as
            keeps the box inside its chip (the jittered side is never below the box's longer side).
        rng: ``numpy.random.Generator`` / ``RandomState`` for the jitter (default: numpy's global state,
            which detectron2 seeds per data-loader worker).
    """
    as_tensor = isinstance(boxes, torch.Tensor)
    b = (boxes.detach().cpu().double().numpy() if as_tensor else np.asarray(boxes, np.float64)).reshape(-1, 4)
    longer = np.maximum(np.maximum(b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]), 1.0)
    cx, cy = (b[:, 0] + b[:, 2]) / 2, (b[:, 1] + b[:, 3]) / 2
    side = longer * (1 + 2 * context)
    if scale_jitter or shift_jitter:
        rng = np.random if rng is None else rng
        n = len(b)
        if scale_jitter:  # never smaller than the box
            side = np.maximum(side * np.exp(rng.uniform(-scale_jitter, scale_jitter, n)), longer)
        if shift_jitter:  # at most what keeps the box inside the chip
            room_x = (side - np.maximum(b[:, 2] - b[:, 0], 0)) / 2
            room_y = (side - np.maximum(b[:, 3] - b[:, 1], 0)) / 2
            cx = cx + np.clip(rng.uniform(-shift_jitter, shift_jitter, n) * longer, -room_x, room_x)
            cy = cy + np.clip(rng.uniform(-shift_jitter, shift_jitter, n) * longer, -room_y, room_y)
    regions = np.stack([cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2], axis=1)
    return torch.as_tensor(regions, dtype=torch.float32, device=boxes.device) if as_tensor else regions


def boxes_in_chip(boxes, region, size, min_side=1.0):
    """The boxes of an image in the frame of one chip: ``(chip_boxes (M, 4), index (M,), cut (M,))``.

    Boxes are mapped by the region's scale, clipped to the chip and kept when at least ``min_side`` chip
    pixels of them remain in both directions; ``cut`` marks those the chip edge clipped (their in-chip part
    is all the chip knows of them). numpy in and out.
    """
    b = np.asarray(boxes, np.float64).reshape(-1, 4)
    x0, y0, x1, _ = np.asarray(region, np.float64)
    scale = size / (x1 - x0)
    moved = (b - np.array([x0, y0, x0, y0])) * scale
    clipped = moved.clip(0, size)
    keep = ((clipped[:, 2] - clipped[:, 0]) >= min_side) & ((clipped[:, 3] - clipped[:, 1]) >= min_side)
    cut = (np.abs(clipped - moved) > 1e-6).any(1)
    index = np.nonzero(keep)[0]
    return clipped[index], index, cut[index]


def sample_label_chip(label_map, region, size, fill):
    """Nearest-neighbour crop of an (H, W) integer map to a ``size`` x ``size`` chip of ``region``, chip pixel
    centres at the points of the module docstring; pixels outside the image get ``fill``. numpy in and out."""
    h, w = label_map.shape[:2]
    x0, y0, x1, y1 = np.asarray(region, np.float64)
    step = (x1 - x0) / size
    xs = np.floor(x0 + (np.arange(size) + 0.5) * step).astype(np.int64)
    ys = np.floor(y0 + (np.arange(size) + 0.5) * step).astype(np.int64)
    inside = ((ys >= 0) & (ys < h))[:, None] & ((xs >= 0) & (xs < w))[None, :]
    out = label_map[ys.clip(0, h - 1)[:, None], xs.clip(0, w - 1)[None, :]]
    return np.where(inside, out, np.asarray(fill, dtype=label_map.dtype))


def flip_boxes_horizontally(boxes, width):
    """XYXY boxes mirrored in an image (or chip) ``width`` wide. numpy in and out."""
    b = np.asarray(boxes, np.float64).reshape(-1, 4).copy()
    b[:, [0, 2]] = width - b[:, [2, 0]]
    return b


def crop_chips(image, regions, size):
    """(N, C, size, size) float chips of a (C, H, W) image, bilinear at the chip pixel centres (2 x 2 samples
    per chip pixel, so large regions are averaged rather than aliased); outside the image is 0.
    One ``roi_align`` call for all regions: no loop over boxes."""
    regions = torch.as_tensor(regions, dtype=torch.float32, device=image.device).reshape(-1, 4)
    rois = torch.cat([regions.new_zeros(len(regions), 1), regions], dim=1)
    return roi_align(image[None].float(), rois, (size, size), spatial_scale=1.0, sampling_ratio=2, aligned=True)


def crop_own_chips(maps, regions, size):
    """(N, size, size) float: map i of ``maps`` (N, H, W) cut to region i, at the chip pixel centres of
    :func:`crop_chips` (each box's pasted probability back in its own chip's frame). One ``roi_align`` call."""
    regions = torch.as_tensor(regions, dtype=torch.float32, device=maps.device).reshape(-1, 4)
    index = torch.arange(len(regions), dtype=torch.float32, device=maps.device)[:, None]
    rois = torch.cat([index, regions], dim=1)
    return roi_align(maps[:, None].float(), rois, (size, size), spatial_scale=1.0, sampling_ratio=2, aligned=True)[:, 0]


def paste_chip_probs(chip_probs, regions, height, width):
    """(N, height, width) uint8 probabilities x 255: each (size x size) chip map pasted back over its region,
    read at the image pixel centres (detectron2's ``paste_masks_in_image``, the inverse of
    :func:`crop_chips`); 0 outside the region."""
    regions = torch.as_tensor(regions, dtype=torch.float32, device=chip_probs.device).reshape(-1, 4)
    return paste_masks_in_image(chip_probs.float(), regions, (int(height), int(width)), threshold=-1)


def boxes_in_own_chips(boxes, regions, size):
    """(N, 4) each box in the frame of its own chip (``regions[i]`` is box i's region); torch or numpy."""
    scale = size / (regions[:, 2:3] - regions[:, 0:1])
    origin = regions[:, [0, 1, 0, 1]]
    return (boxes - origin) * scale


def ellipse_prior(chip_boxes, size):
    """(N, size, size) map per chip: 1 - r^2 clipped to [-1, 1], r the ellipse radius of the chip's own box
    (r = 1 on the inscribed ellipse), at the chip pixel centres. Chip mode's ellipse-prior offset: the
    model starts from the ellipse baseline and learns where the object departs from it."""
    b = chip_boxes.float().reshape(-1, 4)[:, :, None, None]
    c = torch.arange(size, dtype=torch.float32, device=b.device) + 0.5
    cx, cy = (b[:, 0] + b[:, 2]) / 2, (b[:, 1] + b[:, 3]) / 2
    rx, ry = ((b[:, 2] - b[:, 0]) / 2).clamp(min=0.5), ((b[:, 3] - b[:, 1]) / 2).clamp(min=0.5)
    r2 = ((c[None, None, :] - cx) / rx) ** 2 + ((c[None, :, None] - cy) / ry) ** 2
    return (1 - r2).clamp(-1, 1)


def box_coordinates(chip_boxes, height, width, chip_size, limit=2.0):
    """(N, 2, height, width) box-normalised coordinates of a (height x width) map over each chip: u = (x - cx) /
    (w / 2), v = (y - cy) / (h / 2) of the chip's own box at the cell centres (-1 and 1 on the box's sides),
    clipped to [-limit, limit]. Chip mode's coordinate channels: with them the decoder knows, at every
    feature, where it lies relative to the box it is asked about."""
    b = chip_boxes.float().reshape(-1, 4)[:, :, None, None]
    xs = (torch.arange(width, dtype=torch.float32, device=b.device) + 0.5) * (chip_size / width)
    ys = (torch.arange(height, dtype=torch.float32, device=b.device) + 0.5) * (chip_size / height)
    cx, cy = (b[:, 0] + b[:, 2]) / 2, (b[:, 1] + b[:, 3]) / 2
    rx, ry = ((b[:, 2] - b[:, 0]) / 2).clamp(min=0.5), ((b[:, 3] - b[:, 1]) / 2).clamp(min=0.5)
    u = ((xs[None, None, :] - cx) / rx).expand(-1, height, width)
    v = ((ys[None, :, None] - cy) / ry).expand(-1, height, width)
    return torch.stack([u, v], dim=1).clamp(-limit, limit)
