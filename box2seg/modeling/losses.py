"""Box2Seg's losses (method section "Losses"), one function per term plus :class:`Box2SegLoss`.

Every per-image function works at input resolution on one image's tensors:

* ``log_probs``: (C, H, W) float, C = L + 1, the log-softmax of the y-branch (the meta-architecture
  upsamples the logits bilinearly and takes ``log_softmax`` in fp32 first); channel 0 = background,
  channel c + 1 = foreground class c.
* ``alpha``: (K, H, W) float in [0, 1], the attention channels of the K present classes only, gathered
  from the L-channel alpha map in the order of ``targets.classes`` (see :func:`gather_present`).
* ``embeddings``: (D, H, W) float, the beta-branch embedding.
* masks and maps from :class:`box2seg.modeling.targets.ImageTargets`.

Ignore pixels are excluded from every sum (m counts only non-ignore pixels); sums over classes run over the
classes present in the image; a class with zero box area is skipped; an image without boxes gives a finite
background-only loss. Masked reductions use ``torch.where`` (not multiplication by a mask) so that
whatever the network puts on padding never reaches the loss or its gradient, and empty reductions give a
0 that is still attached to the graph (no unused-parameter surprises).

The affinity loss compares all ordered pairs of a pixel *sample* (default 1024 per image: half within
``band_width`` px of a GrabCut class boundary inside boxes, half uniform over non-ignore pixels), so its
memory is bounded by max(N^2, C x N, D x N) plus single (H, W) planes used to draw the sample, whatever
the image size.
"""
from typing import Dict, Iterable, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from torch import nn

from .targets import ImageTargets

__all__ = [
    "grabcut_loss",
    "foreground_loss",
    "filling_rate_loss",
    "background_loss",
    "projection_loss",
    "lab_colours",
    "colour_similarity",
    "pairwise_loss",
    "boundary_band",
    "sample_affinity_pixels",
    "affinity_loss",
    "affinity_pretrain_loss",
    "gather_present",
    "Box2SegLoss",
    "LOSS_TERMS",
    "PAPER_TERMS",
    "ATTENTION_TERMS",
    "AFFINITY_DETACH",
]

LOSS_TERMS = ("gc", "fg", "bg", "fr", "aff", "proj", "pair")  # "proj", "pair": BoxInst's, beyond the paper
PAPER_TERMS = ("gc", "fg", "bg", "fr", "aff")  # the method as written
ATTENTION_TERMS = ("fg", "fr")  # the terms that read the attention branch
AFFINITY_DETACH = ("none", "segmentation", "embedding")


def _masked_sum(x: torch.Tensor, mask: torch.Tensor, dims) -> torch.Tensor:
    return torch.where(mask, x, torch.zeros((), dtype=x.dtype, device=x.device)).sum(dims)


# ----------------------------------------------------------------------------------------------------
# 1-4: pixel losses
# ----------------------------------------------------------------------------------------------------
def grabcut_loss(log_probs: torch.Tensor, labels: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """L_GC = -(1/m) sum_i log y(i, M(i)) over the m non-ignore pixels (0 when m = 0).

    log_probs (C, H, W); labels (H, W) int64 GrabCut map M; valid (H, W) bool."""
    idx = torch.where(valid, labels.long(), 0)
    lp = log_probs.gather(0, idx.unsqueeze(0)).squeeze(0)
    m = valid.sum()
    return -_masked_sum(lp, valid, (0, 1)) / m.clamp(min=1)


def foreground_loss(
    log_probs: torch.Tensor, alpha: torch.Tensor, box_masks: torch.Tensor, classes: torch.Tensor,
    pull_cap: float = 0.0,
) -> torch.Tensor:
    """L_fg = - sum_c (1 / sum_i B(i,c)) sum_i alpha(i,c) B(i,c) log y(i,c), over the K present classes.

    ``pull_cap`` > 0 (beyond the paper; docs/method.md) uses min(-log y, pull_cap): the pull on alpha per box
    pixel is then at most pull_cap / |B|, so with w_fg * pull_cap < w_fr the filling-rate hinge always wins
    and alpha cannot abandon an object the y-branch misses (the paper's form, 0, lets -log y grow without
    bound). Where the cap binds, y gets no gradient from L_fg.
    log_probs (C, H, W); alpha (K, H, W); box_masks (K, H, W) bool; classes (K,) ids 0..L-1."""
    lp = log_probs.index_select(0, classes.long() + 1)
    if pull_cap > 0:
        lp = lp.clamp(min=-pull_cap)
    num = _masked_sum(alpha * lp, box_masks, (1, 2))
    area = box_masks.sum((1, 2))
    per_class = torch.where(area > 0, num / area.clamp(min=1), torch.zeros_like(num))
    return -per_class.sum()


def filling_rate_loss(
    alpha: torch.Tensor, box_masks: torch.Tensor, filling_rates: torch.Tensor, gamma: float = 0.8,
    included: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    """L_fr = sum_c max(0, gamma * eta_c - eta'_c), eta'_c = sum_i alpha(i,c) B(i,c) / sum_i B(i,c).

    Keeps the attention from collapsing to 0 under L_fg. alpha (K, H, W); box_masks (K, H, W) bool;
    filling_rates (K,) eta_c from the targets; ``included`` (K,) bool or None: classes left out of the hinge
    (chip mode: a class with a box the chip edge cuts, whose filling rate in view is not its object's)."""
    area = box_masks.sum((1, 2))
    eta_att = _masked_sum(alpha, box_masks, (1, 2)) / area.clamp(min=1)
    hinge = F.relu(gamma * filling_rates.to(alpha.dtype) - eta_att)
    keep = area > 0 if included is None else (area > 0) & included
    return torch.where(keep, hinge, torch.zeros_like(hinge)).sum()


def projection_loss(
    log_probs: torch.Tensor, box_masks: torch.Tensor, classes: torch.Tensor, valid: torch.Tensor
) -> torch.Tensor:
    """BoxInst's box-projection term (Tian et al., CVPR 2021; beyond the Box2Seg paper): the predicted mask's
    maximum along each row and each column must match the box's, L = sum_c dice(max_x y_c, max_x B_c) +
    dice(max_y y_c, max_y B_c), y_c = y(i, c) over non-ignore pixels. It says "something of class c in every
    row and column the box spans, nothing outside", which a box states exactly, unlike the GrabCut map.
    log_probs (C, H, W); box_masks (K, H, W) bool; classes (K,); valid (H, W) bool."""
    if classes.numel() == 0:
        return log_probs.sum() * 0.0
    probs = torch.where(valid, log_probs.index_select(0, classes.long() + 1).exp(), torch.zeros((), device=valid.device))
    target = box_masks.to(probs.dtype)
    total = 0.0
    for dim in (1, 2):  # max over rows, then over columns
        p, t = probs.amax(dim), target.amax(dim)
        dice = 1 - 2 * (p * t).sum(1) / ((p * p).sum(1) + (t * t).sum(1)).clamp(min=1e-6)
        total = total + dice
    area = box_masks.sum((1, 2))
    return torch.where(area > 0, total, torch.zeros_like(total)).sum()


def lab_colours(rgb: torch.Tensor) -> torch.Tensor:
    """CIE LAB (D65; L in 0..100) of (N, 3, H, W) sRGB values in 0..255, the colour space of BoxInst's
    pairwise similarity (Euclidean distances there roughly follow perceived differences)."""
    c = (rgb.float() / 255.0).clamp(0, 1)
    linear = torch.where(c > 0.04045, ((c + 0.055) / 1.055) ** 2.4, c / 12.92)
    m = linear.new_tensor([[0.412453, 0.357580, 0.180423],
                           [0.212671, 0.715160, 0.072169],
                           [0.019334, 0.119193, 0.950227]])
    white = linear.new_tensor([0.950456, 1.0, 1.088754]).view(1, 3, 1, 1)
    xyz = torch.einsum("ij,njhw->nihw", m, linear) / white
    f = torch.where(xyz > 0.008856, xyz.clamp(min=1e-12) ** (1 / 3), 7.787 * xyz + 16 / 116)
    return torch.stack([116 * f[:, 1] - 16, 500 * (f[:, 0] - f[:, 1]), 200 * (f[:, 1] - f[:, 2])], dim=1)


def _neighbours(x: torch.Tensor, dilation: int) -> torch.Tensor:
    """(N, C, 8, h, w): each cell's 8 neighbours at ``dilation`` (3 x 3 window without its centre; 0 beyond the
    map's edge)."""
    n, c, h, w = x.shape
    cols = F.unfold(x, kernel_size=3, dilation=dilation, padding=dilation).view(n, c, 9, h, w)
    return torch.cat([cols[:, :, :4], cols[:, :, 5:]], dim=2)


def colour_similarity(rgb: torch.Tensor, stride: int = 4, dilation: int = 2) -> torch.Tensor:
    """(N, 8, h, w) BoxInst's colour similarity exp(-|Lab_i - Lab_j| / 2) of each cell of the ``stride``-pooled
    image to its 8 neighbours at ``dilation``; -1 where the neighbour lies beyond the edge (never an edge).
    rgb (N, 3, H, W) in 0..255."""
    pooled = F.avg_pool2d(rgb.float(), stride, ceil_mode=True) if stride > 1 else rgb.float()
    lab = lab_colours(pooled)
    neighbours = _neighbours(lab, dilation)
    sim = torch.exp(-(lab[:, :, None] - neighbours).norm(dim=1) / 2)
    inside = _neighbours(torch.ones_like(lab[:, :1]), dilation)[:, 0] > 0
    return torch.where(inside, sim, torch.full_like(sim, -1.0))


def pairwise_loss(
    log_probs: torch.Tensor, similarity: torch.Tensor, box_masks: torch.Tensor, valid: torch.Tensor,
    threshold: float = 0.3, stride: int = 4, dilation: int = 2,
) -> torch.Tensor:
    """BoxInst's colour-pairwise term (Tian et al., CVPR 2021; beyond the Box2Seg paper): neighbouring cells of
    similar colour should carry the same label, L = mean over edges of -log sum_c y_i(c) y_j(c), over the edges
    from a cell inside a box to a valid neighbour with similarity >= ``threshold``. It draws the mask's edge
    along colour edges where the GrabCut map is unsure. log_probs (C, H, W); similarity (8, h, w) from
    :func:`colour_similarity` with the same ``stride`` and ``dilation``; box_masks (K, H, W); valid (H, W)."""
    probs = torch.where(valid, log_probs.exp(), torch.zeros((), device=valid.device))[None]
    pooled = F.avg_pool2d(probs, stride, ceil_mode=True)[0] if stride > 1 else probs[0]
    ok = valid[None, None].float()
    ok = (-F.max_pool2d(-ok, stride, ceil_mode=True) if stride > 1 else ok)[0]  # cells wholly valid
    inside = box_masks.any(0)[None, None].float()
    inside = (F.max_pool2d(inside, stride, ceil_mode=True) if stride > 1 else inside)[0, 0] > 0
    same = (pooled[:, None] * _neighbours(pooled[None], dilation)[0]).sum(0)  # (8, h, w)
    edges = (similarity >= threshold) & (inside & (ok[0] > 0))[None] & (_neighbours(ok[None], dilation)[0, 0] > 0)
    loss = -torch.log(same.clamp(min=1e-6))
    return _masked_sum(loss, edges, (0, 1, 2)) / edges.sum().clamp(min=1)


def background_loss(
    log_probs: torch.Tensor, sure_background: torch.Tensor, unlabelled: Optional[torch.Tensor] = None
) -> torch.Tensor:
    """L_bg = -(1 / sum_i B(i,0)) sum_i B(i,0) log y(i,0) (0 when no sure-background pixel).

    With non-exhaustive box labels (Open Images) ``unlabelled`` is the set U of class ids 0..L-1 that
    might be present without a box, and log y(i,0) becomes log(y(i,0) + sum_{c in U} y(i,c)) (a logsumexp
    over channels {0} and U + 1): a sure-background pixel is only told "not one of the labelled classes".
    log_probs (C, H, W); sure_background (H, W) bool; unlabelled None or (|U|,) int64."""
    if unlabelled is None or unlabelled.numel() == 0:
        lp0 = log_probs[0]
    else:
        u = unlabelled.to(log_probs.device).long().reshape(-1)
        if int(u.min()) < 0 or int(u.max()) >= log_probs.shape[0] - 1:
            raise ValueError(f"background_loss: unlabelled class ids outside 0..{log_probs.shape[0] - 2}")
        channels = torch.unique(torch.cat([u.new_zeros(1), u + 1]))
        lp0 = torch.logsumexp(log_probs.index_select(0, channels), dim=0)
    n = sure_background.sum()
    return -_masked_sum(lp0, sure_background, (0, 1)) / n.clamp(min=1)


# ----------------------------------------------------------------------------------------------------
# 5: affinity loss on a pixel sample
# ----------------------------------------------------------------------------------------------------
def boundary_band(labels: torch.Tensor, valid: torch.Tensor, width: int = 8) -> torch.Tensor:
    """(H, W) bool: pixels whose (2 width + 1)^2 window holds two different non-ignore labels of M, i.e.
    pixels within ``width`` px (Chebyshev) of a class boundary. Separable max/min pooling on the device;
    ignore pixels and the image border never create a boundary."""
    if width <= 0:
        return torch.zeros_like(valid)
    k = 2 * width + 1
    x = labels.to(torch.float32)[None, None]
    v = valid[None, None]
    inf = torch.tensor(float("inf"), device=x.device)
    hi = torch.where(v, x, -inf)  # max over valid labels
    lo = torch.where(v, -x, -inf)  # -(min over valid labels)

    def pool(t):
        t = F.max_pool2d(t, (1, k), stride=1, padding=(0, width))
        return F.max_pool2d(t, (k, 1), stride=1, padding=(width, 0))

    return (pool(hi) > -pool(lo))[0, 0]


def sample_affinity_pixels(
    labels: torch.Tensor,
    valid: torch.Tensor,
    inside_boxes: torch.Tensor,
    num_samples: int = 1024,
    boundary_fraction: float = 0.5,
    band_width: int = 8,
    generator: Optional[torch.Generator] = None,
) -> torch.Tensor:
    """Flat pixel indices (into H * W) of the affinity sample, without repetition.

    ``round(num_samples * boundary_fraction)`` pixels are drawn uniformly from the boundary band of M
    (:func:`boundary_band`) inside boxes; if the band holds fewer, all of it is taken. The rest is drawn
    uniformly from the other non-ignore pixels. An image with at most ``num_samples`` non-ignore pixels
    returns all of them. Deterministic given ``generator`` (its device draws the random keys, which then
    move to ``labels``' device); None uses the global RNG of ``labels``' device.

    labels (H, W) int GrabCut map; valid, inside_boxes (H, W) bool. Returns (n,) int64, n <= num_samples.
    """
    device = labels.device
    flat_valid = valid.reshape(-1)
    n_valid = int(flat_valid.sum())
    if n_valid <= num_samples:
        return flat_valid.nonzero().squeeze(1)
    gen_device = generator.device if generator is not None else device

    def keys(candidates: torch.Tensor) -> torch.Tensor:
        r = torch.rand(candidates.numel(), generator=generator, device=gen_device).to(device)
        return torch.where(candidates, r, torch.full((), -1.0, device=device))

    band = (boundary_band(labels, valid, band_width) & inside_boxes & valid).reshape(-1)
    n_band = min(int(round(num_samples * boundary_fraction)), int(band.sum()))
    band_idx = keys(band).topk(n_band).indices if n_band > 0 else band.new_zeros(0, dtype=torch.long)
    rest = flat_valid.clone()
    rest[band_idx] = False
    uni_idx = keys(rest).topk(num_samples - n_band).indices
    return torch.cat([band_idx, uni_idx])


def _gather_pixels(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """(C, H, W) -> (C, n) at flat pixel indices, without a (C, H * W) copy of a non-contiguous view."""
    w = x.shape[-1]
    index = index.to(x.device)
    return x[:, index // w, index % w]


def _pairwise_mse(a: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """mean over ordered pairs i != j of (a_ij - t_ij)^2; 0 with fewer than two pixels."""
    n = a.shape[0]
    off = ~torch.eye(n, dtype=torch.bool, device=a.device)
    return _masked_sum((a - t).pow(2), off, (0, 1)) / max(n * (n - 1), 1)


def _sample_pixels(x: torch.Tensor, index: torch.Tensor, size: Tuple[int, int]) -> torch.Tensor:
    """(C, h, w) -> (C, n): the values at flat pixel indices of the (H, W) = ``size`` grid of what
    ``F.interpolate(x, size, mode="bilinear", align_corners=False)`` would give, without building it.

    The embedding map only matters at the ~1k sampled pixels; upsampling all D channels to input
    resolution (and back-propagating through it) cost ~10% of a CPU step. grid_sample at the pixel
    centres with border clamping is the same bilinear rule, so the loss is unchanged."""
    if tuple(x.shape[-2:]) == tuple(size):
        return _gather_pixels(x, index)
    height, width = size
    index = index.to(x.device)
    gx = (2 * (index % width).to(x.dtype) + 1) / width - 1
    gy = (2 * (index // width).to(x.dtype) + 1) / height - 1
    grid = torch.stack([gx, gy], dim=1)[None, None]  # (1, 1, n, 2)
    return F.grid_sample(x[None], grid, mode="bilinear", padding_mode="border", align_corners=False)[0, :, 0]


def _cosine(embeddings: torch.Tensor, index: torch.Tensor, size: Tuple[int, int]) -> torch.Tensor:
    e = F.normalize(_sample_pixels(embeddings, index, size), dim=0, eps=1e-12)
    return e.t() @ e


def affinity_loss(
    embeddings: torch.Tensor, log_probs: torch.Tensor, index: torch.Tensor, detach: str = "none"
) -> torch.Tensor:
    """L_A = mean_{i != j} (A(i,j) - y_i . y_j)^2 over the sampled pixels; A = cosine similarity of the
    embeddings, y_i . y_j = probability that pixels i and j share a label.

    embeddings (D, H, W), or (D, h, w) at a lower resolution, read as its bilinear upsampling to (H, W);
    log_probs (C, H, W); index (n,) flat pixel indices from
    :func:`sample_affinity_pixels`. ``detach``: "none" trains both branches, "segmentation" stops the
    gradient into y (only the embedding learns), "embedding" stops it into A (only y learns)."""
    if detach not in AFFINITY_DETACH:
        raise ValueError(f"affinity_loss: detach must be one of {AFFINITY_DETACH}, got {detach!r}")
    a = _cosine(embeddings, index, tuple(log_probs.shape[-2:]))
    y = _gather_pixels(log_probs, index).exp()
    if detach == "segmentation":
        y = y.detach()
    elif detach == "embedding":
        a = a.detach()
    return _pairwise_mse(a, y.t() @ y)


def affinity_pretrain_loss(embeddings: torch.Tensor, labels: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """L_A_pre = mean_{i != j} (A(i,j) - [M(i) = M(j)])^2 over the sampled (non-ignore) pixels: embedding
    pre-training on the GrabCut map. embeddings (D, H, W) or (D, h, w) as in :func:`affinity_loss`;
    labels (H, W); index (n,)."""
    a = _cosine(embeddings, index, tuple(labels.shape[-2:]))
    m = labels.reshape(-1)[index.to(labels.device)].to(a.device)
    return _pairwise_mse(a, (m[:, None] == m[None, :]).to(a.dtype))


# ----------------------------------------------------------------------------------------------------
# Combination
# ----------------------------------------------------------------------------------------------------
def gather_present(alpha: torch.Tensor, targets: Sequence[ImageTargets]) -> List[torch.Tensor]:
    """Per image the (K_b, H, W) attention channels of its present classes from an (Bsz, L, H, W) map."""
    if alpha.dim() != 4 or alpha.shape[0] != len(targets):
        raise ValueError(f"gather_present: alpha must be (Bsz={len(targets)}, L, H, W), got {tuple(alpha.shape)}")
    return [alpha[b].index_select(0, t.classes.to(alpha.device)) for b, t in enumerate(targets)]


class Box2SegLoss(nn.Module):
    """L = w_GC L_GC + w_fg L_fg + w_bg L_bg + w_fr L_fr + w_A L_A, each term averaged over the batch.

    Pixel labels (``ImageTargets.supervision``): an image whose M is its true mask trains like any other
    ("mask"), or, in ``ce`` mode ("mask_ce"), with L_GC alone (plain cross-entropy on the mask) and 0 in every
    other term; the batch mean still divides by every image, so L is the mean of the per-image losses.

    ``forward`` returns a detectron2-style dict with one weighted scalar per enabled term
    ({"loss_gc", "loss_fg", "loss_bg", "loss_fr", "loss_aff"}); ``pretrain`` returns {"loss_aff_pre"}.
    ``terms`` lists the enabled terms (ablations switch terms off here, not by zero weights, so that a
    disabled branch is never evaluated).
    """

    def __init__(
        self,
        *,
        terms: Iterable[str] = PAPER_TERMS,
        w_gc: float = 1.0,
        w_fg: float = 1.0,
        w_bg: float = 1.0,
        w_fr: float = 1.0,
        w_aff: float = 1.0,
        w_aff_pre: float = 1.0,
        gamma: float = 0.8,
        aff_num_samples: int = 1024,
        aff_boundary_fraction: float = 0.5,
        aff_band_width: int = 8,
        aff_detach: str = "none",
        attention_start_iter: int = 0,
        w_proj: float = 1.0,
        fg_pull_cap: float = 0.0,
        w_pair: float = 1.0,
        pair_threshold: float = 0.3,
        pair_stride: int = 4,
        pair_dilation: int = 2,
        ramp_iters: int = 0,
        affinity_start_iter: int = 0,
        class_average: bool = False,
    ):
        super().__init__()
        terms = tuple(terms)
        unknown = [t for t in terms if t not in LOSS_TERMS]
        if unknown:
            raise ValueError(f"Box2SegLoss: unknown loss terms {unknown}; known: {LOSS_TERMS}")
        if aff_detach not in AFFINITY_DETACH:
            raise ValueError(f"Box2SegLoss: aff_detach must be one of {AFFINITY_DETACH}, got {aff_detach!r}")
        if not 0.0 <= gamma <= 1.0:
            raise ValueError(f"Box2SegLoss: gamma must lie in [0, 1], got {gamma}")
        if aff_num_samples < 2:
            raise ValueError(f"Box2SegLoss: aff_num_samples must be >= 2, got {aff_num_samples}")
        self.terms = tuple(t for t in LOSS_TERMS if t in terms)
        self.weights = {"gc": w_gc, "fg": w_fg, "bg": w_bg, "fr": w_fr, "aff": w_aff, "aff_pre": w_aff_pre,
                        "proj": w_proj, "pair": w_pair}
        self.gamma = float(gamma)
        self.aff_num_samples = int(aff_num_samples)
        self.aff_boundary_fraction = float(aff_boundary_fraction)
        self.aff_band_width = int(aff_band_width)
        self.aff_detach = aff_detach
        if attention_start_iter < 0:
            raise ValueError(f"Box2SegLoss: attention_start_iter must be >= 0, got {attention_start_iter}")
        self.attention_start_iter = int(attention_start_iter)
        if fg_pull_cap < 0:
            raise ValueError(f"Box2SegLoss: fg_pull_cap must be >= 0 (0 = the paper's unbounded pull), got {fg_pull_cap}")
        self.fg_pull_cap = float(fg_pull_cap)
        if pair_stride < 1 or pair_dilation < 1:
            raise ValueError(f"Box2SegLoss: pair_stride and pair_dilation must be >= 1, got {pair_stride}, {pair_dilation}")
        self.pair_threshold = float(pair_threshold)
        self.pair_stride = int(pair_stride)
        self.pair_dilation = int(pair_dilation)
        if ramp_iters < 0 or affinity_start_iter < 0:
            raise ValueError(f"Box2SegLoss: ramp_iters and affinity_start_iter must be >= 0, got {ramp_iters}, "
                             f"{affinity_start_iter}")
        self.ramp_iters = int(ramp_iters)
        self.affinity_start_iter = int(affinity_start_iter)
        self.class_average = bool(class_average)

    def ramp(self, term: str, iteration: Optional[int] = None) -> float:
        """The ramp-in factor of ``term`` at ``iteration`` (beyond the paper; LOSS.RAMP_ITERS): the attention terms
        and L_A rise linearly from 0 to their full weight over ``ramp_iters`` iterations from their start
        (``attention_start_iter``; ``affinity_start_iter``, i.e. the end of embedding pre-training), so a
        still-uninformative y-branch is not pulled hard by them at once. 1 for the other terms, outside a
        trainer (``iteration`` None) and with ``ramp_iters`` 0."""
        start = {"fg": self.attention_start_iter, "fr": self.attention_start_iter, "aff": self.affinity_start_iter}
        if self.ramp_iters == 0 or iteration is None or term not in start:
            return 1.0
        return min(1.0, max(0, iteration - start[term] + 1) / self.ramp_iters)

    def colour_similarity(self, rgb: torch.Tensor) -> torch.Tensor:
        """The pairwise term's colour similarity of (N, 3, H, W) RGB 0..255 images, at this loss's stride and
        dilation (the meta-architecture computes it once per batch, without gradient)."""
        return colour_similarity(rgb, self.pair_stride, self.pair_dilation)

    def active_terms(self, iteration: Optional[int] = None) -> Tuple[str, ...]:
        """The enabled terms at a training iteration: L_fg and L_fr only from ``attention_start_iter`` on.

        Why a start iteration: while the y-branch is still uninformative, the filling-rate hinge spreads the
        attention over the whole box and L_fg (weighted per box pixel) then teaches "fill the box"; starting
        the attention terms once L_GC has shaped the y-branch lets alpha settle on the pixels y agrees with.
        ``iteration=None`` (outside a trainer) means all enabled terms."""
        if iteration is not None and iteration < self.attention_start_iter:
            return tuple(t for t in self.terms if t not in ATTENTION_TERMS)
        return self.terms

    def branches(self, iteration: Optional[int] = None) -> Tuple[str, ...]:
        """The decoder branches the active terms read at ``iteration``: always "y"; "alpha" for L_fg / L_fr,
        "beta" for L_A. The model runs only these (a switched-off or not yet started term costs nothing)."""
        terms = self.active_terms(iteration)
        return ("y",) + ("alpha",) * any(t in terms for t in ATTENTION_TERMS) + ("beta",) * ("aff" in terms)

    def sample(self, t: ImageTargets, generator: Optional[torch.Generator] = None) -> torch.Tensor:
        return sample_affinity_pixels(
            t.labels, t.valid, t.inside_boxes, self.aff_num_samples, self.aff_boundary_fraction,
            self.aff_band_width, generator,
        )

    @staticmethod
    def _check(name: str, x: torch.Tensor, b: int, t: ImageTargets, channels: Optional[int] = None,
               any_size: bool = False):
        size_ok = any_size or tuple(x.shape[-2:]) == t.image_size
        if x.dim() != 3 or not size_ok or (channels is not None and x.shape[0] != channels):
            want = ("C" if channels is None else str(channels)) + (
                ", h, w" if any_size else f", {t.image_size[0]}, {t.image_size[1]}")
            raise ValueError(f"Box2SegLoss: {name} of image {b} has shape {tuple(x.shape)}, expected ({want})")

    def forward(
        self,
        log_probs: Union[torch.Tensor, Sequence[torch.Tensor]],
        targets: Sequence[ImageTargets],
        alpha: Union[None, torch.Tensor, Sequence[torch.Tensor]] = None,
        embeddings: Union[None, torch.Tensor, Sequence[torch.Tensor]] = None,
        generator: Optional[torch.Generator] = None,
        iteration: Optional[int] = None,
        similarity: Union[None, torch.Tensor, Sequence[torch.Tensor]] = None,
    ) -> Dict[str, torch.Tensor]:
        """Args:
            log_probs: (Bsz, L+1, H, W) or per image (L+1, H_b, W_b) fp32 log-softmax of the y-branch.
            targets: from :func:`box2seg.modeling.targets.build_targets`, same spatial sizes.
            alpha: needed for "fg"/"fr": (Bsz, L, H, W) sigmoid attention of all classes, or per image
                the gathered (K_b, H_b, W_b) channels of ``targets[b].classes``.
            embeddings: needed for "aff": (Bsz, D, h, w) or per image (D, h_b, w_b), at input resolution
                or lower (then read as their bilinear upsampling, only at the sampled pixels).
            generator: optional torch.Generator for the affinity sample.
            iteration: the training iteration, for :meth:`active_terms` (None: all enabled terms).
            similarity: needed for "pair": (Bsz, 8, h, w) or per image (8, h_b, w_b) from
                :meth:`colour_similarity`.
        """
        terms = self.active_terms(iteration)
        needs_alpha = "alpha" in self.branches(iteration)
        bsz = len(targets)
        if bsz == 0:
            raise ValueError("Box2SegLoss: empty batch")
        if len(log_probs) != bsz:
            raise ValueError(f"Box2SegLoss: {len(log_probs)} log_probs for {bsz} targets")
        if needs_alpha:
            if alpha is None:
                raise ValueError(f"Box2SegLoss: terms {terms} need alpha")
            if isinstance(alpha, torch.Tensor) and alpha.dim() == 4:
                alpha = gather_present(alpha, targets)
            if len(alpha) != bsz:
                raise ValueError(f"Box2SegLoss: {len(alpha)} alpha maps for {bsz} targets")
        if "aff" in terms:
            if embeddings is None:
                raise ValueError("Box2SegLoss: the affinity term needs embeddings")
            if len(embeddings) != bsz:
                raise ValueError(f"Box2SegLoss: {len(embeddings)} embedding maps for {bsz} targets")

        if "pair" in terms and (similarity is None or len(similarity) != bsz):
            raise ValueError("Box2SegLoss: the pairwise term needs one colour-similarity map per image")

        sums: Dict[str, torch.Tensor] = {}

        def add(name, value):
            sums[name] = sums[name] + value if name in sums else value

        for b, t in enumerate(targets):
            lp = log_probs[b]
            self._check("log_probs", lp, b, t)
            if t.supervision == "mask_ce":
                self._cross_entropy_only(add, terms, lp, t, b, alpha if needs_alpha else None,
                                         embeddings if "aff" in terms else None)
                continue
            if "gc" in terms:
                add("gc", grabcut_loss(lp, t.labels, t.valid))
            if "bg" in terms:
                add("bg", background_loss(lp, t.sure_background, t.unlabelled))
            # Class-averaged (LOSS.CLASS_AVERAGE, beyond the paper): the per-class sums of L_fg, L_fr and L_proj
            # divided by the image's number of boxed classes, so an image with many classes weighs no more.
            per_class = (t.box_masks.sum((1, 2)) > 0).sum().clamp(min=1) if self.class_average else 1
            if "proj" in terms:
                add("proj", projection_loss(lp, t.box_masks, t.classes, t.valid) / per_class)
            if "pair" in terms:
                add("pair", pairwise_loss(lp, similarity[b], t.box_masks, t.valid, self.pair_threshold,
                                          self.pair_stride, self.pair_dilation))
            if needs_alpha:
                a = alpha[b]
                self._check("alpha", a, b, t, channels=t.classes.numel())
                if "fg" in terms:
                    add("fg", foreground_loss(lp, a, t.box_masks, t.classes, self.fg_pull_cap) / per_class)
                if "fr" in terms:
                    add("fr", filling_rate_loss(a, t.box_masks, t.filling_rates, self.gamma,
                                                t.filling_rate_included) / per_class)
            if "aff" in terms:
                e = embeddings[b]
                self._check("embeddings", e, b, t, any_size=True)
                add("aff", affinity_loss(e, lp, self.sample(t, generator), self.aff_detach))
        return {f"loss_{k}": self.weights[k] * self.ramp(k, iteration) * sums[k] / bsz for k in terms}

    @staticmethod
    def _cross_entropy_only(add, terms, lp, t, b, alpha, embeddings):
        """An image with pixel labels in ``ce`` mode (``t.supervision == "mask_ce"``): plain cross-entropy on its
        mask (L_GC with M the mask) and nothing else. Every other active term gets an exact 0 still attached
        to the branch it reads, so the loss dict keeps its keys and every decoder its gradient (DDP)."""
        if "gc" not in terms:
            raise ValueError(f"Box2SegLoss: image {b} has pixel labels in 'ce' mode, which trains L_GC, but the "
                             f"active terms {terms} leave out 'gc'")
        add("gc", grabcut_loss(lp, t.labels, t.valid))
        zero = _masked_sum(lp, torch.zeros_like(t.valid), (0, 1, 2))
        for name in terms:
            if name == "gc":
                continue
            if name in ATTENTION_TERMS and alpha is not None:
                add(name, _masked_sum(alpha[b], torch.zeros_like(alpha[b], dtype=torch.bool), (0, 1, 2)))
            elif name == "aff":
                add(name, _masked_sum(embeddings[b], torch.zeros_like(embeddings[b], dtype=torch.bool), (0, 1, 2)))
            else:
                add(name, zero)

    def pretrain(
        self,
        embeddings: Union[torch.Tensor, Sequence[torch.Tensor]],
        targets: Sequence[ImageTargets],
        generator: Optional[torch.Generator] = None,
    ) -> Dict[str, torch.Tensor]:
        """Embedding pre-training on the GrabCut maps (the true masks of pixel-labelled images in ``box2seg``
        mode; ``ce`` mode's images add 0): {"loss_aff_pre": w_aff_pre * mean_b L_A_pre}."""
        bsz = len(targets)
        if bsz == 0 or len(embeddings) != bsz:
            raise ValueError(f"Box2SegLoss.pretrain: {len(embeddings)} embedding maps for {bsz} targets")
        total = 0.0
        for b, t in enumerate(targets):
            self._check("embeddings", embeddings[b], b, t, any_size=True)
            if t.supervision == "mask_ce":  # "ce" mode trains only L_GC on the mask: an attached exact 0
                e = embeddings[b]
                total = total + _masked_sum(e, torch.zeros_like(e, dtype=torch.bool), (0, 1, 2))
                continue
            total = total + affinity_pretrain_loss(embeddings[b], t.labels, self.sample(t, generator))
        return {"loss_aff_pre": self.weights["aff_pre"] * total / bsz}
