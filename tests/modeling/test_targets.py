"""Box masks B, sure background and filling rates against a plain-Python pixel loop, the pixel-centre
rule, present-class compaction with L = 601 (no L x H x W tensor), batching/padding and error messages."""
import math

import box2seg  # noqa: F401  (compat fixes before any detectron2 import)
import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from box2seg.modeling.targets import build_targets, unlabelled_classes

IGNORE = 255


class MaxNumel(TorchDispatchMode):
    """Records the largest tensor any op produces."""

    def __init__(self):
        super().__init__()
        self.max_numel = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in tree_flatten(out)[0]:
            if isinstance(t, torch.Tensor):
                self.max_numel = max(self.max_numel, t.numel())
        return out


# ---------------------------------------------------------------------------------------------------
# Plain-Python reference
# ---------------------------------------------------------------------------------------------------
def _inside(box, x, y):
    x0, y0, x1, y1 = [float(v) for v in box]
    return x0 <= x + 0.5 <= x1 and y0 <= y + 0.5 <= y1


def reference(boxes, classes, crowd, labels, ignore):
    h, w = labels.shape
    present = sorted({int(c) for c, cr in zip(classes, crowd) if not cr})
    masks, area, eta = [], [], []
    for c in present:
        m = [[False] * w for _ in range(h)]
        a = n_m = 0
        for y in range(h):
            for x in range(w):
                if int(labels[y, x]) == ignore:
                    continue
                if any(_inside(b, x, y) for b, k, cr in zip(boxes, classes, crowd) if int(k) == c and not cr):
                    m[y][x] = True
                    a += 1
                if int(labels[y, x]) == c + 1:
                    n_m += 1
        masks.append(m)
        area.append(a)
        eta.append(n_m / a if a > 0 else 0.0)
    bg = [
        [int(labels[y, x]) != ignore and not any(_inside(b, x, y) for b in boxes) for x in range(w)]
        for y in range(h)
    ]
    return present, torch.tensor(masks, dtype=torch.bool).reshape(len(present), h, w), area, eta, torch.tensor(bg)


def random_sample(gen, h, w, num_classes, n_boxes):
    x0 = torch.rand(n_boxes, generator=gen) * (w + 4) - 3
    y0 = torch.rand(n_boxes, generator=gen) * (h + 4) - 3
    bw = torch.rand(n_boxes, generator=gen) * w * 0.7
    bh = torch.rand(n_boxes, generator=gen) * h * 0.7
    boxes = torch.stack([x0, y0, x0 + bw, y0 + bh], 1)
    # snap some coordinates onto pixel centres and edges (the inclusive-boundary cases)
    snap = torch.rand(n_boxes, 4, generator=gen) < 0.3
    boxes = torch.where(snap, (boxes * 2).round() / 2, boxes)
    classes = torch.randint(0, num_classes, (n_boxes,), generator=gen)
    crowd = torch.rand(n_boxes, generator=gen) < 0.2
    labels = torch.randint(0, num_classes + 1, (h, w), generator=gen)
    labels[torch.rand(h, w, generator=gen) < 0.15] = IGNORE
    return boxes, classes, crowd, labels


@pytest.mark.parametrize("seed", range(4))
def test_matches_python_loop(seed):
    gen = torch.Generator().manual_seed(seed)
    h, w, num_classes = 11 + seed, 14 - seed, 5
    boxes, classes, crowd, labels = random_sample(gen, h, w, num_classes, n_boxes=6 + seed)
    present, ref_masks, ref_area, ref_eta, ref_bg = reference(boxes, classes, crowd, labels, IGNORE)

    (t,) = build_targets([boxes], [classes], [crowd], labels[None], num_classes, IGNORE)
    assert t.classes.tolist() == present
    assert torch.equal(t.box_masks, ref_masks)
    assert t.box_area.tolist() == ref_area
    assert torch.allclose(t.filling_rates, torch.tensor(ref_eta, dtype=torch.float32))
    assert torch.equal(t.sure_background, ref_bg)
    assert torch.equal(t.valid, labels != IGNORE)


def test_pixel_centre_rule_and_degenerate_boxes():
    labels = torch.zeros(1, 6, 6, dtype=torch.long)
    boxes = torch.tensor(
        [
            [0.5, 0.5, 1.5, 1.5],  # centres 0.5 and 1.5 lie on the edges: 2 x 2 pixels
            [2.6, 2.6, 3.4, 3.4],  # no pixel centre inside: zero area
            [4.0, 4.0, 4.0, 4.0],  # degenerate
            [-10.0, -10.0, -5.0, -5.0],  # outside the image
        ]
    )
    (t,) = build_targets([boxes], [torch.tensor([0, 1, 2, 3])], None, labels, 4, IGNORE)
    assert t.classes.tolist() == [0, 1, 2, 3]
    assert t.box_area.tolist() == [4, 0, 0, 0]
    assert t.box_masks[0, :2, :2].all() and t.box_masks[0].sum() == 4
    assert torch.isfinite(t.filling_rates).all() and t.filling_rates.tolist() == [0.0, 0.0, 0.0, 0.0]
    assert int(t.sure_background.sum()) == 36 - 4


def test_crowd_boxes_count_for_background_only():
    labels = torch.zeros(1, 8, 8, dtype=torch.long)
    labels[0, 4:, 4:] = IGNORE  # crowd region
    boxes = torch.tensor([[0.0, 0.0, 3.0, 3.0], [4.0, 4.0, 8.0, 8.0], [2.0, 2.0, 6.0, 6.0]])
    classes = torch.tensor([1, 2, 2])
    crowd = torch.tensor([False, True, True])
    (t,) = build_targets([boxes], [classes], [crowd], labels, 3, IGNORE)
    assert t.classes.tolist() == [1]  # class 2 only has crowd boxes
    bg = torch.ones(8, 8, dtype=torch.bool)
    bg[:3, :3] = False
    bg[2:6, 2:6] = False
    bg[4:, 4:] = False
    assert torch.equal(t.sure_background, bg)
    assert torch.equal(t.inside_boxes, ~bg & (labels[0] != IGNORE))


def test_box_on_ignore_pixels_has_zero_area():
    labels = torch.zeros(1, 10, 10, dtype=torch.long)
    labels[0, :5] = IGNORE
    labels[0, 6:9, 0:4] = 1  # GrabCut fills the class-0 box completely
    boxes = torch.tensor([[1.0, 0.0, 6.0, 4.0], [0.0, 6.0, 4.0, 9.0]])
    (t,) = build_targets([boxes], [torch.tensor([3, 0])], None, labels, 4, IGNORE)
    assert t.classes.tolist() == [0, 3]
    assert t.box_area.tolist() == [12, 0]
    assert t.filling_rates.tolist() == [1.0, 0.0]


def test_batch_padding_and_list_input_match_single_images():
    gen = torch.Generator().manual_seed(7)
    samples = [random_sample(gen, h, w, 6, n) for h, w, n in [(9, 12, 5), (13, 7, 0), (10, 10, 8)]]
    singles = [build_targets([b], [c], [cr], m[None], 6, IGNORE)[0] for b, c, cr, m in samples]
    batch = build_targets(
        [s[0] for s in samples], [s[1] for s in samples], [s[2] for s in samples], [s[3] for s in samples], 6, IGNORE
    )
    assert len(batch) == 3
    for one, many in zip(singles, batch):
        for field in ("classes", "box_masks", "box_area", "filling_rates", "sure_background", "valid", "labels"):
            assert torch.equal(getattr(one, field), getattr(many, field)), field
    assert batch[1].box_masks.shape == (0, 13, 7)

    # a padded (Bsz, H, W) tensor keeps the padded size; padding is ignore and changes no area or rate
    padded = torch.full((3, 13, 12), IGNORE, dtype=torch.long)
    for b, s in enumerate(samples):
        padded[b, : s[3].shape[0], : s[3].shape[1]] = s[3]
    pb = build_targets([s[0] for s in samples], [s[1] for s in samples], [s[2] for s in samples], padded, 6, IGNORE)
    for one, p in zip(singles, pb):
        h, w = one.valid.shape
        assert p.valid.shape == (13, 12)
        assert torch.equal(p.box_masks[:, :h, :w], one.box_masks) and not p.box_masks[:, h:].any()
        assert torch.equal(p.box_area, one.box_area) and torch.equal(p.filling_rates, one.filling_rates)
        assert int(p.sure_background.sum()) == int(one.sure_background.sum())


def test_601_classes_are_compacted():
    num_classes, h, w = 601, 40, 48
    boxes = torch.tensor([[0.0, 0.0, 20.0, 20.0], [10.0, 5.0, 40.0, 30.0], [30.0, 30.0, 48.0, 40.0], [1.0, 1.0, 5.0, 5.0]])
    classes = torch.tensor([600, 0, 299, 17])
    crowd = torch.tensor([0, 0, 0, 1])
    labels = torch.zeros(1, h, w, dtype=torch.long)
    labels[0, 2:18, 2:18] = 601
    labels[0, 32:38, 31:47] = 300
    labels[0, 0, 0] = 65535
    with MaxNumel() as rec:
        (t,) = build_targets([boxes], [classes], [crowd], labels, num_classes, 65535)
    assert t.classes.tolist() == [0, 299, 600]
    assert t.box_masks.shape == (3, h, w)
    assert t.filling_rates[2].item() == pytest.approx(16 * 16 / (20 * 20 - 1))
    assert t.filling_rates[1].item() == pytest.approx(6 * 16 / (10 * 18))
    assert t.filling_rates[0].item() == 0.0
    # nothing close to L x H x W: at most a few (K + 1) x (H + 1) x (W + 1) arrays
    assert rec.max_numel <= 4 * (h + 1) * (w + 1) < num_classes * h * w


def test_unlabelled_classes():
    u = unlabelled_classes(8, verified_classes=[1, 5], box_classes=torch.tensor([2, 2, 7]))
    assert u.tolist() == [0, 3, 4, 6]
    with pytest.raises(ValueError, match="verified_classes"):
        unlabelled_classes(8, verified_classes=[8])
    labels = torch.zeros(2, 4, 4, dtype=torch.long)
    ts = build_targets([torch.zeros(0, 4)] * 2, [torch.zeros(0, dtype=torch.long)] * 2, None, labels, 8, IGNORE,
                       unlabelled=[None, u])
    assert ts[0].unlabelled is None and ts[1].unlabelled.tolist() == [0, 3, 4, 6]


def test_errors_name_the_image_and_box():
    labels = torch.zeros(2, 5, 5, dtype=torch.long)
    ok = torch.tensor([[0.0, 0.0, 2.0, 2.0]])
    with pytest.raises(ValueError, match=r"image 1 box 1 has class 9"):
        build_targets([ok, ok.repeat(2, 1)], [torch.tensor([0]), torch.tensor([0, 9])], None, labels, 4, IGNORE)
    with pytest.raises(ValueError, match=r"image 0 box 0 has a non-finite"):
        build_targets([torch.tensor([[0.0, math.nan, 2.0, 2.0]]), ok], [torch.tensor([0])] * 2, None, labels, 4, IGNORE)
    bad = labels.clone()
    bad[1, 2, 2] = 7
    with pytest.raises(ValueError, match=r"grabcut_labels of image 1 hold 7"):
        build_targets([ok, ok], [torch.tensor([0])] * 2, None, bad, 4, IGNORE)
    with pytest.raises(ValueError, match=r"image 0 has boxes of shape \(1, 4\) \(expected \(N, 4\)\), 2 classes"):
        build_targets([ok], [torch.tensor([0, 1])], None, labels[:1], 4, IGNORE)
