"""BoxInst's colour-pairwise term: LAB reference colours, similarity beyond the map's edge, a mask that splits
at a colour edge costs nothing while one that splits a flat region does, ignore and outside-box cells count no
edge, and the loss reaches Box2SegLoss only with a similarity map."""
import box2seg  # noqa: F401  (compat fixes before any detectron2 import)
import pytest
import torch

from box2seg.modeling.losses import Box2SegLoss, colour_similarity, lab_colours, pairwise_loss
from box2seg.modeling.targets import build_targets


def _two_colour_image(h=32, w=32, split=16):
    rgb = torch.zeros(1, 3, h, w)
    rgb[:, :, :, :split] = torch.tensor([200.0, 30.0, 30.0]).view(1, 3, 1, 1)
    rgb[:, :, :, split:] = torch.tensor([30.0, 30.0, 200.0]).view(1, 3, 1, 1)
    return rgb


def _log_probs(fg):  # (H, W) foreground probability -> (2, H, W) log-probabilities
    fg = fg.clamp(1e-4, 1 - 1e-4)
    return torch.stack([1 - fg, fg]).log()


def test_lab_of_reference_colours():
    rgb = torch.tensor([[255.0, 255.0, 255.0], [0.0, 0.0, 0.0], [255.0, 0.0, 0.0]]).view(3, 3, 1, 1)
    lab = lab_colours(rgb)[:, :, 0, 0]
    assert lab[0].tolist() == pytest.approx([100.0, 0.0, 0.0], abs=0.05)
    assert lab[1].tolist() == pytest.approx([0.0, 0.0, 0.0], abs=0.05)
    assert lab[2].tolist() == pytest.approx([53.24, 80.09, 67.20], abs=0.1)  # sRGB red, D65


def test_similarity_is_one_on_flat_colour_and_marks_the_edge_of_the_map():
    sim = colour_similarity(torch.full((1, 3, 16, 16), 90.0), stride=4, dilation=1)
    assert sim.shape == (1, 8, 4, 4)
    assert (sim[0, :, 1:3, 1:3] == pytest.approx(1.0))
    assert (sim[0, 0, 0, 0] == -1) and (sim[0, 7, 3, 3] == -1)  # the top-left / bottom-right neighbours


def test_a_split_along_the_colour_edge_costs_nothing_and_across_flat_colour_costs_much():
    rgb = _two_colour_image()
    sim = colour_similarity(rgb, stride=4, dilation=2)[0]
    box = torch.ones(1, 32, 32, dtype=torch.bool)
    valid = torch.ones(32, 32, dtype=torch.bool)
    along = torch.zeros(32, 32)
    along[:, :16] = 1.0
    across = torch.zeros(32, 32)
    across[:16] = 1.0
    on_edge = pairwise_loss(_log_probs(along), sim, box, valid, 0.3, 4, 2)
    off_edge = pairwise_loss(_log_probs(across), sim, box, valid, 0.3, 4, 2)
    assert on_edge.item() < 1e-3
    assert off_edge.item() > 0.5
    # outside every box no edge counts; ignore cells neither
    assert pairwise_loss(_log_probs(across), sim, torch.zeros_like(box), valid, 0.3, 4, 2).item() == 0.0
    assert pairwise_loss(_log_probs(across), sim, box, torch.zeros_like(valid), 0.3, 4, 2).item() == 0.0
    grad_at = _log_probs(across).requires_grad_()
    pairwise_loss(grad_at, sim, box, valid, 0.3, 4, 2).backward()
    assert grad_at.grad.abs().sum() > 0


def test_box2seg_loss_pair_term_needs_similarity():
    labels = torch.zeros(1, 32, 32, dtype=torch.long)
    labels[0, 8:24, 8:24] = 1
    targets = build_targets([torch.tensor([[8.0, 8.0, 24.0, 24.0]])], [torch.tensor([0])], None, labels, 1, 255)
    loss = Box2SegLoss(terms=("gc", "pair"), w_pair=2.0, pair_stride=4, pair_dilation=2)
    lp = _log_probs(torch.full((32, 32), 0.5))[None]
    with pytest.raises(ValueError, match="pairwise"):
        loss(lp, targets)
    out = loss(lp, targets, similarity=loss.colour_similarity(_two_colour_image()))
    # p = 0.5 everywhere: P(same) = 0.5 on every counted edge
    assert out["loss_pair"].item() == pytest.approx(2.0 * 0.6931, abs=1e-3)
