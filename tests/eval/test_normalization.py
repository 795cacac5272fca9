"""Tests of speakerprint.eval.normalization: hand-computed z/t-norm, an independent per-trial
reference for as-norm, synthetic speakers on which normalisation must help, and errors."""

from __future__ import annotations

import math

import numpy as np
import pytest

import speakerprint.eval.normalization as normalization
from speakerprint.data.manifest import Utterance
from speakerprint.data.trials import Trial
from speakerprint.eval import (
    NORMALIZATION_METHODS,
    asnorm,
    cohort_from_embeddings,
    cohort_from_manifest,
    compute_eer,
    normalize_scores,
    normalize_scores_by_index,
    snorm,
    tnorm,
    znorm,
)

# Cosines of these cohort rows with [1, 0] are 0, 0.6 and 0.8:
# mean 7/15, deviations -7/15, 2/15, 5/15, population variance (49 + 4 + 25) / 225 / 3 = 26/225,
# std sqrt(26) / 15. A raw score of 0.9 z-norms to (0.9 - 7/15) / (sqrt(26) / 15) = sqrt(26) / 4.
_COHORT = np.array([[0.0, 1.0], [0.6, 0.8], [0.8, 0.6]])
_Z_OF_09 = math.sqrt(26) / 4


def _unit(x):
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def _speakers(rng, num_speakers, utts_per_speaker, hub_direction, dim=32):
    """Embeddings of random speaker directions plus noise, and each speaker's index.

    Each speaker also leans by a random amount towards one shared direction, so some speakers
    score high against everyone: the per-speaker score offsets that normalisation removes.
    """
    directions = _unit(rng.normal(size=(num_speakers, dim)))
    lean = rng.uniform(0.0, 1.5, size=num_speakers)
    speaker = np.repeat(np.arange(num_speakers), utts_per_speaker)
    noise = 0.7 * rng.normal(size=(len(speaker), dim)) / 4
    return directions[speaker] + lean[speaker, None] * hub_direction + noise, speaker


@pytest.fixture(scope="module")
def synthetic():
    """40 evaluation speakers x 4 utterances, every pair a trial, and 200 cohort speakers."""
    rng = np.random.default_rng(0)
    hub_direction = _unit(rng.normal(size=32))
    emb, speaker = _speakers(rng, 40, 4, hub_direction)
    cohort_emb, cohort_speaker = _speakers(rng, 200, 3, hub_direction)
    cohort = cohort_from_embeddings(
        {f"c{i}": e for i, e in enumerate(cohort_emb)},
        {f"c{i}": f"spk{s}" for i, s in enumerate(cohort_speaker)},
    )
    enrol, test = np.triu_indices(len(emb), 1)
    unit = _unit(emb)
    raw = np.einsum("nd,nd->n", unit[enrol], unit[test])
    labels = (speaker[enrol] == speaker[test]).astype(int)
    return emb, enrol, test, raw, labels, cohort


def _reference_adaptive(emb, index, raw, cohort, top_k):
    # One trial at a time: cosines by explicit normalisation, a full sort, Python statistics.
    out = []
    for i, s in zip(index, raw, strict=True):
        cosines = [float(np.dot(_unit(emb[i]), _unit(c))) for c in cohort]
        top = sorted(cosines)[-top_k:]
        mean = sum(top) / len(top)
        std = math.sqrt(sum((x - mean) ** 2 for x in top) / len(top))
        out.append((s - mean) / std)
    return np.array(out)


# --- hand-computed ----------------------------------------------------------------------------


def test_znorm_hand_computed():
    assert znorm([[1.0, 0.0]], [[0.0, 1.0]], [0.9], _COHORT) == pytest.approx([_Z_OF_09])


def test_tnorm_uses_the_test_side():
    assert tnorm([[0.0, 1.0]], [[1.0, 0.0]], [0.9], _COHORT) == pytest.approx([_Z_OF_09])
    # The enrolment side [0, 1] has cosines 1, 0.8, 0.6 with the cohort: a different z-norm.
    assert znorm([[0.0, 1.0]], [[1.0, 0.0]], [0.9], _COHORT) != pytest.approx([_Z_OF_09])


def test_embeddings_and_cohort_are_length_normalised():
    scaled = znorm([[7.0, 0.0]], [[0.0, 0.1]], [0.9], 5.0 * _COHORT)
    assert scaled == pytest.approx([_Z_OF_09])


def test_snorm_is_the_mean_of_znorm_and_tnorm():
    rng = np.random.default_rng(1)
    enrol, test, cohort = rng.normal(size=(6, 8)), rng.normal(size=(6, 8)), rng.normal(size=(9, 8))
    raw = rng.normal(size=6)
    expected = (znorm(enrol, test, raw, cohort) + tnorm(enrol, test, raw, cohort)) / 2
    np.testing.assert_allclose(snorm(enrol, test, raw, cohort), expected, rtol=1e-12)


def test_asnorm_hand_computed():
    # Top 2 cosines of [1, 0] with the cohort: 0.6 and 0.8, mean 0.7, std 0.1: (0.9 - 0.7) / 0.1.
    result = asnorm([[1.0, 0.0]], [[1.0, 0.0]], [0.9], _COHORT, top_k=2)
    assert result == pytest.approx([2.0])


# --- properties on synthetic speakers ---------------------------------------------------------


def test_znorm_standardises_each_enrolments_cohort_scores(synthetic):
    emb, _, _, _, _, cohort = synthetic
    for e in emb[:5]:
        enrol = np.repeat(e[None], len(cohort), axis=0)
        raw = _unit(cohort) @ _unit(e)  # the enrolment scored against every cohort speaker
        z = znorm(enrol, cohort, raw, cohort)
        assert z.mean() == pytest.approx(0.0, abs=1e-12)
        assert z.std() == pytest.approx(1.0, abs=1e-12)
        # t-norm does the same for a test side scored against the cohort.
        t = tnorm(cohort, enrol, raw, cohort)
        assert (t.mean(), t.std()) == (pytest.approx(0.0, abs=1e-12), pytest.approx(1.0))


def test_snorm_brings_per_enrolment_impostor_scores_near_zero_mean_unit_std(synthetic):
    emb, enrol, test, raw, labels, cohort = synthetic
    normalized = normalize_scores_by_index("snorm", emb, enrol, test, raw, cohort)

    def per_utterance_stats(scores):
        means, stds = [], []
        for u in range(len(emb)):
            impostors = ((enrol == u) | (test == u)) & (labels == 0)
            means.append(scores[impostors].mean())
            stds.append(scores[impostors].std())
        return np.array(means), np.array(stds)

    raw_means, raw_stds = per_utterance_stats(raw)
    means, stds = per_utterance_stats(normalized)
    # The cohort is drawn like the impostors, so their normalised scores are roughly standard.
    assert abs(means.mean()) < 0.5
    assert 0.7 < stds.mean() < 1.2
    # And the utterances' impostor distributions line up: their offsets shrink relative to
    # their spread, which is what lets one threshold serve every speaker.
    assert means.std() / stds.mean() < 0.6 * raw_means.std() / raw_stds.mean()


@pytest.mark.parametrize(("method", "top_k"), [("snorm", None), ("asnorm", 50), ("asnorm", 200)])
def test_normalisation_does_not_worsen_eer(synthetic, method, top_k):
    emb, enrol, test, raw, labels, cohort = synthetic
    normalized = normalize_scores_by_index(method, emb, enrol, test, raw, cohort, top_k=top_k)
    raw_eer = compute_eer(raw, labels).eer
    assert compute_eer(normalized, labels).eer <= raw_eer
    assert raw_eer > 0.05  # there was something to fix


def test_asnorm_with_top_k_equal_to_cohort_size_is_snorm(synthetic):
    emb, enrol, test, raw, _, cohort = synthetic
    args = (emb, enrol[:500], test[:500], raw[:500], cohort)
    np.testing.assert_allclose(
        normalize_scores_by_index("asnorm", *args, top_k=len(cohort)),
        normalize_scores_by_index("snorm", *args),
        rtol=0,
        atol=1e-12,
    )
    np.testing.assert_array_equal(
        normalize_scores_by_index("asnorm", *args), normalize_scores_by_index("snorm", *args)
    )


@pytest.mark.parametrize("top_k", [2, 7, 40])
def test_asnorm_matches_a_per_trial_reference(synthetic, top_k):
    emb, enrol, test, raw, _, cohort = synthetic
    cohort = cohort[:40]
    enrol, test, raw = enrol[::997], test[::997], raw[::997]  # a spread of 13 trials
    expected = (
        _reference_adaptive(emb, enrol, raw, cohort, top_k)
        + _reference_adaptive(emb, test, raw, cohort, top_k)
    ) / 2
    result = normalize_scores_by_index("asnorm", emb, enrol, test, raw, cohort, top_k=top_k)
    np.testing.assert_allclose(result, expected, rtol=1e-10)


def test_chunking_does_not_change_results(synthetic, monkeypatch):
    emb, enrol, test, raw, _, cohort = synthetic
    args = (emb, enrol[:300], test[:300], raw[:300], cohort)
    whole = normalize_scores_by_index("asnorm", *args, top_k=30)
    monkeypatch.setattr(normalization, "_CHUNK_ROWS", 7)
    np.testing.assert_allclose(
        normalize_scores_by_index("asnorm", *args, top_k=30), whole, rtol=0, atol=1e-12
    )


# --- the dictionary entry point ---------------------------------------------------------------


def _as_trials(emb, enrol, test, labels):
    embeddings = {f"u{i:03d}": e for i, e in enumerate(emb)}
    trials = [
        Trial(int(y), f"u{e:03d}", f"u{t:03d}") for e, t, y in zip(enrol, test, labels, strict=True)
    ]
    return embeddings, trials


@pytest.mark.parametrize("method", NORMALIZATION_METHODS)
def test_normalize_scores_equals_the_paired_functions(synthetic, method):
    emb, enrol, test, raw, labels, cohort = synthetic
    enrol, test, raw, labels = enrol[:400], test[:400], raw[:400], labels[:400]
    embeddings, trials = _as_trials(emb, enrol, test, labels)
    top_k = 25 if method == "asnorm" else None
    result = normalize_scores(method, embeddings, trials, raw, cohort, top_k=top_k)
    paired = {
        "none": lambda *a: np.asarray(a[2]),
        "znorm": znorm,
        "tnorm": tnorm,
        "snorm": snorm,
        "asnorm": lambda *a: asnorm(*a, top_k=top_k),
    }[method]
    np.testing.assert_allclose(result, paired(emb[enrol], emb[test], raw, cohort), atol=1e-12)


def test_cohort_statistics_are_computed_once_per_embedding(synthetic, monkeypatch):
    emb, enrol, test, raw, labels, cohort = synthetic
    embeddings, trials = _as_trials(emb, enrol, test, labels)
    rows_seen = []
    original = normalization._cohort_statistics

    def counting(unit_emb, unit_cohort, top_k):
        rows_seen.append(len(unit_emb))
        return original(unit_emb, unit_cohort, top_k)

    monkeypatch.setattr(normalization, "_cohort_statistics", counting)
    normalize_scores("snorm", embeddings, trials, raw, cohort)
    # 12,720 trials over 160 utterances: 160 rows of statistics, not 2 x 12,720.
    assert rows_seen == [len(emb)]


def test_empty_trial_list_gives_empty_scores():
    assert normalize_scores("snorm", {}, [], [], _COHORT).shape == (0,)


# --- cohorts ----------------------------------------------------------------------------------


def test_cohort_from_embeddings_hand_computed():
    # Speaker "b": unit([2, 0]) = [1, 0] and [0, 1] average to [1/2, 1/2] -> [1, 1] / sqrt 2.
    # Speaker "a": one utterance [0, 3] -> [0, 1]. Rows in speaker order a, b; "x" is ignored.
    embeddings = {"b1": [2.0, 0.0], "b2": [0.0, 1.0], "a1": [0.0, 3.0], "x": [5.0, 5.0]}
    cohort = cohort_from_embeddings(embeddings, {"b1": "b", "b2": "b", "a1": "a"})
    s = 1 / math.sqrt(2)
    np.testing.assert_allclose(cohort, [[0.0, 1.0], [s, s]])


def test_cohort_from_manifest_uses_each_utterances_speaker():
    utts = [
        Utterance("b1", "/b1.wav", "b", 1.0, 16000),
        Utterance("b2", "/b2.wav", "b", 1.0, 16000),
        Utterance("a1", "/a1.wav", "a", 1.0, 16000),
    ]
    embeddings = {"b1": np.array([2.0, 0.0]), "b2": np.array([0.0, 1.0]), "a1": np.array([0, 3.0])}
    np.testing.assert_array_equal(
        cohort_from_manifest(utts, embeddings),
        cohort_from_embeddings(embeddings, {"b1": "b", "b2": "b", "a1": "a"}),
    )


def test_cohort_rows_are_unit_length(synthetic):
    cohort = synthetic[-1]
    assert cohort.shape == (200, 32)
    np.testing.assert_allclose(np.linalg.norm(cohort, axis=1), 1.0)


@pytest.mark.parametrize(
    ("embeddings", "speakers", "message"),
    [
        ({}, {}, "at least one utterance"),
        ({"a": [1.0, 0.0]}, {"a": "s", "b": "s"}, "no embedding"),
        ({"a": [1.0, 0.0], "b": [1.0, 0.0, 0.0]}, {"a": "s", "b": "t"}, "one size"),
        ({"a": [1.0, float("nan")]}, {"a": "s"}, "finite"),
    ],
)
def test_cohort_errors(embeddings, speakers, message):
    with pytest.raises(ValueError, match=message):
        cohort_from_embeddings(embeddings, speakers)


# --- errors -----------------------------------------------------------------------------------


def test_unknown_method_lists_the_valid_ones():
    with pytest.raises(ValueError, match="'tznorm'.*none, znorm, tnorm, snorm, asnorm"):
        normalize_scores("tznorm", {}, [], [], _COHORT)
    with pytest.raises(ValueError, match="choose one of"):
        normalize_scores_by_index("ZNORM", np.eye(2), [0], [1], [0.5], _COHORT)


_ONE = ([[1.0, 0.0]], [[0.0, 1.0]], [0.9])


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: asnorm(*_ONE, _COHORT, top_k=1), "between 2 and the cohort size 3"),
        (lambda: asnorm(*_ONE, _COHORT, top_k=4), "between 2 and the cohort size 3"),
        (lambda: asnorm(*_ONE, _COHORT, top_k=True), "int or None"),
        (lambda: asnorm(*_ONE, _COHORT, top_k=2.0), "int or None"),
        (
            lambda: normalize_scores_by_index(
                "znorm", np.eye(2), [0], [1], [0.5], _COHORT, top_k=2
            ),
            "asnorm' only",
        ),
        (lambda: znorm([[1.0, 0.0]], [[0.0, 1.0], [1.0, 0.0]], [0.9], _COHORT), "one shape"),
        (lambda: znorm([[1.0, 0.0]], [[0.0, 1.0]], [0.9, 0.1], _COHORT), "one length"),
        (lambda: znorm([[1.0, 0.0]], [[0.0, 1.0]], [np.nan], _COHORT), "finite"),
        (lambda: znorm([1.0, 0.0], [0.0, 1.0], [0.9], _COHORT), "2-D"),
        (lambda: znorm(*_ONE, _COHORT[:1]), "at least 2 rows"),
        (lambda: znorm(*_ONE, np.ones((3, 3))), "dimension 2 but the cohort has 3"),
        (lambda: znorm([[0.0, 0.0]], [[0.0, 1.0]], [0.9], _COHORT), "standard deviation is 0"),
        (lambda: znorm(*_ONE, [[1.0, 0.0], [2.0, 0.0]]), "standard deviation is 0"),
        (
            lambda: normalize_scores_by_index("snorm", np.eye(2), [0], [2], [0.5], _COHORT),
            r"test_index must lie in \[0, 2\)",
        ),
        (
            lambda: normalize_scores_by_index("snorm", np.eye(2), [0.0], [1], [0.5], _COHORT),
            "integers",
        ),
        (
            lambda: normalize_scores(
                "snorm", {"a": [1.0, 0.0]}, [Trial(1, "a", "b")], [0.5], _COHORT
            ),
            "1 trial utterance.*'b'",
        ),
    ],
)
def test_bad_inputs_raise_value_error(call, message):
    with pytest.raises(ValueError, match=message):
        call()
