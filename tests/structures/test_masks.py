"""RLE encode/decode round trips through pycocotools (polygons, compressed and uncompressed RLE, str and
bytes counts, unusable segmentations) and crop/paste between a box frame and the image."""
import json

import numpy as np
import pycocotools.mask as mask_util
import pytest
import torch

from box2seg.structures import (
    PIXELS_TOUCHED,
    crop_to_extent,
    decode_segmentation,
    encode_rle,
    paste_in_image,
    pixel_extents,
    segmentation_to_rle,
)


def _masks(n=3, h=11, w=13, seed=0):
    return np.random.default_rng(seed).random((n, h, w)) < 0.4


def test_rle_round_trip():
    masks = _masks()
    rles = encode_rle(masks)
    assert len(rles) == 3 and all(isinstance(r["counts"], str) and r["size"] == [11, 13] for r in rles)
    json.dumps(rles)  # JSON-ready
    for m, r in zip(masks, rles):
        np.testing.assert_array_equal(decode_segmentation(r, 11, 13), m)
        np.testing.assert_array_equal(mask_util.decode(r).astype(bool), m)  # pycocotools reads them as they are
        bytes_rle = {"size": r["size"], "counts": r["counts"].encode()}
        np.testing.assert_array_equal(decode_segmentation(bytes_rle, 11, 13), m)
    assert encode_rle(torch.from_numpy(masks)) == rles
    assert encode_rle(np.zeros((0, 4, 4), bool)) == []


def test_uncompressed_rle_and_polygons():
    mask = np.zeros((4, 5), bool)
    mask[1:3, 2:4] = True
    runs, flat, value, count = [], mask.flatten(order="F"), False, 0  # column-major runs, starting with 0s
    for v in flat:
        if v != value:
            runs.append(count)
            value, count = v, 0
        count += 1
    runs.append(count)
    np.testing.assert_array_equal(decode_segmentation({"size": [4, 5], "counts": runs}, 4, 5), mask)

    square = [[2.0, 1.0, 6.0, 1.0, 6.0, 5.0, 2.0, 5.0]]
    m = decode_segmentation(square, 8, 8)
    assert m.shape == (8, 8) and m[2:5, 3:6].all() and not m[6:].any()
    # a degenerate polygon next to a usable one is dropped; nothing usable raises
    np.testing.assert_array_equal(decode_segmentation(square + [[1.0, 1.0, 2.0, 2.0]], 8, 8), m)
    assert segmentation_to_rle([[1.0, 1.0, 2.0, 2.0]], 8, 8) is None
    with pytest.raises(ValueError, match="no usable 8x8 mask"):
        decode_segmentation([], 8, 8)
    with pytest.raises(ValueError, match=r"size \[4, 5\]"):
        decode_segmentation(encode_rle(mask[None])[0], 8, 8)


def test_crop_paste_round_trip():
    h, w = 12, 15
    image_mask = _masks(1, h, w, seed=3)[0]
    for box in ([2.3, 1.0, 9.7, 7.5], [0.0, 0.0, 15.0, 12.0], [13.2, 10.1, 20.0, 30.0], [4.0, 4.0, 5.0, 5.0]):
        extent = pixel_extents(np.array([box]), h, w, PIXELS_TOUCHED)[0]
        x0, y0, x1, y1 = extent.tolist()
        crop = crop_to_extent(image_mask, extent)
        assert crop.shape == (y1 - y0, x1 - x0)
        pasted = paste_in_image(crop, extent, h, w)
        inside = np.zeros((h, w), bool)
        inside[y0:y1, x0:x1] = True
        np.testing.assert_array_equal(pasted, image_mask & inside)
        np.testing.assert_array_equal(crop_to_extent(pasted, extent), crop)
    t = torch.from_numpy(image_mask)
    pasted = paste_in_image(crop_to_extent(t, (1, 2, 6, 9)), (1, 2, 6, 9), h, w)
    assert isinstance(pasted, torch.Tensor) and torch.equal(pasted[2:9, 1:6], t[2:9, 1:6]) and pasted.sum() == t[2:9, 1:6].sum()
    assert crop_to_extent(np.stack([image_mask] * 2), (1, 2, 6, 9)).shape == (2, 7, 5)
    with pytest.raises(ValueError, match="does not fit"):
        paste_in_image(np.ones((3, 3), bool), (0, 0, 4, 3), h, w)
