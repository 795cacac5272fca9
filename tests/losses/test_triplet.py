"""TripletLoss (batch-hard and semi-hard mining on cosine similarity) and build_loss("triplet")."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from speakerprint.errors import ConfigError
from speakerprint.losses import LOSS_NAMES, LossOutput, TripletLoss, build_loss


def _at(*degrees: float) -> torch.Tensor:
    """Unit vectors in 2-D at the given angles: (N, 2)."""
    rad = torch.tensor(degrees, dtype=torch.float64).deg2rad()
    return torch.stack([rad.cos(), rad.sin()], dim=1).float()


def _cos(degrees: float) -> float:
    return math.cos(math.radians(degrees))


# Speaker 0 at 0 and 50 degrees, speaker 1 at 80 and -60 degrees: A, B, C, D.
_EMB = _at(0.0, 50.0, 80.0, -60.0)
_LABELS = torch.tensor([0, 0, 1, 1])


def test_batch_hard_on_a_hand_computed_case():
    m = 0.2
    out = TripletLoss(margin=m, mining="batch_hard")(_EMB, _LABELS)
    assert isinstance(out, LossOutput)
    # anchor: hardest negative - its only positive + margin
    expected = [
        _cos(60) - _cos(50) + m,  # A: D is the most similar negative
        _cos(30) - _cos(50) + m,  # B: C
        _cos(30) - _cos(140) + m,  # C: B
        _cos(60) - _cos(140) + m,  # D: A
    ]
    assert out.loss.item() == pytest.approx(sum(max(e, 0.0) for e in expected) / 4, abs=1e-6)
    assert out.loss.shape == () and out.logits.shape == (4, 4)
    assert out.logits.dtype == torch.float32
    torch.testing.assert_close(out.logits, _EMB @ _EMB.T)
    # Only A's positive beats all of A's negatives (0.643 > 0.5).
    assert out.accuracy.item() == pytest.approx(0.25)
    assert not out.accuracy.requires_grad


def test_semi_hard_on_a_hand_computed_case():
    m = 0.2
    out = TripletLoss(margin=m, mining="semi_hard")(_EMB, _LABELS)
    expected = [
        _cos(60) - _cos(50) + m,  # (A, B): D (0.5) is the most similar negative below 0.643
        _cos(110) - _cos(50) + m,  # (B, A): D (-0.34), not C (0.87) that batch-hard takes
        _cos(30) - _cos(140) + m,  # (C, D): no negative below -0.77, falls back to B
        _cos(60) - _cos(140) + m,  # (D, C): falls back to A
    ]
    assert expected[1] < 0  # the semi-hard pair (B, A) is satisfied
    assert out.loss.item() == pytest.approx(sum(max(e, 0.0) for e in expected) / 4, abs=1e-6)
    assert out.accuracy.item() == pytest.approx(0.25)


def test_semi_hard_and_batch_hard_pick_different_negatives():
    # Anchor at 0, positive at 40 (s_ap = 0.77). Negatives (one per speaker, never anchors) at
    # 50 (0.64: semi-hard), 20 (0.94: hardest) and 150 (easy).
    emb = _at(0.0, 40.0, 50.0, 20.0, 150.0).requires_grad_()
    labels = torch.tensor([0, 0, 1, 2, 3])
    TripletLoss(margin=0.2, mining="semi_hard")(emb, labels).loss.backward()
    grad_norm = emb.grad.norm(dim=1)
    # Only (anchor, positive, 50) is active; the positive's semi-hard negative (150) is satisfied.
    assert grad_norm[2] > 0 and grad_norm[3] == 0 and grad_norm[4] == 0

    emb.grad = None
    TripletLoss(margin=0.2, mining="batch_hard")(emb, labels).loss.backward()
    assert emb.grad.norm(dim=1)[3] > 0  # the anchor's hardest negative (20) now gets gradient


@pytest.mark.parametrize("mining", ["batch_hard", "semi_hard"])
def test_zero_loss_and_full_accuracy_when_speakers_are_separated_beyond_the_margin(mining):
    emb = _at(-10.0, 0.0, 10.0, 170.0, 180.0, 190.0)  # s_ap >= cos(20), s_an <= cos(160)
    labels = torch.tensor([0, 0, 0, 1, 1, 1])
    out = TripletLoss(margin=0.5, mining=mining)(emb, labels)
    assert out.loss.item() == 0.0
    assert out.accuracy.item() == 1.0


@pytest.mark.parametrize("mining", ["batch_hard", "semi_hard"])
def test_accuracy_is_zero_on_an_interleaved_batch(mining):
    # Each speaker's two items are orthogonal, and each item has a negative at 45 degrees.
    out = TripletLoss(mining=mining)(_at(0.0, 90.0, 45.0, 135.0), torch.tensor([0, 0, 1, 1]))
    assert out.accuracy.item() == 0.0
    assert out.loss.item() > 0


@pytest.mark.parametrize("mining", ["batch_hard", "semi_hard"])
def test_gradient_reaches_every_row(mining):
    torch.manual_seed(0)
    emb = torch.randn(8, 16, requires_grad=True)
    labels = torch.tensor([0, 0, 1, 1, 2, 2, 3, 3])
    # A margin of 2 keeps every mined triplet active: s_an - s_ap >= -2.
    TripletLoss(margin=2.0, mining=mining)(emb, labels).loss.backward()
    assert torch.isfinite(emb.grad).all()
    assert (emb.grad.norm(dim=1) > 0).all()


def _reference(sim: list[list[float]], labels: list[int], margin: float, mining: str):
    """Loss and accuracy by looping over every (anchor, positive, negative) in the batch."""
    n = len(labels)
    losses, correct = [], []
    for a in range(n):
        pos = [p for p in range(n) if p != a and labels[p] == labels[a]]
        neg = [x for x in range(n) if labels[x] != labels[a]]
        if not pos or not neg:
            continue
        hardest_neg = max(sim[a][x] for x in neg)
        correct += [sim[a][p] > hardest_neg for p in pos]
        if mining == "batch_hard":
            losses.append(max(hardest_neg - min(sim[a][p] for p in pos) + margin, 0.0))
            continue
        for p in pos:
            below = [sim[a][x] for x in neg if sim[a][x] < sim[a][p]]
            chosen = max(below) if below else hardest_neg
            losses.append(max(chosen - sim[a][p] + margin, 0.0))
    return sum(losses) / len(losses), sum(correct) / len(correct)


@pytest.mark.parametrize("mining", ["batch_hard", "semi_hard"])
@pytest.mark.parametrize("seed", range(10))
def test_matches_a_loop_over_all_triplets(mining, seed):
    gen = torch.Generator().manual_seed(seed)
    batch_size = int(torch.randint(4, 16, (1,), generator=gen))
    # Two speakers with two items, then any speakers (some singletons, which are never anchors).
    labels = torch.cat([torch.tensor([0, 0, 1, 1]), torch.randint(0, 6, (batch_size - 4,))])
    labels = labels[torch.randperm(batch_size, generator=gen)]
    emb = torch.randn(batch_size, 5, generator=gen) * 3.0
    margin = float(torch.rand(1, generator=gen)) * 0.5
    out = TripletLoss(margin=margin, mining=mining)(emb, labels)

    reference_sim = F.cosine_similarity(emb.double()[:, None], emb.double()[None, :], dim=-1)
    torch.testing.assert_close(out.logits.double(), reference_sim, atol=1e-6, rtol=0)
    loss, accuracy = _reference(out.logits.tolist(), labels.tolist(), margin, mining)
    assert out.loss.item() == pytest.approx(loss, abs=1e-6)
    assert out.accuracy.item() == pytest.approx(accuracy)


def test_runs_in_fp32_under_autocast():
    emb = torch.randn(6, 8).bfloat16()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = TripletLoss()(emb, torch.tensor([0, 0, 1, 1, 2, 2]))
    assert out.logits.dtype == torch.float32 and out.loss.dtype == torch.float32


@pytest.mark.parametrize("labels", [[0, 1, 2, 3], [5, 5, 5, 5]])
def test_a_batch_without_valid_anchors_asks_for_the_speaker_balanced_sampler(labels):
    with pytest.raises(ValueError, match="speaker_balanced"):
        TripletLoss()(torch.randn(4, 8), torch.tensor(labels))


def test_shape_mismatch_is_an_error():
    with pytest.raises(ValueError, match="labels"):
        TripletLoss()(torch.randn(4, 8), torch.tensor([0, 0, 1]))


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"mining": "hardest"}, "batch_hard, semi_hard"),
        ({"margin": -0.1}, ">= 0"),
        ({"margin": float("nan")}, ">= 0"),
        ({"margin": "0.1"}, "number"),
    ],
)
def test_bad_config_is_a_config_error(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        TripletLoss(**kwargs)


def test_build_loss_triplet():
    assert "triplet" in LOSS_NAMES
    loss_fn = build_loss("triplet", embed_dim=16, num_classes=7, margin=0.3, mining="semi_hard")
    assert isinstance(loss_fn, TripletLoss)
    assert loss_fn.margin == 0.3 and loss_fn.mining == "semi_hard"
    assert list(loss_fn.parameters()) == []
    assert build_loss("triplet", embed_dim=16, num_classes=7).mining == "batch_hard"
    with pytest.raises(ConfigError):
        build_loss("triplet", embed_dim=16, num_classes=7, mining="random")
