"""Losses on hand-made embeddings with known values."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from facerec.training.losses import ContrastiveLoss, InfoNCELoss, SupConLoss


def unit(*rows: list[float]) -> torch.Tensor:
    return F.normalize(torch.tensor(rows, dtype=torch.float32), dim=-1)


# ------------------------------------------------------------------ contrastive
def test_contrastive_identical_and_opposite_pairs():
    loss = ContrastiveLoss(margin=0.5)
    a = unit([1, 0, 0], [0, 1, 0])
    same, different = torch.ones(2), torch.zeros(2)
    assert loss(a, a, same).item() == pytest.approx(0.0, abs=1e-7)  # identical and same: nothing to learn
    assert loss(a, a, different).item() == pytest.approx(0.25)  # identical but different: margin**2
    assert loss(a, -a, different).item() == pytest.approx(0.0, abs=1e-7)  # opposite (d=2) beyond the margin
    assert loss(a, -a, same).item() == pytest.approx(4.0)  # opposite but same: d**2 = 4


def test_contrastive_mixed_batch_is_the_mean_of_the_pair_terms():
    loss = ContrastiveLoss(margin=0.6)
    a = unit([1, 0], [1, 0], [1, 0])
    b = unit([0, 1], [1, 1], [0, 1])  # cosine distances 1, 1 - 1/sqrt(2), 1
    same = torch.tensor([1.0, 0.0, 0.0])
    d = 1 - 1 / math.sqrt(2)
    expected = (1.0 + (0.6 - d) ** 2 + 0.0) / 3  # positive pays d**2; negatives pay (margin - d)+**2
    assert loss(a, b, same).item() == pytest.approx(expected, rel=1e-5)


def test_contrastive_gradient_pushes_negatives_apart_and_pulls_positives_together():
    a = unit([1, 0.2]).requires_grad_(True)
    b = unit([1, -0.2])
    for same, direction in ((0.0, -1), (1.0, 1)):
        a.grad = None
        ContrastiveLoss(margin=1.0)(a, b, torch.tensor([same])).backward()
        moved = F.normalize(a.detach() - 0.1 * a.grad, dim=-1)
        change = F.cosine_similarity(moved, b).item() - F.cosine_similarity(a.detach(), b).item()
        assert change * direction > 0


def test_contrastive_rejects_a_margin_outside_the_cosine_range():
    with pytest.raises(ValueError):
        ContrastiveLoss(margin=0.0)
    with pytest.raises(ValueError):
        ContrastiveLoss(margin=2.5)


# ------------------------------------------------------------------ in-batch
def nt_xent(z: torch.Tensor, t: float) -> torch.Tensor:
    """SimCLR reference: samples 2i and 2i+1 are each other's only positive."""
    logits = z @ z.T / t
    logits.fill_diagonal_(float("-inf"))
    target = torch.arange(len(z)) ^ 1
    return F.cross_entropy(logits, target)


@pytest.mark.parametrize("cls", [InfoNCELoss, SupConLoss])
def test_with_two_views_per_identity_both_losses_are_nt_xent(cls):
    torch.manual_seed(0)
    z = F.normalize(torch.randn(8, 5), dim=-1)
    labels = torch.arange(4).repeat_interleave(2)
    assert cls(0.2)(z, labels).item() == pytest.approx(nt_xent(z, 0.2).item(), rel=1e-5)


def test_collapsed_embeddings_have_the_closed_form_losses():
    n, k = 6, 3  # two identities x three images, all embeddings identical
    z = unit(*[[1.0, 0.0]] * n)
    labels = torch.tensor([0, 0, 0, 1, 1, 1])
    # every other sample has the same logit: each log-prob is -log(n - 1)
    assert SupConLoss(0.1)(z, labels).item() == pytest.approx(math.log(n - 1), rel=1e-5)
    assert InfoNCELoss(0.1)(z, labels).item() == pytest.approx(-math.log((k - 1) / (n - 1)), rel=1e-5)


def test_separated_identities_have_the_closed_form_losses():
    t = 0.5
    z = unit([1, 0], [1, 0], [0, 1], [0, 1])  # two identities, orthogonal, views identical
    labels = torch.tensor([0, 0, 1, 1])
    # anchor: one positive at cos 1, two negatives at cos 0
    expected = -math.log(math.exp(1 / t) / (math.exp(1 / t) + 2))
    assert SupConLoss(t)(z, labels).item() == pytest.approx(expected, rel=1e-5)
    assert InfoNCELoss(t)(z, labels).item() == pytest.approx(expected, rel=1e-5)
    opposite = unit([1, 0], [1, 0], [-1, 0], [-1, 0])
    assert SupConLoss(t)(opposite, labels).item() < SupConLoss(t)(z, labels).item()


@pytest.mark.parametrize("cls", [InfoNCELoss, SupConLoss])
def test_anchors_without_positives_are_skipped_and_gradients_stay_finite(cls):
    z = F.normalize(torch.randn(5, 4), dim=-1).requires_grad_(True)
    labels = torch.tensor([0, 0, 1, 2, 3])  # only samples 0 and 1 have a positive
    loss = cls(0.1)(z, labels)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(z.grad).all()
    assert z.grad[2:].abs().sum() > 0  # the singletons still act as negatives

    lonely = F.normalize(torch.randn(3, 4), dim=-1).requires_grad_(True)
    empty = cls(0.1)(lonely, torch.tensor([0, 1, 2]))
    empty.backward()
    assert empty.item() == 0.0 and torch.equal(lonely.grad, torch.zeros_like(lonely))


def test_in_batch_losses_reject_a_non_positive_temperature():
    with pytest.raises(ValueError):
        InfoNCELoss(0.0)
