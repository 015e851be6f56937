"""Pixel labels in the loss: an image in ``ce`` mode gets plain cross-entropy on its mask and nothing else, a
batch mixing such images with box-only ones trains, and ``box2seg`` mode is the box path with M the mask."""
import math
import os

import box2seg  # noqa: F401
import pytest
import torch
import torch.nn.functional as F
from detectron2.modeling import build_model
from detectron2.utils.events import EventStorage

from box2seg.engine import setup_cfg
from box2seg.modeling.losses import LOSS_TERMS, Box2SegLoss
from box2seg.modeling.targets import build_targets

from .test_meta_arch import TINY, tiny_batch

IGNORE = 255
ALL_TERMS = LOSS_TERMS  # the paper's and BoxInst's: a "ce" image must switch every one of them off


def _targets(labels, supervision, boxes=((1.0, 1.0, 5.0, 4.0),), classes=(0,)):
    n = len(labels)
    return build_targets([torch.tensor(boxes)] * n, [torch.tensor(classes)] * n, None, list(labels), 2, IGNORE,
                         supervision=supervision)


def _inputs(labels, seed=0, channels=3):
    g = torch.Generator().manual_seed(seed)
    logits = [torch.randn(channels, *m.shape, generator=g, requires_grad=True) for m in labels]
    alpha = [torch.rand(1, *m.shape, generator=g, requires_grad=True) for m in labels]
    beta = [torch.randn(8, *m.shape, generator=g, requires_grad=True) for m in labels]
    similarity = [torch.rand(8, *m.shape, generator=g) for m in labels]
    return logits, alpha, beta, similarity


def _loss(terms=ALL_TERMS, **kwargs):
    return Box2SegLoss(terms=terms, w_fr=5.0, aff_num_samples=16, pair_stride=1, **kwargs)


def _call(loss, logits, targets, alpha, beta, similarity):
    return loss([F.log_softmax(x, 0) for x in logits], targets, alpha=alpha, embeddings=beta, similarity=similarity)


def test_ce_equals_plain_cross_entropy_by_hand():
    """One 1 x 3 image, 2 classes + background: logits chosen so the answer is written down directly."""
    logits = torch.tensor([[[0.0, 0.0, 5.0]], [[math.log(3.0), 0.0, 1.0]], [[0.0, 0.0, 2.0]]], requires_grad=True)
    labels = torch.tensor([[1, 2, IGNORE]])  # pixel 0: class 1, pixel 1: class 2, pixel 2: ignore
    targets = _targets([labels], ["mask_ce"], boxes=((0.0, 0.0, 2.0, 1.0),))
    losses = _loss()([F.log_softmax(logits, 0)], targets, alpha=[torch.rand(1, 1, 3)],
                     embeddings=[torch.randn(8, 1, 3)], similarity=[torch.rand(8, 1, 3)])
    # pixel 0: softmax(0, log 3, 0)[1] = 3/5; pixel 1: softmax(0, 0, 0)[2] = 1/3; mean over the 2 labelled pixels
    expected = -(math.log(3 / 5) + math.log(1 / 3)) / 2
    assert losses["loss_gc"].item() == pytest.approx(expected, rel=1e-6)
    assert set(losses) == {f"loss_{t}" for t in ALL_TERMS}
    assert all(v.item() == 0.0 for k, v in losses.items() if k != "loss_gc")


def test_ce_equals_torch_cross_entropy_and_feeds_no_other_gradient():
    labels = [torch.randint(0, 3, (6, 7)), torch.randint(0, 3, (5, 8))]
    labels[0][0, :] = IGNORE
    logits, alpha, beta, similarity = _inputs(labels)
    losses = _call(_loss(), logits, _targets(labels, ["mask_ce", "mask_ce"]), alpha, beta, similarity)
    plain = sum(F.cross_entropy(x[None], m[None], ignore_index=IGNORE) for x, m in zip(logits, labels)) / 2
    assert torch.allclose(losses["loss_gc"], plain, atol=1e-6)
    total = sum(losses.values())
    assert torch.allclose(total, plain, atol=1e-6)
    total.backward()
    for x, m in zip(logits, labels):  # the gradient is cross-entropy's
        expected, = torch.autograd.grad(F.cross_entropy(x[None], m[None], ignore_index=IGNORE) / 2, x)
        assert torch.allclose(x.grad, expected, atol=1e-6)
    for t in alpha + beta:  # attached (DDP sees every branch used) but exactly zero
        assert t.grad is not None and torch.count_nonzero(t.grad) == 0


def test_mixed_batch_is_the_mean_of_per_image_losses():
    labels = [torch.randint(0, 3, (6, 7)), torch.randint(0, 3, (6, 7))]
    logits, alpha, beta, similarity = _inputs(labels, seed=1)
    loss = _loss(terms=("gc", "fg", "bg", "fr", "proj", "pair"))  # the deterministic terms (aff samples)
    mixed = _call(loss, logits, _targets(labels, ["boxes", "mask_ce"]), alpha, beta, similarity)
    box_only = _call(loss, logits[:1], _targets(labels[:1], ["boxes"]), alpha[:1], beta[:1], similarity[:1])
    ce = F.cross_entropy(logits[1][None], labels[1][None], ignore_index=IGNORE)
    for name, value in box_only.items():
        extra = ce if name == "loss_gc" else 0.0
        assert torch.allclose(mixed[name], (value + extra) / 2, atol=1e-6), name


def test_box2seg_mode_is_the_box_path_with_the_mask_as_m():
    labels = [torch.randint(0, 3, (6, 7))]
    logits, alpha, beta, similarity = _inputs(labels, seed=2)
    loss = _loss(terms=("gc", "fg", "bg", "fr"))
    as_mask = _call(loss, logits, _targets(labels, ["mask"]), alpha, beta, similarity)
    as_boxes = _call(loss, logits, _targets(labels, ["boxes"]), alpha, beta, similarity)
    assert as_mask.keys() == as_boxes.keys() and all(torch.equal(as_mask[k], as_boxes[k]) for k in as_mask)


def test_unknown_supervision_and_ce_without_gc_are_errors():
    labels = [torch.zeros((4, 6), dtype=torch.long)]
    with pytest.raises(ValueError, match="supervision"):
        _targets(labels, ["masks"])
    logits, alpha, beta, similarity = _inputs(labels)
    with pytest.raises(ValueError, match="leave out 'gc'"):
        _call(_loss(terms=("fg", "fr", "bg")), logits, _targets(labels, ["mask_ce"]), alpha, beta, similarity)


@pytest.mark.parametrize("supervision", [("boxes", "mask_ce"), ("mask", "mask_ce"), ("mask_ce", "mask_ce")])
def test_a_mixed_batch_trains(supervision):
    """The model on a batch mixing box-only images and pixel-labelled ones: every phase gives finite losses with
    the same keys, and a few optimiser steps lower the loss."""
    cfg = setup_cfg(TINY, ["MODEL.BOX2SEG.PRETRAIN_ITERS", "1", "MODEL.BOX2SEG.LOSS.TERMS",
                           '["gc", "fg", "bg", "fr", "aff", "proj", "pair"]'])
    torch.manual_seed(0)
    model = build_model(cfg).train()
    batch = tiny_batch(cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES)
    for x, s in zip(batch, supervision):
        x["supervision"] = s
    with EventStorage(start_iter=0):  # embedding pre-training: "ce" images add 0
        pre = model(batch)
        assert set(pre) == {"loss_aff_pre"} and torch.isfinite(pre["loss_aff_pre"])
        sum(pre.values()).backward()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    totals = []
    for step in range(4):
        optimizer.zero_grad()
        with EventStorage(start_iter=1 + step):
            losses = model(batch)
        assert set(losses) == {f"loss_{t}" for t in cfg.MODEL.BOX2SEG.LOSS.TERMS}
        total = sum(losses.values())
        assert torch.isfinite(total)
        total.backward()
        for head in (model.decoders.y_head, model.decoders.alpha_head, model.decoders.beta_head):
            assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in head.parameters())
        optimizer.step()
        totals.append(total.item())
    assert totals[-1] < totals[0]
