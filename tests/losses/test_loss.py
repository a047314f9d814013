"""TripletLoss against a numpy computation on a hand-made case."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from facenet_pl.losses import TripletLoss


def _hand_case():
    ang = np.deg2rad([0.0, 10.0, 90.0, 20.0, 180.0])
    emb = np.stack([np.cos(ang), np.sin(ang)], 1)  # unit vectors
    trip = (np.array([0, 0, 1, 3]), np.array([1, 3, 0, 0]), np.array([2, 4, 3, 1]))
    return emb, trip


def _numpy_losses(emb, trip, margin):
    a, p, n = trip
    d_ap = ((emb[a] - emb[p]) ** 2).sum(1)
    d_an = ((emb[a] - emb[n]) ** 2).sum(1)
    return np.maximum(0, d_ap - d_an + margin), d_ap, d_an


@pytest.mark.parametrize("reduction", ["mean", "sum", "mean_active"])
def test_matches_numpy(reduction):
    emb, trip = _hand_case()
    margin = 0.2
    losses, d_ap, d_an = _numpy_losses(emb, trip, margin)
    # The hand case has active and inactive triplets: (1, 0, 3) and (3, 0, 1) are violated.
    assert 0 < (losses > 0).sum() < len(losses)
    want = {"mean": losses.mean(), "sum": losses.sum(), "mean_active": losses[losses > 0].mean()}[reduction]
    x = torch.tensor(emb, requires_grad=True)
    loss, stats = TripletLoss(margin, reduction)(x, tuple(torch.tensor(t) for t in trip))
    assert loss.item() == pytest.approx(want, rel=1e-9)
    assert stats.num_triplets == 4
    assert stats.active_fraction.item() == pytest.approx((losses > 0).mean())
    assert stats.mean_d_ap.item() == pytest.approx(d_ap.mean())
    assert stats.mean_d_an.item() == pytest.approx(d_an.mean())


def test_analytic_value_on_orthogonal_vectors():
    # a=e1, p=e1 (d=0), n=e2 (d=2): loss = max(0, 0 - 2 + m) = 0 for m=0.2, 1.0 for m=3.
    x = torch.eye(2)[[0, 0, 1]]
    trip = (torch.tensor([0]), torch.tensor([1]), torch.tensor([2]))
    assert TripletLoss(0.2)(x, trip)[0].item() == 0.0
    assert TripletLoss(3.0)(x, trip)[0].item() == pytest.approx(1.0)


def test_empty_triplets_give_zero_loss_with_a_graph():
    x = torch.randn(4, 3, requires_grad=True)
    empty = torch.empty(0, dtype=torch.long)
    loss, stats = TripletLoss()(x, (empty, empty, empty))
    assert loss.item() == 0.0 and loss.requires_grad and stats.num_triplets == 0
    loss.backward()
    assert torch.equal(x.grad, torch.zeros_like(x))


def test_gradient_matches_numpy_finite_difference():
    emb, trip = _hand_case()
    x = torch.tensor(emb, requires_grad=True)
    TripletLoss(0.2, "sum")(x, tuple(torch.tensor(t) for t in trip))[0].backward()
    eps, num = 1e-6, np.zeros_like(emb)
    for i in np.ndindex(emb.shape):
        e1, e2 = emb.copy(), emb.copy()
        e1[i] += eps
        e2[i] -= eps
        num[i] = (_numpy_losses(e1, trip, 0.2)[0].sum() - _numpy_losses(e2, trip, 0.2)[0].sum()) / (2 * eps)
    np.testing.assert_allclose(x.grad.numpy(), num, atol=1e-5)


@pytest.mark.parametrize("kwargs", [dict(margin=-0.1), dict(reduction="max")])
def test_bad_arguments(kwargs):
    with pytest.raises(ValueError, match="loss\\."):
        TripletLoss(**kwargs)
