"""A colour CRF on each box's chip: the chip model's masks are smooth blobs at the decoder's stride 4, and a few
mean-field steps of a binary CRF pull each mask's edge towards the image's colour edges (chip mode's inference,
``MODEL.BOX2SEG.CHIPS.CRF``; docs/chips.md).

The kernel is Krähenbühl and Koltun's appearance kernel on a local k x k window, as ConvCRF runs it: between a
pixel i and a window neighbour j, ``weight * exp(-|dx|^2 / (2 theta_space^2) - |dLab|^2 / (2 theta_colour^2))``
(dx in chip pixels, Lab the CIE colours of the chip). Each step sets ``logit_i = unary_i + sum_j k_ij (2 q_j - 1)``,
the unary being the logit of the box's probability: similar-coloured neighbours vote for each other's label.
All chips run at once; the only loop is over the k x k window offsets (shifted views of one padded copy,
multiplied and added in place: no (N, C, k*k, S, S) window copies, several times faster on a CPU than ``unfold``;
bench/RESULTS.md, session 17).
"""
import torch
import torch.nn.functional as F

from .losses import lab_colours

__all__ = ["colour_crf"]


def _shifted(x, window):
    """The ``window`` x ``window`` neighbours of every cell of x (N, C, H, W), one (N, C, H, W) view per offset
    (0 beyond the edge), in row-major offset order. Views of one padded copy: cheaper than ``unfold`` on a CPU."""
    h, w, r = x.shape[-2], x.shape[-1], window // 2
    padded = F.pad(x, (r, r, r, r))
    return [padded[..., i:i + h, j:j + w] for i in range(window) for j in range(window)]


def colour_crf(prob, rgb, *, weight, theta_colour, theta_space, window=7, steps=5):
    """Refined foreground probabilities (N, S, S) of chips' probabilities ``prob`` (N, S, S) in [0, 1] and their
    colours ``rgb`` (N, 3, S, S, RGB 0..255). ``weight`` 0 returns ``prob`` (clamped to [1e-4, 1 - 1e-4])."""
    if window < 1 or window % 2 == 0:
        raise ValueError(f"colour_crf: window must be odd and positive, got {window}")
    p = prob.float().clamp(1e-4, 1 - 1e-4)
    if len(p) == 0 or weight == 0 or steps == 0:
        return p
    unary = torch.log(p) - torch.log1p(-p)
    lab = lab_colours(rgb.float())
    centre = (window * window) // 2
    r = torch.arange(window, dtype=torch.float32) - window // 2
    space = (r[:, None] ** 2 + r[None, :] ** 2).flatten().tolist()
    # The kernel to each neighbour (N, k*k, S, S), 0 beyond the chip and to the pixel itself. The exponent is
    # clamped: beyond -30 the kernel is below 1e-13, and exp's underflow to denormals would otherwise be the
    # slowest step of the CRF (x10 on a CPU).
    inside = _shifted(torch.ones_like(p[:, None]), window)
    kernel = torch.zeros((len(p), window * window, *p.shape[-2:]), dtype=torch.float32, device=p.device)
    for o, (neighbour, there) in enumerate(zip(_shifted(lab, window), inside)):
        if o == centre:
            continue
        colour = ((neighbour - lab) ** 2).sum(1)
        exponent = (-space[o] / (2 * theta_space ** 2) - colour / (2 * theta_colour ** 2)).clamp_(min=-30.0)
        kernel[:, o] = weight * torch.exp(exponent) * there[:, 0]
    q = p
    for _ in range(steps):
        message = torch.zeros_like(p)
        for o, neighbour in enumerate(_shifted(2 * q[:, None] - 1, window)):
            message.addcmul_(kernel[:, o], neighbour[:, 0])
        q = torch.sigmoid(unary + message)
    return q
