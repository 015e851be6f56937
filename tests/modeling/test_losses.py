"""Box2Seg losses: closed forms, plain-Python references, float64 gradcheck, invariance to ignore padding,
no-box / zero-area images, bounded affinity memory at 256^2 and 2048^2, L = 601 and Open Images."""
import math

import box2seg  # noqa: F401  (compat fixes before any detectron2 import)
import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from box2seg.modeling.losses import (
    Box2SegLoss,
    affinity_loss,
    affinity_pretrain_loss,
    background_loss,
    boundary_band,
    filling_rate_loss,
    foreground_loss,
    gather_present,
    grabcut_loss,
    sample_affinity_pixels,
)
from box2seg.modeling.targets import build_targets

IGNORE = 255


def make_targets(boxes, classes, labels, num_classes, crowd=None, unlabelled=None):
    return build_targets([boxes], [classes], None if crowd is None else [crowd], labels[None], num_classes, IGNORE,
                         unlabelled=None if unlabelled is None else [unlabelled])[0]


def random_image(seed, h=9, w=11, num_classes=4, n_boxes=4, dtype=torch.float32):
    gen = torch.Generator().manual_seed(seed)
    x0 = torch.rand(n_boxes, generator=gen) * w * 0.6
    y0 = torch.rand(n_boxes, generator=gen) * h * 0.6
    boxes = torch.stack([x0, y0, x0 + 2 + torch.rand(n_boxes, generator=gen) * w * 0.5,
                         y0 + 2 + torch.rand(n_boxes, generator=gen) * h * 0.5], 1)
    classes = torch.randint(0, num_classes, (n_boxes,), generator=gen)
    labels = torch.randint(0, num_classes + 1, (h, w), generator=gen)
    labels[torch.rand(h, w, generator=gen) < 0.2] = IGNORE
    t = make_targets(boxes, classes, labels, num_classes)
    logits = torch.randn(num_classes + 1, h, w, generator=gen, dtype=dtype) * 2
    alpha = torch.rand(num_classes, h, w, generator=gen, dtype=dtype)
    emb = torch.randn(5, h, w, generator=gen, dtype=dtype)
    return t, logits, alpha, emb


# ---------------------------------------------------------------------------------------------------
# Closed forms
# ---------------------------------------------------------------------------------------------------
def test_closed_forms_uniform_logits_and_alpha_extremes():
    num_classes, h, w = 6, 10, 12
    labels = torch.zeros(h, w, dtype=torch.long)
    labels[1:5, 1:6] = 3
    labels[6:9, 6:11] = 5
    labels[0, :] = IGNORE
    t = make_targets(torch.tensor([[0.0, 0.0, 7.0, 6.0], [5.0, 5.0, 12.0, 10.0]]), torch.tensor([2, 4]), labels,
                     num_classes)
    lp = torch.zeros(num_classes + 1, h, w).log_softmax(0)
    log_l1 = math.log(num_classes + 1)
    assert grabcut_loss(lp, t.labels, t.valid).item() == pytest.approx(log_l1)
    assert background_loss(lp, t.sure_background).item() == pytest.approx(log_l1)
    ones = torch.ones(2, h, w)
    assert foreground_loss(lp, ones, t.box_masks, t.classes).item() == pytest.approx(2 * log_l1)
    for gamma in (0.0, 0.5, 0.8, 1.0):
        assert filling_rate_loss(ones, t.box_masks, t.filling_rates, gamma).item() == 0.0
        expected = gamma * t.filling_rates.sum().item()
        assert filling_rate_loss(torch.zeros(2, h, w), t.box_masks, t.filling_rates, gamma).item() == pytest.approx(expected)
    assert t.filling_rates.tolist() == pytest.approx([4 * 5 / (6 * 7 - 7), 3 * 5 / (5 * 7)])
    # Open Images: every class unlabelled -> the background target is "anything" -> log 1 = 0
    everything = torch.arange(num_classes)
    assert background_loss(lp, t.sure_background, everything).item() == pytest.approx(0.0, abs=1e-6)
    # perfect embeddings: A = [M(i) = M(j)] for one-hot embeddings of M
    onehot = torch.nn.functional.one_hot(torch.where(t.valid, labels, 0), num_classes + 1).permute(2, 0, 1).float()
    idx = sample_affinity_pixels(t.labels, t.valid, t.inside_boxes, num_samples=40,
                                 generator=torch.Generator().manual_seed(0))
    assert affinity_pretrain_loss(onehot, t.labels, idx).item() == pytest.approx(0.0, abs=1e-7)
    # one-hot y equal to the embeddings: A = y_i . y_j -> L_A = 0
    assert affinity_loss(onehot, (onehot * 60).log_softmax(0), idx).item() == pytest.approx(0.0, abs=1e-6)


# ---------------------------------------------------------------------------------------------------
# Plain-Python references
# ---------------------------------------------------------------------------------------------------
def ref_losses(t, lp, alpha_k, emb, idx, gamma, unlabelled=None):
    h, w = t.valid.shape
    pix = [(y, x) for y in range(h) for x in range(w)]
    valid = [p for p in pix if t.valid[p]]
    gc = -sum(lp[int(t.labels[p])][p].item() for p in valid) / max(len(valid), 1)
    fg = fr = 0.0
    for k, c in enumerate(t.classes.tolist()):
        inside = [p for p in pix if t.box_masks[k][p]]
        if not inside:
            continue
        fg -= sum(alpha_k[k][p].item() * lp[c + 1][p].item() for p in inside) / len(inside)
        eta = sum(1 for p in valid if int(t.labels[p]) == c + 1) / len(inside)
        eta_att = sum(alpha_k[k][p].item() for p in inside) / len(inside)
        fr += max(0.0, gamma * eta - eta_att)
    bgpix = [p for p in pix if t.sure_background[p]]
    channels = [0] + ([] if unlabelled is None else [u + 1 for u in unlabelled])
    bg = -sum(math.log(sum(math.exp(lp[c][p].item()) for c in channels)) for p in bgpix) / max(len(bgpix), 1)
    samp = [divmod(int(i), w) for i in idx]
    n = len(samp)

    def cos(p, q):
        a, b = emb[:, p[0], p[1]], emb[:, q[0], q[1]]
        return sum(a[d].item() * b[d].item() for d in range(len(a))) / math.sqrt(
            sum(v.item() ** 2 for v in a) * sum(v.item() ** 2 for v in b))

    aff = pre = 0.0
    for i in range(n):
        for j in range(n):
            if i == j:
                continue
            p, q = samp[i], samp[j]
            yy = sum(math.exp(lp[c][p].item() + lp[c][q].item()) for c in range(lp.shape[0]))
            aff += (cos(p, q) - yy) ** 2
            pre += (cos(p, q) - float(int(t.labels[p]) == int(t.labels[q]))) ** 2
    return {"gc": gc, "fg": fg, "fr": fr, "bg": bg, "aff": aff / (n * (n - 1)), "pre": pre / (n * (n - 1))}


@pytest.mark.parametrize("seed", range(3))
def test_losses_match_python_loops(seed):
    t, logits, alpha, emb = random_image(seed, dtype=torch.float64)
    lp = logits.log_softmax(0)
    alpha_k = alpha.index_select(0, t.classes)
    idx = sample_affinity_pixels(t.labels, t.valid, t.inside_boxes, num_samples=14,
                                 generator=torch.Generator().manual_seed(seed))
    u = [0, 2] if seed % 2 else None
    ref = ref_losses(t, lp, alpha_k, emb, idx, 0.8, u)
    got = {
        "gc": grabcut_loss(lp, t.labels, t.valid),
        "fg": foreground_loss(lp, alpha_k, t.box_masks, t.classes),
        "fr": filling_rate_loss(alpha_k, t.box_masks, t.filling_rates, 0.8),
        "bg": background_loss(lp, t.sure_background, None if u is None else torch.tensor(u)),
        "aff": affinity_loss(emb, lp, idx),
        "pre": affinity_pretrain_loss(emb, t.labels, idx),
    }
    for k, v in got.items():
        assert v.item() == pytest.approx(ref[k], rel=1e-5, abs=1e-6), k
    assert ref["fr"] > 0 or seed != 0  # the hinge is active somewhere: the comparison is not vacuous


# ---------------------------------------------------------------------------------------------------
# Gradients
# ---------------------------------------------------------------------------------------------------
def test_gradcheck_float64():
    t, logits, alpha, emb = random_image(3, h=5, w=6, num_classes=3, n_boxes=2, dtype=torch.float64)
    raw_alpha = torch.logit(alpha.index_select(0, t.classes).clamp(0.05, 0.95))
    idx = sample_affinity_pixels(t.labels, t.valid, t.inside_boxes, num_samples=8,
                                 generator=torch.Generator().manual_seed(1))
    u = torch.tensor([1])

    def total(lg, ra, e):
        lp = lg.log_softmax(0)
        a = ra.sigmoid()
        return (grabcut_loss(lp, t.labels, t.valid) + foreground_loss(lp, a, t.box_masks, t.classes)
                + filling_rate_loss(a, t.box_masks, t.filling_rates, 0.9) + background_loss(lp, t.sure_background)
                + background_loss(lp, t.sure_background, u) + affinity_loss(e, lp, idx)
                + affinity_pretrain_loss(e, t.labels, idx))

    inputs = [x.clone().requires_grad_() for x in (logits, raw_alpha, emb)]
    assert torch.autograd.gradcheck(total, inputs, eps=1e-6, atol=1e-5)


def test_affinity_detach_switch():
    t, logits, _, emb = random_image(4)
    idx = sample_affinity_pixels(t.labels, t.valid, t.inside_boxes, 20, generator=torch.Generator().manual_seed(0))
    grads = {}
    for detach in ("none", "segmentation", "embedding"):
        lg, e = logits.clone().requires_grad_(), emb.clone().requires_grad_()
        loss = affinity_loss(e, lg.log_softmax(0), idx, detach)
        grads[detach] = torch.autograd.grad(loss, [lg, e], allow_unused=True)
    g_lg, g_e = grads["none"]
    assert g_lg.abs().sum() > 0 and g_e.abs().sum() > 0
    # "segmentation" stops the gradient into y only, "embedding" into A only; the other side is unchanged
    assert grads["segmentation"][0] is None and torch.allclose(grads["segmentation"][1], g_e)
    assert grads["embedding"][1] is None and torch.allclose(grads["embedding"][0], g_lg)
    with pytest.raises(ValueError, match="detach"):
        affinity_loss(emb, logits, idx, "both")


def test_low_resolution_embeddings_equal_their_bilinear_upsampling():
    """The model hands the embedding map over at decoder resolution; the loss must read it exactly as the
    bilinear (align_corners=False) upsampling to input resolution, gradients included, borders too."""
    gen = torch.Generator().manual_seed(7)
    labels = torch.randint(0, 4, (36, 44), generator=gen)
    t = make_targets(torch.tensor([[2.0, 3.0, 30.0, 25.0]]), torch.tensor([1]), labels, 3)
    logits = torch.randn(4, 36, 44, generator=gen, dtype=torch.float64)
    idx = torch.cat([torch.tensor([0, 43, 35 * 44, 36 * 44 - 1]),  # the four corners
                     sample_affinity_pixels(t.labels, t.valid, t.inside_boxes, 60, generator=gen)])
    for low in ((9, 11), (36, 44), (5, 7)):
        e = torch.randn(6, *low, generator=gen, dtype=torch.float64, requires_grad=True)
        up = torch.nn.functional.interpolate(e[None], size=(36, 44), mode="bilinear", align_corners=False)[0]
        for fn, args in ((affinity_loss, (logits.log_softmax(0), idx)), (affinity_pretrain_loss, (labels, idx))):
            ref = fn(up, *args)
            got = fn(e, *args)
            assert torch.allclose(got, ref, atol=1e-12), (low, fn.__name__)
            g_ref, = torch.autograd.grad(ref, e)
            g_got, = torch.autograd.grad(got, e)
            assert torch.allclose(g_got, g_ref, atol=1e-12), (low, fn.__name__)


# ---------------------------------------------------------------------------------------------------
# Ignore / padding invariance, no boxes, zero-area classes
# ---------------------------------------------------------------------------------------------------
def test_padding_with_ignore_pixels_changes_no_loss():
    gen = torch.Generator().manual_seed(11)
    t, logits, alpha, emb = random_image(5, h=8, w=10, num_classes=4, n_boxes=3)
    boxes = torch.tensor([[1.0, 0.5, 6.0, 5.0], [3.0, 2.0, 9.5, 7.5], [0.0, 4.0, 4.0, 8.0]])
    classes = torch.tensor([1, 3, 1])
    t = make_targets(boxes, classes, t.labels, 4)
    H, W, py, px = 13, 16, 2, 3  # pad 2 rows above, 3 columns left, the rest below/right
    labels_p = torch.full((H, W), IGNORE, dtype=torch.long)
    labels_p[py:py + 8, px:px + 10] = t.labels
    tp = make_targets(boxes + torch.tensor([px, py, px, py]), classes, labels_p, 4)

    def pad(x):  # garbage (even huge) values in the padding must not matter
        out = torch.randn(x.shape[0], H, W, generator=gen) * 50
        out[:, py:py + 8, px:px + 10] = x
        return out

    lp, lp_p = logits.log_softmax(0), pad(logits).log_softmax(0)
    a_p, e_p = pad(alpha), pad(emb)
    loss = Box2SegLoss(aff_num_samples=1024)  # >= valid pixels: the sample is every valid pixel
    d = loss(lp[None], [t], alpha[None], emb[None])
    d_p = loss(lp_p[None], [tp], a_p[None], e_p[None])
    assert set(d) == {"loss_gc", "loss_fg", "loss_bg", "loss_fr", "loss_aff"}
    for k in d:
        assert d_p[k].item() == pytest.approx(d[k].item(), rel=1e-5, abs=1e-7), k
    assert d["loss_fr"].item() != 0.0 and d["loss_fg"].item() != 0.0
    # the same holds for a sample smaller than the image: sampled pixels are valid and inside the image
    idx = sample_affinity_pixels(tp.labels, tp.valid, tp.inside_boxes, 30, generator=torch.Generator().manual_seed(2))
    assert tp.valid.reshape(-1)[idx].all() and idx.unique().numel() == idx.numel() == 30


def test_image_without_boxes_and_zero_area_class():
    labels = torch.zeros(6, 7, dtype=torch.long)
    labels[:2] = IGNORE
    empty = make_targets(torch.zeros(0, 4), torch.zeros(0, dtype=torch.long), labels, 3)
    # class 0: box entirely on ignore pixels; class 2: degenerate box; class 1: a real box
    boxes = torch.tensor([[0.0, 0.0, 7.0, 2.0], [3.0, 3.0, 3.2, 5.0], [4.0, 3.0, 7.0, 6.0]])
    zero = make_targets(boxes, torch.tensor([0, 2, 1]), labels, 3)
    real = make_targets(boxes[2:], torch.tensor([1]), labels, 3)
    assert zero.classes.tolist() == [0, 1, 2] and zero.box_area.tolist() == [0, 9, 0]
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 4, 6, 7, generator=gen)
    alpha = torch.rand(2, 3, 6, 7, generator=gen)
    emb = torch.randn(2, 8, 6, 7, generator=gen)
    loss = Box2SegLoss(aff_num_samples=16)
    for tt in (empty, zero):
        lg, al, e = (x.clone().requires_grad_() for x in (logits, alpha, emb))
        d = loss(lg.log_softmax(1), [tt, tt], al, e, generator=torch.Generator().manual_seed(0))
        total = sum(d.values())
        total.backward()
        assert all(torch.isfinite(v) for v in d.values()), d
        assert all(torch.isfinite(x.grad).all() for x in (lg, al, e))
        if tt is empty:
            assert d["loss_fg"].item() == 0.0 and d["loss_fr"].item() == 0.0
            assert d["loss_bg"].item() > 0 and d["loss_gc"].item() > 0
            assert al.grad.abs().sum() == 0
    # zero-area classes are skipped: same fg / fr as without them
    lp = logits[0].log_softmax(0)
    for fn in (lambda tt, a: foreground_loss(lp, a, tt.box_masks, tt.classes),
               lambda tt, a: filling_rate_loss(a, tt.box_masks, tt.filling_rates, 0.8)):
        assert fn(zero, alpha[0]).item() == pytest.approx(fn(real, alpha[0, 1:2]).item())
    # a fully ignored image: every term is a finite 0
    allign = make_targets(boxes, torch.tensor([0, 2, 1]), torch.full((6, 7), IGNORE), 3)
    d = loss(logits.log_softmax(1), [allign, allign], alpha, emb)
    assert all(v.item() == 0.0 for v in d.values())


# ---------------------------------------------------------------------------------------------------
# Affinity sampling and memory
# ---------------------------------------------------------------------------------------------------
def ref_band(labels, valid, r):
    h, w = labels.shape
    out = torch.zeros(h, w, dtype=torch.bool)
    for y in range(h):
        for x in range(w):
            vals = {int(labels[yy, xx]) for yy in range(max(0, y - r), min(h, y + r + 1))
                    for xx in range(max(0, x - r), min(w, x + r + 1)) if valid[yy, xx]}
            out[y, x] = len(vals) > 1
    return out


def test_boundary_band_and_sampling():
    gen = torch.Generator().manual_seed(3)
    labels = torch.zeros(30, 34, dtype=torch.long)
    labels[8:20, 10:25] = 2
    labels[22:27, 3:9] = 1
    labels[:, 30:] = IGNORE
    labels[0, 0] = IGNORE
    valid = labels != IGNORE
    for r in (0, 1, 3):
        assert torch.equal(boundary_band(labels, valid, r), ref_band(labels, valid, r)), r
    t = make_targets(torch.tensor([[8.0, 6.0, 27.0, 22.0], [1.0, 20.0, 11.0, 29.0]]), torch.tensor([1, 0]), labels, 2)
    band = (boundary_band(labels, valid, 3) & t.inside_boxes).reshape(-1)
    idx = sample_affinity_pixels(t.labels, t.valid, t.inside_boxes, 100, 0.5, 3, generator=gen)
    assert idx.numel() == 100 and idx.unique().numel() == 100
    assert valid.reshape(-1)[idx].all()
    assert band[idx[:50]].all()  # the boundary half
    # deterministic given the generator, different for another seed
    again = sample_affinity_pixels(t.labels, t.valid, t.inside_boxes, 100, 0.5, 3, torch.Generator().manual_seed(3))
    other = sample_affinity_pixels(t.labels, t.valid, t.inside_boxes, 100, 0.5, 3, torch.Generator().manual_seed(4))
    assert torch.equal(idx, again) and not torch.equal(idx, other)
    # fewer band pixels than asked: all of them, the rest uniform
    few = sample_affinity_pixels(t.labels, t.valid, t.inside_boxes, 600, 0.9, 1, generator=gen)
    nb = int((boundary_band(labels, valid, 1) & t.inside_boxes).sum())
    assert 0 < nb < 540 and few.numel() == 600 and few.unique().numel() == 600
    assert valid.reshape(-1)[few].all()
    # an image with at most num_samples valid pixels gives all of them
    assert torch.equal(sample_affinity_pixels(t.labels, t.valid, t.inside_boxes, 899), valid.reshape(-1).nonzero()[:, 0])
    assert (boundary_band(labels, valid, 1) & t.inside_boxes).reshape(-1)[few[:nb]].all()


class TensorSizes(TorchDispatchMode):
    """Records (numel, op) of every tensor an op produces."""

    def __init__(self):
        super().__init__()
        self.records = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for x in tree_flatten(out)[0]:
            if isinstance(x, torch.Tensor):
                self.records.append((x.numel(), tuple(x.shape), str(func)))
        return out


@pytest.mark.parametrize("size", [256, 2048])
def test_affinity_memory_is_bounded(size):
    n, c, d = 1024, 3, 4
    gen = torch.Generator().manual_seed(0)
    labels = torch.zeros(size, size, dtype=torch.long)
    s = size // 8
    labels[s:4 * s, s:5 * s] = 1
    labels[5 * s:7 * s, 2 * s:7 * s] = 2
    labels[:, -3:] = IGNORE
    valid = labels != IGNORE
    inside = torch.zeros_like(valid)
    inside[s // 2:4 * s + 4, s // 2:5 * s + 4] = True
    inside[5 * s - 4:7 * s + 4, 2 * s - 4:7 * s + 4] = True
    inside &= valid
    logits = torch.randn(c, size, size, generator=gen).requires_grad_()
    emb = torch.randn(d, size, size, generator=gen).requires_grad_()
    lp = logits.log_softmax(0).detach().requires_grad_()  # the meta-arch's input to the loss
    bound = max(n * n, size * size, c * n, d * n)
    with TensorSizes() as rec:
        idx = sample_affinity_pixels(labels, valid, inside, n, generator=torch.Generator().manual_seed(0))
        loss = affinity_loss(emb, lp, idx) + affinity_pretrain_loss(emb, labels, idx)
    forward = rec.records
    assert idx.numel() == n
    assert max(r[0] for r in forward) <= bound, max(forward)
    assert any(r[0] == n * n for r in forward)  # the pair matrices really are N x N
    with TensorSizes() as rec:
        loss.backward()
    input_shapes = {tuple(lp.shape), tuple(emb.shape)}
    assert rec.records, "backward ops were not recorded"
    big = [r for r in rec.records if r[0] > bound and r[1] not in input_shapes]
    assert not big, big  # only the gradients of the inputs themselves are image-sized with channels
    assert torch.isfinite(lp.grad).all() and torch.isfinite(emb.grad).all()


# ---------------------------------------------------------------------------------------------------
# Combination, L = 601, Open Images
# ---------------------------------------------------------------------------------------------------
def test_box2seg_loss_terms_weights_and_batch_mean():
    ts, lps, alphas, embs = [], [], [], []
    for seed in range(3):
        t, logits, alpha, emb = random_image(seed)
        ts.append(t), lps.append(logits.log_softmax(0)), alphas.append(alpha), embs.append(emb)
    lp, alpha, emb = torch.stack(lps), torch.stack(alphas), torch.stack(embs)
    full = Box2SegLoss(aff_num_samples=32)(lp, ts, alpha, emb, torch.Generator().manual_seed(0))
    per_image = [Box2SegLoss(aff_num_samples=32)(lp[b:b + 1], ts[b:b + 1], alpha[b:b + 1], emb[b:b + 1],
                                                  torch.Generator().manual_seed(0)) for b in range(3)]
    for k in ("loss_gc", "loss_fg", "loss_bg", "loss_fr"):
        assert full[k].item() == pytest.approx(sum(p[k].item() for p in per_image) / 3)
    # gathered per-image alpha lists are accepted too
    gathered = gather_present(alpha, ts)
    again = Box2SegLoss(aff_num_samples=32)(list(lp), ts, gathered, list(emb), torch.Generator().manual_seed(0))
    for k in full:
        assert again[k].item() == pytest.approx(full[k].item())
    weighted = Box2SegLoss(terms=["gc", "fr"], w_gc=2.0, w_fr=0.5, gamma=0.8)(lp, ts, alpha)
    assert set(weighted) == {"loss_gc", "loss_fr"}
    assert weighted["loss_gc"].item() == pytest.approx(2 * full["loss_gc"].item())
    assert weighted["loss_fr"].item() == pytest.approx(0.5 * full["loss_fr"].item())
    # alpha / embeddings are only required by the terms that use them
    assert set(Box2SegLoss(terms=["gc", "bg"])(lp, ts)) == {"loss_gc", "loss_bg"}
    with pytest.raises(ValueError, match="need alpha"):
        Box2SegLoss(terms=["fg"])(lp, ts)
    with pytest.raises(ValueError, match="unknown loss terms"):
        Box2SegLoss(terms=["gc", "dice"])
    with pytest.raises(ValueError, match=r"log_probs of image 0 has shape"):
        Box2SegLoss(terms=["gc"])(lp[:, :, :5], ts)
    pre = Box2SegLoss(aff_num_samples=32, w_aff_pre=3.0).pretrain(emb, ts, torch.Generator().manual_seed(0))
    assert set(pre) == {"loss_aff_pre"} and torch.isfinite(pre["loss_aff_pre"])
    # attention terms from their start iteration on; before it alpha is not needed
    late = Box2SegLoss(aff_num_samples=32, attention_start_iter=5)
    early = late(lp, ts, embeddings=emb, generator=torch.Generator().manual_seed(0), iteration=4)
    assert set(early) == {"loss_gc", "loss_bg", "loss_aff"}
    for k in early:
        assert early[k].item() == pytest.approx(full[k].item())
    assert set(late(lp, ts, alpha, emb, torch.Generator().manual_seed(0), iteration=5)) == set(full)
    assert set(late(lp, ts, alpha, emb, torch.Generator().manual_seed(0))) == set(full)  # no iteration: all
    # the branches the model must run follow the active terms
    assert late.branches(4) == ("y", "beta") and late.branches(5) == ("y", "alpha", "beta")
    assert Box2SegLoss(terms=["gc", "bg"]).branches() == ("y",)
    assert Box2SegLoss(terms=["gc", "fr"]).branches(0) == ("y", "alpha")
    with pytest.raises(ValueError, match="attention_start_iter"):
        Box2SegLoss(attention_start_iter=-1)


def test_601_classes_and_open_images_background():
    num_classes, h, w = 601, 24, 28
    labels = torch.zeros(h, w, dtype=torch.long)
    labels[3:10, 4:12] = 600 + 1
    labels[14:20, 15:25] = 42 + 1
    boxes = torch.tensor([[2.0, 2.0, 13.0, 11.0], [14.0, 13.0, 26.0, 21.0]])
    u = torch.arange(100, 601, 7)
    t = make_targets(boxes, torch.tensor([600, 42]), labels, num_classes, unlabelled=u)
    assert t.classes.tolist() == [42, 600]
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(1, num_classes + 1, h, w, generator=gen).requires_grad_()
    alpha = torch.rand(1, num_classes, h, w, generator=gen).requires_grad_()
    emb = torch.randn(1, 6, h, w, generator=gen)
    lp = logits.log_softmax(1)
    d = Box2SegLoss(aff_num_samples=64)(lp, [t], alpha, emb, torch.Generator().manual_seed(0))
    sum(d.values()).backward()
    assert all(torch.isfinite(v) for v in d.values())
    # only the two present attention channels receive gradient
    touched = alpha.grad[0].flatten(1).abs().sum(1).nonzero().squeeze(1).tolist()
    assert touched == [42, 600]
    # Open Images background: log(y_0 + sum_{c in U} y_c), larger probability mass -> smaller loss
    sb = t.sure_background
    expected = -(lp[0].exp()[torch.cat([torch.zeros(1, dtype=torch.long), u + 1])].sum(0).log()[sb]).mean()
    assert d["loss_bg"].item() == pytest.approx(expected.item(), rel=1e-5)
    assert d["loss_bg"].item() < background_loss(lp[0], sb).item()
    assert background_loss(lp[0], sb, torch.zeros(0, dtype=torch.long)).item() == background_loss(lp[0], sb).item()
    with pytest.raises(ValueError, match="unlabelled class ids"):
        background_loss(lp[0], sb, torch.tensor([601]))


def test_ramp_in_and_class_average():
    ts, lps, alphas, embs = [], [], [], []
    for seed in range(2):
        t, logits, alpha, emb = random_image(seed)
        ts.append(t), lps.append(logits.log_softmax(0)), alphas.append(alpha), embs.append(emb)
    lp, alpha, emb = torch.stack(lps), torch.stack(alphas), torch.stack(embs)
    gen = lambda: torch.Generator().manual_seed(0)  # noqa: E731
    full = Box2SegLoss(aff_num_samples=32)(lp, ts, alpha, emb, gen())
    ramped = Box2SegLoss(aff_num_samples=32, ramp_iters=10, attention_start_iter=4, affinity_start_iter=2)
    at = {i: ramped(lp, ts, alpha, emb, gen(), iteration=i) for i in (4, 6, 13, 50)}
    assert at[4]["loss_fg"].item() == pytest.approx(0.1 * full["loss_fg"].item())  # first iteration: 1 / 10
    assert at[6]["loss_fr"].item() == pytest.approx(0.3 * full["loss_fr"].item())
    assert at[6]["loss_aff"].item() == pytest.approx(0.5 * full["loss_aff"].item())  # from iteration 2
    assert at[13]["loss_fg"].item() == pytest.approx(full["loss_fg"].item())
    for k in full:  # the other terms never ramp; no iteration (outside a trainer) means full weight
        assert at[50][k].item() == pytest.approx(full[k].item())
        if k in ("loss_gc", "loss_bg"):
            assert at[4][k].item() == pytest.approx(full[k].item())
    averaged = Box2SegLoss(aff_num_samples=32, class_average=True, terms=["gc", "fg", "fr", "proj"])
    per_image = [averaged(lp[b:b + 1], ts[b:b + 1], alpha[b:b + 1]) for b in range(2)]
    summed = [Box2SegLoss(terms=["gc", "fg", "fr", "proj"])(lp[b:b + 1], ts[b:b + 1], alpha[b:b + 1]) for b in range(2)]
    for b in range(2):
        k = int((ts[b].box_masks.sum((1, 2)) > 0).sum())
        assert k >= 2
        for name in ("loss_fg", "loss_fr", "loss_proj"):
            assert per_image[b][name].item() == pytest.approx(summed[b][name].item() / k)
        assert per_image[b]["loss_gc"].item() == pytest.approx(summed[b]["loss_gc"].item())
