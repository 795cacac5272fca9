"""The numbers behind the figures, each against an independent computation."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from speakerprint.losses.margins import AdditiveAngularMargin
from speakerprint.viz.aam_scale import aam_loss_lower_bound
from speakerprint.viz.attention import channel_similarity
from speakerprint.viz.class_weights import cosine_matrix, mean_off_diagonal
from speakerprint.viz.dimension import cosine_density, random_cosines
from speakerprint.viz.enrollment_bias import enrollment_bias, random_speaker_embeddings
from speakerprint.viz.projection import project, select_utterances, speaker_silhouette


def _numerical_aam_minimum(num_classes: int, scale: float, margin: float, *, seed: int) -> float:
    """Minimise the mean AAM loss directly over unit class weights and unit embeddings (two
    examples per class, D = C dimensions) by Adam from a random start; the lowest loss seen."""
    torch.manual_seed(seed)
    head = AdditiveAngularMargin(margin=margin, scale=scale)
    labels = torch.arange(num_classes).repeat(2)
    weights = torch.randn(num_classes, num_classes, requires_grad=True)
    emb = torch.randn(2 * num_classes, num_classes, requires_grad=True)
    opt = torch.optim.Adam([weights, emb], lr=0.08)
    best = float("inf")
    for _ in range(250):
        cos = F.normalize(emb, dim=1) @ F.normalize(weights, dim=1).T
        loss = F.cross_entropy(head(cos, labels), labels)
        best = min(best, loss.item())
        opt.zero_grad()
        loss.backward()
        opt.step()
    return best


@pytest.mark.parametrize("num_classes,scale,margin", [(3, 2.0, 0.2), (5, 1.5, 0.0)])
def test_aam_bound_is_the_numerical_minimum(num_classes, scale, margin):
    bound = float(aam_loss_lower_bound(scale, num_classes, margin=margin))
    found = _numerical_aam_minimum(num_classes, scale, margin, seed=num_classes)
    # Never below the bound (up to float32), and the optimiser reaches it: it is the minimum.
    # The margin's sin clamp keeps the reachable loss a hair above the exact bound.
    assert found >= bound - 1e-5
    assert found <= bound * 1.02 + 1e-4


def test_aam_bound_shape_and_monotonicity():
    scales = np.array([1.0, 16.0, 30.0])
    small, large = aam_loss_lower_bound(scales, 10), aam_loss_lower_bound(scales, 1000)
    assert small.shape == (3,)
    assert np.all(np.diff(small) < 0)  # falls as s grows
    assert np.all(large > small)  # rises with the number of classes
    # Against the formula written out, where it does not underflow.
    expected = np.log1p(999 * np.exp(-scales * (np.cos(0.2) + 1 / 999)))
    np.testing.assert_allclose(large, expected, rtol=1e-12)
    with pytest.raises(ValueError):
        aam_loss_lower_bound(1.0, 1)


def test_channel_similarity_one_for_identical_channels():
    rng = np.random.default_rng(0)
    curve = rng.random(50)
    same = channel_similarity(np.tile(curve / curve.sum(), (8, 1)))
    assert same.mean_cosine == pytest.approx(1.0)
    assert same.mean_correlation == pytest.approx(1.0)
    assert same.median_peak_ratio == pytest.approx(50 * curve.max() / curve.sum())


def test_channel_similarity_matches_pairwise_loops_and_drops_for_different_channels():
    rng = np.random.default_rng(1)
    alpha = rng.dirichlet(np.full(30, 0.3), size=6)  # (6, 30), peaky, different channels
    result = channel_similarity(alpha)
    cosines, correlations = [], []
    for i in range(6):
        for j in range(i + 1, 6):
            a, b = alpha[i], alpha[j]
            cosines.append(a @ b / np.linalg.norm(a) / np.linalg.norm(b))
            correlations.append(np.corrcoef(a, b)[0, 1])
    assert result.mean_cosine == pytest.approx(np.mean(cosines))
    assert result.mean_correlation == pytest.approx(np.mean(correlations))
    assert result.mean_cosine < 0.8
    uniform = channel_similarity(np.full((4, 10), 0.1))
    assert uniform.mean_cosine == pytest.approx(1.0) and np.isnan(uniform.mean_correlation)
    assert uniform.median_peak_ratio == pytest.approx(1.0)


def test_enrollment_bias_positive_for_few_utterances_and_shrinking():
    gaps = [
        enrollment_bias(*random_speaker_embeddings(100, n, 192, seed=n)).gap for n in (2, 5, 20)
    ]
    assert gaps[0] > 0.5  # about 1/sqrt(2)
    assert gaps[0] > gaps[1] > gaps[2] > 0
    for n, gap in zip((2, 5, 20), gaps):
        assert gap == pytest.approx(1 / np.sqrt(n), abs=0.05)


def test_enrollment_bias_against_a_loop():
    rng = np.random.default_rng(3)
    emb = rng.normal(size=(9, 4))
    speakers = ["a"] * 4 + ["b"] * 3 + ["c"] * 1 + ["b"]
    result = enrollment_bias(emb, speakers)
    unit = emb / np.linalg.norm(emb, axis=1, keepdims=True)
    inclusive, loo = [], []
    for i, spk in enumerate(speakers):
        own = [j for j, s in enumerate(speakers) if s == spk]
        if len(own) < 2:
            continue
        mean_all = unit[own].sum(axis=0)
        mean_loo = unit[[j for j in own if j != i]].sum(axis=0)
        inclusive.append(unit[i] @ mean_all / np.linalg.norm(mean_all))
        loo.append(unit[i] @ mean_loo / np.linalg.norm(mean_loo))
    np.testing.assert_allclose(result.inclusive, inclusive)
    np.testing.assert_allclose(result.leave_one_out, loo)
    assert result.num_speakers == 2 and result.utterances_per_speaker == 4.0


def test_random_cosine_spread_is_one_over_sqrt_d_and_density_integrates_to_one():
    samples = random_cosines([3, 192], 20000, seed=0)
    for dim, values in samples.items():
        assert values.std() == pytest.approx(dim**-0.5, rel=0.03)
    grid = np.linspace(-1, 1, 200001)[1:-1]
    for dim in (3, 16, 192):
        assert np.trapezoid(cosine_density(grid, dim), grid) == pytest.approx(1.0, abs=1e-3)


def test_class_weight_geometry_of_a_simplex():
    count = 6
    simplex = np.eye(count) - 1.0 / count  # rows sum to zero: the regular simplex
    matrix = cosine_matrix(simplex)
    assert mean_off_diagonal(matrix) == pytest.approx(-1 / (count - 1))
    np.testing.assert_allclose(np.diag(matrix), 1.0)


def test_speaker_silhouette_matches_scikit_learn():
    sklearn_metrics = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(4)
    emb = rng.normal(size=(40, 8)) + np.repeat(rng.normal(size=(5, 8)) * 2, 8, axis=0)
    speakers = np.repeat(list("abcde"), 8)
    expected = sklearn_metrics.silhouette_score(emb, speakers, metric="cosine")
    assert speaker_silhouette(emb, speakers) == pytest.approx(expected)
    assert speaker_silhouette(emb, ["a"] * 40) is None


def test_svd_projection_keeps_separated_clusters_apart():
    rng = np.random.default_rng(5)
    centres = rng.normal(size=(2, 32)) * 5
    emb = np.repeat(centres, 10, axis=0) + rng.normal(size=(20, 32))
    xy = project(emb, method="svd")
    assert xy.shape == (20, 2)
    first = xy[:10, 0]
    second = xy[10:, 0]
    assert first.max() < second.min() or second.max() < first.min()
    with pytest.raises(ValueError):
        project(emb, method="pca")


def test_select_utterances_caps_and_is_seeded():
    from speakerprint.data.manifest import Utterance

    utts = [Utterance(f"{s}/{i}", f"{s}{i}.wav", s, 1.0, 16000) for s in "abcdef" for i in range(9)]
    picked = select_utterances(utts, max_speakers=3, max_per_speaker=4, seed=1)
    assert len({u.speaker for u in picked}) == 3 and len(picked) == 12
    assert picked == select_utterances(utts, max_speakers=3, max_per_speaker=4, seed=1)
    assert len(select_utterances(utts)) == len(utts)


@pytest.mark.slow  # numba compiles UMAP on first use: tens of seconds on a shared CPU
def test_umap_projection_runs_and_is_seeded():
    pytest.importorskip("umap")
    rng = np.random.default_rng(6)
    emb = np.repeat(rng.normal(size=(3, 16)) * 3, 8, axis=0) + rng.normal(size=(24, 16))
    xy = project(emb, method="umap", seed=0)
    assert xy.shape == (24, 2) and np.isfinite(xy).all()
    np.testing.assert_allclose(project(emb, method="umap", seed=0), xy)
