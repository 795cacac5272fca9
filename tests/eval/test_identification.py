"""Tests of speakerprint.eval.identification: hand-computed closed-set and open-set cases, the
inclusive bias that leave-one-out removes, and a per-utterance loop as an independent reference."""

from __future__ import annotations

import math

import numpy as np
import pytest

from speakerprint.eval import (
    closed_set_identification,
    open_set_identification,
    speaker_means,
)


def _angle(degrees: float) -> list[float]:
    return [math.cos(math.radians(degrees)), math.sin(math.radians(degrees))]


def test_speaker_means_average_unit_embeddings_then_normalise():
    names, means = speaker_means([[3.0, 0.0], [0.0, 0.5], [0.0, -2.0]], ["a", "a", "b"])
    assert names.tolist() == ["a", "b"]
    np.testing.assert_allclose(means, [[1 / math.sqrt(2), 1 / math.sqrt(2)], [0.0, -1.0]])


def test_inclusive_flatters_and_leave_one_out_does_not():
    # Speaker a: utterances at 0 and 100 degrees (mean at 50); b: at 60 and 75 (mean at 67.5).
    # Inclusive: a@0 -> a (50 away) vs b (67.5): right. a@100 -> a (50) vs b (32.5): wrong.
    #   b@60 -> b (7.5) vs a (10): right. b@75 -> b (7.5) vs a (25): right.
    # Leave-one-out, the own mean is the speaker's other utterance:
    #   a@0 -> a at 100 (100 away) vs b (67.5): wrong. a@100 -> a at 0 (100) vs b (32.5): wrong.
    #   b@60 -> b at 75 (15 away) vs a (10): wrong. b@75 -> b at 60 (15) vs a (25): right.
    emb = np.array([_angle(0), _angle(100), _angle(60), _angle(75)])
    speakers = ["a", "a", "b", "b"]
    inclusive = closed_set_identification(emb, speakers, mode="inclusive")
    assert inclusive.top1_accuracy == pytest.approx(3 / 4)
    assert inclusive.top5_accuracy == 1.0  # two speakers: always in the top five
    assert (inclusive.num_tested, inclusive.num_speakers, inclusive.num_skipped_speakers) == (
        4,
        2,
        0,
    )
    loo = closed_set_identification(emb, speakers, mode="leave_one_out")
    assert loo.top1_accuracy == pytest.approx(1 / 4)
    assert loo.mode == "leave_one_out" and loo.num_tested == 4


def test_ties_count_against_the_true_speaker():
    # a and b have the same single direction: each of their utterances ties with the other
    # speaker, exactly (every value here is exact in floating point), so ranks second.
    emb = np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    result = closed_set_identification(emb, ["a", "b", "c"], mode="inclusive")
    assert result.top1_accuracy == pytest.approx(1 / 3)
    assert result.top5_accuracy == 1.0


def test_leave_one_out_skips_and_counts_single_utterance_speakers_but_keeps_them_enrolled():
    # c has one utterance (at 0 degrees): not tested leave-one-out, still a candidate. a's
    # utterance at 10 degrees has its own mean at 30 (20 away) but c at 0 (10 away): wrong.
    emb = np.array([_angle(10), _angle(30), _angle(90), _angle(95), _angle(0)])
    speakers = ["a", "a", "b", "b", "c"]
    loo = closed_set_identification(emb, speakers, mode="leave_one_out")
    assert (loo.num_tested, loo.num_speakers, loo.num_skipped_speakers) == (4, 3, 1)
    assert loo.top1_accuracy == pytest.approx(3 / 4)  # a@10 -> c; a@30, b@90, b@95 right
    inclusive = closed_set_identification(emb, speakers, mode="inclusive")
    assert inclusive.num_tested == 5 and inclusive.num_skipped_speakers == 0


def test_top5_counts_ranks_up_to_five():
    # Eight speakers s0..s7 with two utterances each exactly at 0, 10, ..., 70 degrees, and one
    # more utterance of s0 at 65 degrees. Leave-one-out:
    #   s1..s7 (14 utterances): the own mean is the identical twin: rank 1.
    #   s0@65: its own mean is at 0 (65 away); s1..s7 are all nearer: rank 8, outside the top 5.
    #   s0@0 (two): its own mean is unit(0) + unit(65), at 32.5 degrees; s1, s2, s3 (10, 20, 30
    #   away) are nearer, s4 (40) is not: rank 4, in the top 5 but not first.
    emb = [_angle(10.0 * k) for k in range(8) for _ in range(2)] + [_angle(65)]
    speakers = [f"s{k}" for k in range(8) for _ in range(2)] + ["s0"]
    result = closed_set_identification(np.array(emb), speakers, mode="leave_one_out")
    assert result.num_tested == 17 and result.num_speakers == 8
    assert result.top1_accuracy == pytest.approx(14 / 17)
    assert result.top5_accuracy == pytest.approx(16 / 17)


def _reference(emb, speakers, mode):
    """One Python loop per utterance: build every speaker's mean, leave the utterance out of its
    own when asked, rank the true speaker (ties against)."""
    emb = [np.asarray(e, dtype=float) / np.linalg.norm(e) for e in emb]
    names = sorted(set(speakers))
    ranks = []
    for i, e in enumerate(emb):
        scores = {}
        for name in names:
            members = [
                emb[j]
                for j in range(len(emb))
                if speakers[j] == name and not (mode == "leave_one_out" and j == i)
            ]
            if not members:
                break
            mean = np.sum(members, axis=0)
            scores[name] = float(e @ (mean / np.linalg.norm(mean)))
        else:
            own = scores[speakers[i]]
            ranks.append(1 + sum(s >= own for n, s in scores.items() if n != speakers[i]))
    ranks = np.array(ranks)
    return (ranks <= 1).mean(), (ranks <= 5).mean(), len(ranks)


@pytest.mark.parametrize("mode", ["inclusive", "leave_one_out"])
def test_matches_a_per_utterance_loop(mode):
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(12, 6))
    counts = rng.integers(1, 5, size=12)
    speakers = [f"s{k}" for k in range(12) for _ in range(counts[k])]
    emb = np.concatenate([centres[k] + 0.9 * rng.normal(size=(counts[k], 6)) for k in range(12)])
    top1, top5, tested = _reference(emb, speakers, mode)
    result = closed_set_identification(emb, speakers, mode=mode)
    assert result.top1_accuracy == pytest.approx(top1)
    assert result.top5_accuracy == pytest.approx(top5)
    assert result.num_tested == tested
    assert 0 < result.top1_accuracy < 1  # the case is not trivial


def test_embedding_length_does_not_matter():
    rng = np.random.default_rng(1)
    emb = rng.normal(size=(20, 4))
    speakers = [f"s{k % 5}" for k in range(20)]
    scaled = emb * rng.uniform(0.1, 10.0, size=(20, 1))
    for mode in ("inclusive", "leave_one_out"):
        assert closed_set_identification(emb, speakers, mode=mode) == closed_set_identification(
            scaled, speakers, mode=mode
        )


def test_closed_set_errors():
    with pytest.raises(ValueError, match="mode"):
        closed_set_identification([[1.0, 0.0], [0.0, 1.0]], ["a", "b"], mode="open")
    with pytest.raises(ValueError, match="at least 2 speakers"):
        closed_set_identification([[1.0, 0.0], [0.0, 1.0]], ["a", "a"])
    with pytest.raises(ValueError, match="two utterances"):
        closed_set_identification([[1.0, 0.0], [0.0, 1.0]], ["a", "b"], mode="leave_one_out")
    with pytest.raises(ValueError, match="speaker labels"):
        closed_set_identification([[1.0, 0.0], [0.0, 1.0]], ["a"])
    with pytest.raises(ValueError, match="finite"):
        closed_set_identification([[np.nan, 0.0], [0.0, 1.0]], ["a", "b"])


def test_open_set_rates_at_a_threshold():
    # Enrolled: a at 0 degrees, b at 90. Known tests: a@20 (cos .940 to a), a@80 (nearer b:
    # cos 10 = .985, a misidentification), b@50 (cos 40 = .766 to b, .643 to a).
    # Held-out x: x@45 (cos 45 = .707 to both), x@180 (cos -1 and 0: best 0).
    enrol = np.array([_angle(0), _angle(90)])
    test = np.array([_angle(20), _angle(80), _angle(50), _angle(45), _angle(180)])
    test_speakers = ["a", "a", "b", "x", "x"]
    r = open_set_identification(enrol, ["a", "b"], test, test_speakers, threshold=0.8)
    # a@20 accepted right; a@80 accepted as b (wrong); b@50 rejected (.766 < .8); x@45 rejected.
    assert r.correct_accept_rate == pytest.approx(1 / 3)
    assert r.misidentification_rate == pytest.approx(1 / 3)
    assert r.false_accept_rate == 0.0
    assert (r.num_known, r.num_unknown, r.num_speakers) == (3, 2, 2)
    r = open_set_identification(enrol, ["a", "b"], test, test_speakers, threshold=0.7)
    # Now b@50 (.766) and x@45 (.707) are accepted too.
    assert r.correct_accept_rate == pytest.approx(2 / 3)
    assert r.false_accept_rate == pytest.approx(1 / 2)
    assert r.to_dict()["threshold"] == 0.7


def test_open_set_needs_known_and_unknown_test_speakers():
    enrol = np.array([_angle(0), _angle(90)])
    with pytest.raises(ValueError, match="held-out"):
        open_set_identification(enrol, ["a", "b"], enrol, ["a", "b"], threshold=0.5)
    with pytest.raises(ValueError, match="dimension"):
        open_set_identification(enrol, ["a", "b"], [[1.0, 0.0, 0.0]], ["x"], threshold=0.5)
