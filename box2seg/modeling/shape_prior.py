"""Chip mode's class shape prior: a learnt foreground logit offset per class, in the own box's frame.

A class-agnostic chip head (CHIPS.CLASS_AGNOSTIC) never sees the box's class, yet the class is given with
every box at inference, and objects of one class share a layout inside their boxes (a standing person's head
on top and legs below, a ring's hole in its middle). Where the chip's colours say little (camouflage, colour
shared with the background) the head falls back on the ellipse prior, the same for every class. This module
lets it fall back on its class's average shape instead: for class c a ``size`` x ``size`` logit map
``P_c(u, v)`` over the box-normalised coordinates (u, v) in [-limit, limit] (``structures.box_coordinates``:
-1 and 1 on the box's sides), read bilinearly at each chip pixel and added to the foreground logit. The maps
start at 0 (the head as without it) and learn from the same losses as the head; a class with few boxes
keeps a map near 0.
"""
import torch
import torch.nn.functional as F
from torch import nn

from ..structures import box_coordinates

__all__ = ["ClassShapePrior"]


class ClassShapePrior(nn.Module):
    def __init__(self, num_classes, size, limit=2.0):
        """``num_classes`` foreground classes, each a ``size`` x ``size`` map over [-limit, limit]^2 of the own
        box's normalised coordinates."""
        super().__init__()
        self.limit = float(limit)
        self.maps = nn.Parameter(torch.zeros(int(num_classes), 1, int(size), int(size)))

    def forward(self, chip_boxes, classes, chip_size):
        """(N, chip_size, chip_size) logit offsets: class ``classes[i]``'s map read at the pixels of chip i,
        whose own box is ``chip_boxes[i]`` (chip pixels, XYXY)."""
        uv = box_coordinates(chip_boxes, chip_size, chip_size, chip_size, self.limit)  # (N, 2, S, S)
        grid = (uv / self.limit).permute(0, 2, 3, 1)  # grid_sample's (x, y) in [-1, 1]
        maps = self.maps[classes.long()]
        return F.grid_sample(maps, grid.to(maps.dtype), mode="bilinear", padding_mode="border",
                             align_corners=True)[:, 0]
