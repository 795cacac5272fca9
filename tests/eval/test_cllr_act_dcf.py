"""Tests of actual DCF, Cllr and minCllr (speakerprint.eval.metrics): hand-computed cases,
independent slow references, and the properties that tie them to minDCF and to calibration."""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from speakerprint.eval import (
    ActDcfResult,
    bayes_threshold,
    compute_act_dcf,
    compute_cllr,
    compute_min_cllr,
    compute_min_dcf,
)

# --- independent references: Python loops over trials, exact fractions where it matters -----


def _reference_act_dcf(scores, labels, threshold, p_target, c_miss=1.0, c_fa=1.0):
    targets = [s for s, y in zip(scores, labels, strict=True) if y == 1]
    nontargets = [s for s, y in zip(scores, labels, strict=True) if y == 0]
    miss = Fraction(sum(1 for s in targets if not s >= threshold), len(targets))
    false_accept = Fraction(sum(1 for s in nontargets if s >= threshold), len(nontargets))
    p, cm, cf = Fraction(p_target), Fraction(c_miss), Fraction(c_fa)
    return float((cm * p * miss + cf * (1 - p) * false_accept) / min(cm * p, cf * (1 - p)))


def _reference_cllr(llrs, labels):
    def cost(x):  # log2(1 + e^x), without overflow for large x
        return (x + math.log1p(math.exp(-x)) if x > 0 else math.log1p(math.exp(x))) / math.log(2)

    target = [cost(-x) for x, y in zip(llrs, labels, strict=True) if y == 1]
    nontarget = [cost(x) for x, y in zip(llrs, labels, strict=True) if y == 0]
    return (sum(target) / len(target) + sum(nontarget) / len(nontarget)) / 2


def _reference_min_cllr(scores, labels):
    # Naive PAV: one block per distinct score, then merge the first adjacent pair whose target
    # fractions decrease (or are equal), and start again, until none is left. O(N^2), exact.
    blocks = []  # [targets, size, [trial indices]]
    for value in sorted(set(scores)):
        members = [i for i, s in enumerate(scores) if s == value]
        blocks.append([sum(labels[i] for i in members), len(members), members])
    merged = True
    while merged:
        merged = False
        for k in range(len(blocks) - 1):
            (t1, n1, m1), (t2, n2, m2) = blocks[k], blocks[k + 1]
            if Fraction(t1, n1) >= Fraction(t2, n2):
                blocks[k : k + 2] = [[t1 + t2, n1 + n2, m1 + m2]]
                merged = True
                break
    num_target = sum(labels)
    num_nontarget = len(labels) - num_target
    total = {1: 0.0, 0: 0.0}
    for targets, size, members in blocks:
        posterior = Fraction(targets, size)
        for i in members:
            y = labels[i]
            # -log2 of the posterior of the true class, re-weighted from the trial list's prior
            # to 1/2: cost = log2(1 + (odds of the wrong class) / (prior odds of the wrong class)).
            p_right = posterior if y == 1 else 1 - posterior
            if p_right == 1:
                continue
            prior_right = Fraction(num_target if y == 1 else num_nontarget, len(labels))
            wrong_over_right = (1 - p_right) / p_right * prior_right / (1 - prior_right)
            total[y] += math.log2(1 + wrong_over_right)
    return (total[1] / num_target + total[0] / num_nontarget) / 2


def _random_trials(seed, size=400, separation=1.5):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, size=size)
    labels[:2] = [0, 1]
    return rng.normal(size=size) + separation * labels, labels


_TRIALS = st.lists(
    st.tuples(st.integers(min_value=0, max_value=5), st.booleans()), min_size=2, max_size=30
).filter(lambda rows: len({y for _, y in rows}) == 2)


# --- actual DCF -------------------------------------------------------------------------------


def test_act_dcf_hand_computed():
    # targets 0.5 0.7 0.9, non-targets 0.1 0.6; threshold 0.6 accepts 0.6 0.7 0.9:
    # miss 1/3 (0.5), false accepts 1/2 (0.6). p_target 0.25: normaliser min(0.25, 0.75) = 0.25,
    # DCF = (0.25 * 1/3 + 0.75 * 1/2) / 0.25 = 1/3 + 3/2 = 11/6.
    result = compute_act_dcf([0.5, 0.7, 0.9, 0.1, 0.6], [1, 1, 1, 0, 0], 0.6, p_target=0.25)
    assert result == ActDcfResult(
        act_dcf=pytest.approx(11 / 6),
        threshold=0.6,
        miss_rate=pytest.approx(1 / 3),
        false_accept_rate=0.5,
        p_target=0.25,
        c_miss=1.0,
        c_fa=1.0,
    )


def test_act_dcf_of_trivial_thresholds_is_their_normalised_cost():
    scores, labels = _random_trials(0)
    # Accept everything: cost (1 - p) / min(p, 1 - p) = 99 at p 0.01; reject everything: 1.
    assert compute_act_dcf(scores, labels, -np.inf).act_dcf == pytest.approx(99.0)
    assert compute_act_dcf(scores, labels, np.inf).act_dcf == pytest.approx(1.0)


@pytest.mark.parametrize("seed", range(3))
def test_act_dcf_matches_direct_counting(seed):
    scores, labels = _random_trials(seed, size=200)
    rng = np.random.default_rng(seed + 10)
    thresholds = np.concatenate([scores[:20], rng.normal(size=20), [-np.inf, np.inf]])
    for threshold in thresholds:
        for p_target, c_miss, c_fa in ((0.01, 1.0, 1.0), (0.5, 1.0, 1.0), (0.05, 10.0, 2.0)):
            result = compute_act_dcf(
                scores, labels, threshold, p_target=p_target, c_miss=c_miss, c_fa=c_fa
            )
            expected = _reference_act_dcf(scores, labels, threshold, p_target, c_miss, c_fa)
            assert result.act_dcf == pytest.approx(expected, abs=1e-12)


@settings(max_examples=60, deadline=None)
@given(_TRIALS, st.integers(min_value=-1, max_value=6))
def test_act_dcf_matches_direct_counting_on_tied_scores(rows, threshold):
    scores = [float(s) for s, _ in rows]
    labels = [int(y) for _, y in rows]
    result = compute_act_dcf(scores, labels, threshold, p_target=0.05)
    assert result.act_dcf == pytest.approx(_reference_act_dcf(scores, labels, threshold, 0.05))


def test_act_dcf_is_never_below_min_dcf_and_equals_it_at_its_threshold():
    scores, labels = _random_trials(1, size=1000)
    for p_target in (0.01, 0.05, 0.5):
        best = compute_min_dcf(scores, labels, p_target=p_target)
        at_best = compute_act_dcf(scores, labels, best.threshold, p_target=p_target)
        assert at_best.act_dcf == pytest.approx(best.min_dcf, abs=1e-12)
        for threshold in np.linspace(-3, 4, 50):
            act = compute_act_dcf(scores, labels, threshold, p_target=p_target).act_dcf
            assert act >= best.min_dcf - 1e-12


def test_bayes_threshold_closed_form():
    assert bayes_threshold(0.5) == 0.0
    assert bayes_threshold(0.01) == pytest.approx(math.log(99))
    # Costs and prior enter only through the effective prior's log odds.
    assert bayes_threshold(0.5, c_miss=10.0) == pytest.approx(-math.log(10))
    assert bayes_threshold(0.01, c_miss=99.0) == pytest.approx(0.0, abs=1e-12)


def test_act_dcf_at_bayes_threshold_of_true_llrs_is_near_min_dcf():
    # Two unit Gaussians at -1 and +1: the true LLR of a score is 2 * score.
    rng = np.random.default_rng(5)
    labels = np.repeat([1, 0], 20000)
    llrs = 2.0 * (rng.normal(size=40000) + np.where(labels == 1, 1.0, -1.0))
    for p_target in (0.05, 0.5):
        act = compute_act_dcf(llrs, labels, bayes_threshold(p_target), p_target=p_target)
        best = compute_min_dcf(llrs, labels, p_target=p_target)
        assert act.act_dcf == pytest.approx(best.min_dcf, abs=0.02)


# --- Cllr -------------------------------------------------------------------------------------


def test_cllr_of_uninformative_llrs_is_one():
    # LLR 0 everywhere: every trial costs log2(1 + e^0) = 1 bit.
    assert compute_cllr([0.0] * 5, [1, 0, 0, 1, 0]) == 1.0


def test_cllr_hand_computed():
    # Target at LLR log 3 costs log2(1 + 1/3); non-target at -log 3 costs log2(1 + 1/3).
    # Cllr = log2(4/3) ~ 0.415. A target at -log 3 instead costs log2(1 + 3) = 2 bits:
    # Cllr = (2 + log2(4/3)) / 2.
    assert compute_cllr([math.log(3), -math.log(3)], [1, 0]) == pytest.approx(math.log2(4 / 3))
    assert compute_cllr([-math.log(3), -math.log(3)], [1, 0]) == pytest.approx(
        (2 + math.log2(4 / 3)) / 2
    )


def test_cllr_of_infinite_llrs():
    # Right-side infinities cost exactly 0 (no NaN); a wrong-side one makes the cost infinite.
    assert compute_cllr([np.inf, -np.inf], [1, 0]) == 0.0
    assert compute_cllr([np.inf, np.inf], [1, 0]) == np.inf
    with pytest.raises(ValueError, match="NaN"):
        compute_cllr([np.nan, 0.0], [1, 0])


def test_cllr_does_not_depend_on_class_proportions():
    # Repeating every target trial leaves the per-class means, hence Cllr, unchanged.
    llrs, labels = _random_trials(2, size=300)
    repeated = np.concatenate([llrs, llrs[labels == 1]])
    repeated_labels = np.concatenate([labels, labels[labels == 1]])
    assert compute_cllr(repeated, repeated_labels) == pytest.approx(compute_cllr(llrs, labels))


@pytest.mark.parametrize("seed", range(3))
def test_cllr_matches_reference(seed):
    llrs, labels = _random_trials(seed, size=300)
    llrs = 8.0 * llrs  # large LLRs test the overflow-free form
    assert compute_cllr(llrs, labels) == pytest.approx(
        _reference_cllr(llrs.tolist(), labels.tolist()), rel=1e-12
    )


# --- minCllr ----------------------------------------------------------------------------------


def test_min_cllr_of_separated_classes_is_zero():
    assert compute_min_cllr([0.1, 0.2, 0.3, 0.8, 0.9], [0, 0, 0, 1, 1]) == 0.0


def test_min_cllr_of_constant_scores_is_one():
    # One block holding every trial: posterior = prior, so the LLR is 0 and each trial costs 1.
    assert compute_min_cllr([0.5] * 7, [1, 0, 0, 1, 0, 0, 0]) == pytest.approx(1.0)


def test_min_cllr_balanced_worked_example():
    # scores 1 2 3 4 with labels 0 1 0 1. PAV on the labels in score order 0, 1, 0, 1:
    # [0] [1] then 0 pools with [1] into [1 0] = 1/2, which is above [0]; then [1]:
    # blocks 0 | 1/2 1/2 | 1. Prior odds 2/2 = 1, so the LLRs are -inf, 0, 0, +inf.
    # Targets cost 1 bit (score 2) and 0 (score 4): mean 1/2; non-targets 0 and 1: mean 1/2.
    # minCllr = (1/2 + 1/2) / 2 = 1/2.
    assert compute_min_cllr([1.0, 2.0, 3.0, 4.0], [0, 1, 0, 1]) == pytest.approx(0.5)


def test_min_cllr_subtracts_the_prior_of_the_trials():
    # scores 1..5 with labels 0 1 0 1 1: blocks 0 | 1/2 1/2 | 1 | 1. 3 targets, 2 non-targets:
    # prior log odds log(3/2), so the middle block's LLR is log(1) - log(3/2) = -log 1.5.
    # Target at 2: log2(1 + 1.5) = log2 2.5; mean over 3 targets log2(2.5) / 3.
    # Non-target at 3: log2(1 + 1/1.5) = log2(5/3); mean over 2 non-targets log2(5/3) / 2.
    expected = (math.log2(2.5) / 3 + math.log2(5 / 3) / 2) / 2  # ~0.40456
    assert compute_min_cllr([1.0, 2.0, 3.0, 4.0, 5.0], [0, 1, 0, 1, 1]) == pytest.approx(expected)


def test_min_cllr_pools_tied_scores_whatever_their_order():
    # Two tied blocks of one target and one non-target each, in either order within the tie.
    a = compute_min_cllr([1.0, 1.0, 2.0, 2.0], [1, 0, 1, 0])
    b = compute_min_cllr([1.0, 1.0, 2.0, 2.0], [0, 1, 0, 1])
    assert a == b == pytest.approx(1.0)


@settings(max_examples=100, deadline=None)
@given(_TRIALS)
def test_min_cllr_matches_naive_pav_on_tied_scores(rows):
    scores = [float(s) for s, _ in rows]
    labels = [int(y) for _, y in rows]
    assert compute_min_cllr(scores, labels) == pytest.approx(
        _reference_min_cllr(scores, labels), abs=1e-12
    )


@pytest.mark.parametrize("seed", range(2))
def test_min_cllr_matches_naive_pav_on_random_scores(seed):
    scores, labels = _random_trials(seed, size=150, separation=1.0)
    assert compute_min_cllr(scores, labels) == pytest.approx(
        _reference_min_cllr(scores.tolist(), labels.tolist()), abs=1e-12
    )


def test_min_cllr_is_below_cllr_of_any_monotonic_calibration():
    scores, labels = _random_trials(3, size=2000, separation=2.0)
    min_cllr = compute_min_cllr(scores, labels)
    assert 0.0 < min_cllr < 1.0
    calibrations = [
        lambda s, a=a, b=b: a * s + b for a in (0.1, 0.5, 1.0, 2.0, 3.0, 10.0) for b in (-2, 0, 2)
    ]
    calibrations += [np.tanh, lambda s: 3.0 * np.tanh(s) - 1.0, lambda s: s**3, np.exp]
    for calibrate in calibrations:
        assert min_cllr <= compute_cllr(calibrate(scores), labels) + 1e-12


@pytest.mark.parametrize(
    "transform",
    [lambda s: 5.0 * s - 1.0, np.exp, np.arctan],
    ids=["affine", "exp", "arctan"],
)
def test_min_cllr_depends_only_on_the_order(transform):
    scores, labels = _random_trials(4, size=500)
    scores = np.round(scores, 1)  # ties too
    assert compute_min_cllr(transform(scores), labels) == pytest.approx(
        compute_min_cllr(scores, labels), abs=1e-12
    )


def test_min_cllr_on_large_input_nearly_reaches_the_true_llr():
    scores, labels = _random_trials(6, size=200_000, separation=1.0)
    # Unit Gaussians at 0 and 1: the true LLR is score - 1/2, a monotonic map, so minCllr is
    # below its Cllr; with this many trials PAV overfits by very little.
    true_cllr = compute_cllr(scores - 0.5, labels)
    min_cllr = compute_min_cllr(scores, labels)
    assert true_cllr - 0.005 < min_cllr <= true_cllr


@pytest.mark.parametrize(
    ("scores", "labels", "message"),
    [
        ([0.1, 0.2, 0.3], [0, 1], "same length"),
        ([0.1, 0.2], [1, 1], "both target"),
        ([0.1, float("inf")], [0, 1], "finite"),
        ([0.1, 0.2], [0, 2], "0 .non-target. or 1"),
    ],
)
def test_invalid_inputs_raise_value_error(scores, labels, message):
    with pytest.raises(ValueError, match=message):
        compute_min_cllr(scores, labels)
    with pytest.raises(ValueError, match=message):
        compute_act_dcf(scores, labels, 0.15)
    if "finite" not in message:  # Cllr accepts infinite LLRs
        with pytest.raises(ValueError, match=message):
            compute_cllr(scores, labels)


def test_act_dcf_rejects_nan_threshold_and_bad_costs():
    with pytest.raises(ValueError, match="NaN"):
        compute_act_dcf([0.1, 0.2], [0, 1], float("nan"))
    with pytest.raises(ValueError, match="p_target"):
        compute_act_dcf([0.1, 0.2], [0, 1], 0.0, p_target=1.0)
    with pytest.raises(ValueError, match="c_miss"):
        bayes_threshold(0.5, c_miss=0.0)
