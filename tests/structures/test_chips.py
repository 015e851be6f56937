"""Chip geometry: regions at the normalised scale, crop and paste as inverses, boxes cut by the chip edge,
boxes at the image border and of 1-2 px, flips, label maps outside the image."""
import numpy as np
import pytest
import torch

from box2seg.structures import (PIXEL_CENTRES, box_pixel_masks, boxes_in_chip, boxes_in_own_chips, chip_regions,
                                crop_chips, crop_own_chips, ellipse_prior, flip_boxes_horizontally, paste_chip_probs,
                                sample_label_chip)

SIZE, CONTEXT = 128, 0.25


def test_regions_are_squares_with_the_longer_side_at_the_normalised_size():
    boxes = np.array([[10.0, 20.0, 50.0, 30.0], [0.0, 0.0, 4.0, 200.0]])
    r = chip_regions(boxes, CONTEXT)
    side = r[:, 2] - r[:, 0]
    np.testing.assert_allclose(side, r[:, 3] - r[:, 1])
    np.testing.assert_allclose(side, [40 * 1.5, 200 * 1.5])
    np.testing.assert_allclose((r[:, :2] + r[:, 2:]) / 2, (boxes[:, :2] + boxes[:, 2:]) / 2)
    chip_box, _, cut = boxes_in_chip(boxes[:1], r[0], SIZE)
    assert chip_box[0, 2] - chip_box[0, 0] == pytest.approx(SIZE / (1 + 2 * CONTEXT))
    assert not cut.any()


def test_jitter_keeps_the_box_inside_its_chip():
    boxes = np.tile([[30.0, 40.0, 90.0, 70.0]], (500, 1))
    r = chip_regions(boxes, CONTEXT, scale_jitter=0.15, shift_jitter=0.5, rng=np.random.default_rng(0))
    assert (r[:, 0] <= 30 + 1e-9).all() and (r[:, 2] >= 90 - 1e-9).all()  # shift capped: box stays in
    assert (r[:, 1] <= 40 + 1e-9).all() and (r[:, 3] >= 70 - 1e-9).all()
    side = r[:, 2] - r[:, 0]
    assert side.min() < 90 * 0.95 and side.max() > 90 * 1.05


def test_crop_samples_the_image_at_chip_pixel_centres():
    h, w = 40, 60
    xs = torch.arange(w, dtype=torch.float32).expand(h, w)
    image = torch.stack([xs, xs, xs])
    region = torch.tensor([[10.0, 5.0, 26.0, 21.0]])  # 16 px -> 32 chip px: step 0.5
    chip = crop_chips(image, region, 32)[0, 0]
    centres = 10 + (torch.arange(32) + 0.5) * 0.5
    torch.testing.assert_close(chip[0], centres - 0.5, atol=1e-4, rtol=0)  # bilinear of f(i) = i at x - 0.5


def test_crop_then_paste_returns_the_box_region():
    """Round trip: the box's pixels in its chip, pasted back, are the box's pixels in the image."""
    h, w = 120, 160
    boxes = torch.tensor([[20.0, 30.0, 100.0, 90.0], [130.0, 0.0, 160.0, 50.0], [5.0, 100.0, 7.0, 101.5]])
    regions = chip_regions(boxes, CONTEXT)
    masks = []
    for box, region in zip(boxes.numpy(), regions.numpy()):
        chip_box, _, _ = boxes_in_chip(box[None], region, SIZE)
        masks.append(box_pixel_masks(torch.as_tensor(chip_box), SIZE, SIZE, PIXEL_CENTRES)[0])
    pasted = paste_chip_probs(torch.stack(masks).float(), regions, h, w) >= 128
    expected = box_pixel_masks(boxes, h, w, PIXEL_CENTRES)
    assert torch.equal(pasted[:2], expected[:2])  # boxes inside and at the image border, exactly
    assert pasted[2].any() and (pasted[2] <= box_pixel_masks(boxes[2:] + torch.tensor([-1, -1, 1, 1]), h, w,
                                                             PIXEL_CENTRES)[0]).all()  # a 2 px box: within a pixel


def test_crop_own_chips_cuts_each_map_to_its_own_region_as_crop_chips_cuts_an_image():
    """Map i through region i only: the same samples as crop_chips of that map, and a pasted chip comes back."""
    h, w = 60, 80
    boxes = torch.tensor([[10.0, 12.0, 30.0, 40.0], [40.0, 5.0, 70.0, 25.0]])
    regions = torch.as_tensor(chip_regions(boxes.numpy(), CONTEXT), dtype=torch.float32)
    maps = torch.rand((2, h, w))
    own = crop_own_chips(maps, regions, 32)
    assert own.shape == (2, 32, 32)
    for i in range(2):
        assert torch.allclose(own[i], crop_chips(maps[i][None], regions[i:i + 1], 32)[0, 0])
    ramp = (torch.arange(32, dtype=torch.float32) + 0.5) / 32
    chips = torch.stack([ramp[None, :].expand(32, 32), ramp[:, None].expand(32, 32)])  # smooth: resampling keeps it
    pasted = paste_chip_probs(chips, regions, h, w).float() / 255.0
    again = crop_own_chips(pasted, regions, 32)
    inner = (slice(None), slice(8, -8), slice(8, -8))  # away from the region edges and the image border
    assert (again[inner] - chips[inner]).abs().max() < 0.03  # bilinear twice and uint8: close, not equal


def test_boxes_cut_by_the_chip_edge_are_clipped_and_flagged():
    boxes = np.array([[40.0, 40.0, 60.0, 60.0], [55.0, 45.0, 200.0, 50.0], [300.0, 300.0, 310.0, 310.0]])
    region = chip_regions(boxes[:1], CONTEXT)[0]
    chip_boxes, index, cut = boxes_in_chip(boxes, region, SIZE)
    assert index.tolist() == [0, 1]  # the far box is not in the chip
    assert cut.tolist() == [False, True]
    assert chip_boxes[1, 2] == SIZE


def test_one_pixel_boxes_get_a_chip():
    boxes = np.array([[10.0, 10.0, 11.0, 11.0], [3.0, 3.0, 3.0, 3.0]])  # 1 px and a degenerate box
    r = chip_regions(boxes, CONTEXT)
    assert ((r[:, 2] - r[:, 0]) == 1.5).all()
    chip_boxes, index, _ = boxes_in_chip(boxes[:1], r[0], SIZE)
    assert index.tolist() == [0] and chip_boxes[0, 2] - chip_boxes[0, 0] == pytest.approx(SIZE / 1.5)


def test_label_chip_is_nearest_and_fill_outside_the_image():
    labels = np.arange(20, dtype=np.uint8).reshape(4, 5)
    chip = sample_label_chip(labels, np.array([-1.0, 0.0, 3.0, 4.0]), 4, 255)
    assert chip[:, 0].tolist() == [255] * 4
    assert chip[:, 1:].tolist() == labels[:, :3].tolist()


def test_flip_mirrors_boxes():
    assert flip_boxes_horizontally([[10, 0, 30, 5]], 128).tolist() == [[98, 0, 118, 5]]


def test_ellipse_prior_is_one_at_the_centre_and_zero_on_the_ellipse():
    boxes = torch.tensor([[10.0, 20.0, 50.0, 40.0]])
    regions = chip_regions(boxes, CONTEXT)
    own = boxes_in_own_chips(boxes, regions, SIZE)
    assert torch.allclose(own[0, 2] - own[0, 0], torch.tensor(SIZE / 1.5))
    prior = ellipse_prior(own, SIZE)[0]
    cx, cy = ((own[0, 0] + own[0, 2]) / 2).item(), ((own[0, 1] + own[0, 3]) / 2).item()
    assert prior[int(cy), int(cx)] > 0.99
    assert 0 < prior[int(cy), int(own[0, 2].item()) - 1] < 0.1  # the last pixel centre inside the right end
    assert prior[0, 0] == -1


def test_box_coordinates_are_minus_one_and_one_on_the_box_sides():
    from box2seg.structures import box_coordinates

    coords = box_coordinates(torch.tensor([[32.0, 48.0, 96.0, 80.0]]), 128, 128, 128)
    assert coords.shape == (1, 2, 128, 128)
    u, v = coords[0]
    assert u[0, 64].item() == pytest.approx(0.5 / 32) and v[64, 0].item() == pytest.approx(0.5 / 16)
    assert u[0, 95].item() == pytest.approx(1 - 0.5 / 32) and u[0, 32].item() == pytest.approx(-1 + 0.5 / 32)
    assert v.min() == -2 and v.max() == 2 and u.min() > -2  # clipped far from the box only
    coarse = box_coordinates(torch.tensor([[32.0, 48.0, 96.0, 80.0]]), 4, 4, 128)  # a stride-32 map
    assert coarse[0, 0, 0].tolist() == pytest.approx([-1.5, -0.5, 0.5, 1.5])
