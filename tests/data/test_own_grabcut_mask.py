"""Each box's own GrabCut mask survives painting: the pixels a smaller box painted over are kept in the cache
PNG's statistics and given back by own_grabcut_mask (chip mode's per-box target)."""
import numpy as np

from box2seg.data.grabcut import (encode_instance_map, overpainted, own_grabcut_mask, own_grabcut_masks,
                                  paint_instance_map, read_png_stats)


def test_own_masks_survive_painting_and_the_png_round_trip(tmp_path):
    big = np.zeros((10, 12), bool)
    big[2:9, 1:11] = True  # annotation 0, extent = the whole image
    small = np.ones((4, 5), bool)  # annotation 1 over (4, 3)-(9, 7): wins the overlap
    extents = [(0, 0, 12, 10), (4, 3, 9, 7)]
    masks = [big, small]
    instance_map = paint_instance_map(10, 12, masks, extents, [120.0, 20.0], [0, 1])
    assert (instance_map[3:7, 4:9] == 2).all()  # the smaller box won its pixels
    stats = {"boxes": [], "overpainted": overpainted(instance_map, masks, extents, [0, 1])}
    assert list(stats["overpainted"]) == ["0"]  # only the big box lost pixels
    path = tmp_path / "map.png"
    path.write_bytes(encode_instance_map(instance_map, stats))
    read = read_png_stats(path)
    assert (own_grabcut_mask(instance_map, read, 0) == big).all()
    full_small = np.zeros((10, 12), bool)
    full_small[3:7, 4:9] = True
    assert (own_grabcut_mask(instance_map, read, 1) == full_small).all()
    # A cache without the field (or without stats) gives the painted region.
    assert (own_grabcut_mask(instance_map, {"boxes": []}, 0) == (instance_map == 1)).all()
    assert (own_grabcut_mask(instance_map, None, 0) == (instance_map == 1)).all()
    # All at once (the baselines' per-box GrabCut masks): the same masks, overlapping where painting decided.
    every = own_grabcut_masks(instance_map, read, 2)
    assert every.shape == (2, 10, 12)
    assert (every[0] == big).all() and (every[1] == full_small).all()
    assert (every[0] & every[1]).sum() == 20
    assert (own_grabcut_masks(instance_map, None, 2)[0] == (instance_map == 1)).all()
