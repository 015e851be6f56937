"""The collapse test: whatever the y-branch says, optimising the attention under L_fg + L_fr keeps its mean
inside each box at gamma * eta or above once L_fg's pull is bounded (LOSS.FG_PULL_CAP); the paper's unbounded
pull abandons the boxes where y misses the object."""
import pytest
import torch

from box2seg.modeling.losses import filling_rate_loss, foreground_loss


def _optimise_alpha(log_y, box_masks, eta, pull_cap, w_fr=5.0, gamma=0.8, steps=400):
    classes = torch.arange(box_masks.shape[0])
    logits = torch.zeros(box_masks.shape, requires_grad=True)
    opt = torch.optim.Adam([logits], lr=0.1)
    for _ in range(steps):
        alpha = torch.sigmoid(logits)
        loss = foreground_loss(log_y, alpha, box_masks, classes, pull_cap) + w_fr * filling_rate_loss(
            alpha, box_masks, eta, gamma)
        opt.zero_grad()
        loss.backward()
        opt.step()
    alpha = torch.sigmoid(logits.detach())
    return (alpha * box_masks).flatten(1).sum(1) / box_masks.flatten(1).sum(1)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_bounded_pull_keeps_every_box(seed):
    g = torch.Generator().manual_seed(seed)
    k, h, w = 3, 16, 16
    # y anywhere from confident to hopeless (y(c) down to e^-12) on the boxes' pixels.
    log_y = torch.log_softmax(torch.randn((k + 1, h, w), generator=g) * 6, 0)
    log_y[1] = -12.0  # the first class is missed everywhere by y
    box_masks = torch.zeros((k, h, w), dtype=torch.bool)
    box_masks[0, 2:10, 2:12] = True
    box_masks[1, 5:15, 1:6] = True
    box_masks[2, 0:16, 8:16] = True
    eta = torch.tensor([0.7, 0.5, 0.9])
    mean_alpha = _optimise_alpha(log_y, box_masks, eta, pull_cap=4.0)
    assert (mean_alpha >= 0.8 * eta - 0.02).all(), mean_alpha


def test_the_papers_unbounded_pull_abandons_a_missed_object():
    box_masks = torch.zeros((1, 8, 8), dtype=torch.bool)
    box_masks[0, 1:7, 1:7] = True
    log_y = torch.full((2, 8, 8), -12.0)  # y(c) = e^-12: the object is missed; -log y = 12 > w_fr = 5
    mean_alpha = _optimise_alpha(log_y, box_masks, torch.tensor([0.8]), pull_cap=0.0)
    assert mean_alpha[0] < 0.1
