"""Tests of speakerprint.eval.metrics: hand-computed cases, a brute-force reference, properties."""

from __future__ import annotations

import json
import math
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from speakerprint.eval import (
    DetCurve,
    EerResult,
    compute_eer,
    compute_min_dcf,
    compute_verification_metrics,
    det_curve,
)


def _trials(targets: list[float], nontargets: list[float]) -> tuple[np.ndarray, np.ndarray]:
    scores = np.array(targets + nontargets, dtype=float)
    labels = np.array([1] * len(targets) + [0] * len(nontargets))
    return scores, labels


# --- an independent reference: one Python loop per threshold, no sorting tricks --------------


def _brute_force_det(scores, labels):
    # Exact rational rates, so that "equal" and "nearer" below are decided without rounding.
    scores = [float(s) for s in scores]
    labels = [int(x) for x in labels]
    num_target = labels.count(1)
    num_nontarget = labels.count(0)
    points = []
    for threshold in sorted(set(scores)) + [math.inf]:
        false_accepts = sum(
            1 for s, y in zip(scores, labels, strict=True) if y == 0 and s >= threshold
        )
        misses = sum(1 for s, y in zip(scores, labels, strict=True) if y == 1 and s < threshold)
        points.append(
            (threshold, Fraction(false_accepts, num_nontarget), Fraction(misses, num_target))
        )
    return points


def _brute_force_eer(scores, labels):
    points = _brute_force_det(scores, labels)
    for i, (threshold, fpr, fnr) in enumerate(points):
        if fnr == fpr:
            return float(fnr), threshold
        if fnr > fpr:
            prev_threshold, prev_fpr, prev_fnr = points[i - 1]
            # Solve prev_fnr + w*(fnr - prev_fnr) == prev_fpr + w*(fpr - prev_fpr) for w.
            w = (prev_fpr - prev_fnr) / ((fnr - prev_fnr) - (fpr - prev_fpr))
            eer = prev_fnr + w * (fnr - prev_fnr)
            chosen = threshold if (w > Fraction(1, 2) and threshold != math.inf) else prev_threshold
            return float(eer), chosen
    raise AssertionError("FNR never reaches FPR")


def _brute_force_min_dcf(scores, labels, p_target, c_miss=1.0, c_fa=1.0):
    p_target, c_miss, c_fa = Fraction(p_target), Fraction(c_miss), Fraction(c_fa)
    norm = min(c_miss * p_target, c_fa * (1 - p_target))
    best = None
    for threshold, fpr, fnr in _brute_force_det(scores, labels):
        cost = (c_miss * p_target * fnr + c_fa * (1 - p_target) * fpr) / norm
        if best is None or cost < best[0]:
            best = (cost, threshold)
    return float(best[0]), best[1]


def _assert_matches_brute_force(scores, labels):
    det = det_curve(scores, labels)
    reference = _brute_force_det(scores, labels)
    np.testing.assert_array_equal(det.thresholds, [p[0] for p in reference])
    np.testing.assert_allclose(det.fpr, [float(p[1]) for p in reference], atol=1e-12)
    np.testing.assert_allclose(det.fnr, [float(p[2]) for p in reference], atol=1e-12)

    eer = compute_eer(scores, labels)
    ref_eer, ref_threshold = _brute_force_eer(scores, labels)
    assert eer.eer == pytest.approx(ref_eer, abs=1e-12)
    assert eer.threshold == ref_threshold

    for p_target in (0.01, 0.05, 0.5):
        dcf = compute_min_dcf(scores, labels, p_target=p_target)
        ref_cost, ref_dcf_threshold = _brute_force_min_dcf(scores, labels, p_target)
        assert dcf.min_dcf == pytest.approx(ref_cost, abs=1e-9)
        # Equal costs may be reached at several thresholds; the cost there must be the minimum.
        if dcf.threshold != ref_dcf_threshold:
            at_chosen = [p for p in _brute_force_det(scores, labels) if p[0] == dcf.threshold]
            _, fpr, fnr = at_chosen[0]
            norm = min(p_target, 1 - p_target)
            assert (p_target * fnr + (1 - p_target) * fpr) / norm == pytest.approx(ref_cost)


# --- hand-computed cases ----------------------------------------------------------------------


def test_perfectly_separated_gives_zero_eer():
    # Ascending thresholds and (FPR, FNR): 0.1 (1, 0), 0.2 (0.5, 0), 0.8 (0, 0) -> FNR == FPR == 0.
    scores, labels = _trials([0.8, 0.9], [0.1, 0.2])
    assert compute_eer(scores, labels) == EerResult(eer=0.0, threshold=0.8)
    assert compute_min_dcf(scores, labels).min_dcf == 0.0
    assert compute_min_dcf(scores, labels).threshold == 0.8


def test_fully_inverted_gives_eer_one():
    # 0.1 (1, 0), 0.2 (1, 0.5), 0.8 (1, 1): every non-target beats every target -> EER 1.
    scores, labels = _trials([0.1, 0.2], [0.8, 0.9])
    assert compute_eer(scores, labels) == EerResult(eer=1.0, threshold=0.8)
    # No threshold beats a trivial system, so the normalised minDCF is exactly 1.
    assert compute_min_dcf(scores, labels).min_dcf == pytest.approx(1.0)


def test_four_plus_four_with_one_overlap():
    # targets 0.5 0.7 0.8 0.9, non-targets 0.1 0.2 0.3 0.6 (0.6 beats the target 0.5).
    # threshold: 0.1 0.2 0.3 0.5 0.6 0.7 0.8 0.9 inf
    # FPR:       4/4 3/4 2/4 1/4 1/4 0   0   0   0
    # FNR:       0   0   0   0   1/4 1/4 2/4 3/4 1
    # At 0.6 FNR == FPR == 1/4 -> EER 0.25 at threshold 0.6, no interpolation needed.
    scores, labels = _trials([0.5, 0.7, 0.8, 0.9], [0.1, 0.2, 0.3, 0.6])
    det = det_curve(scores, labels)
    np.testing.assert_array_equal(det.thresholds, [0.1, 0.2, 0.3, 0.5, 0.6, 0.7, 0.8, 0.9, np.inf])
    np.testing.assert_allclose(det.fpr, [1, 0.75, 0.5, 0.25, 0.25, 0, 0, 0, 0])
    np.testing.assert_allclose(det.fnr, [0, 0, 0, 0, 0.25, 0.25, 0.5, 0.75, 1])
    assert compute_eer(scores, labels) == EerResult(eer=0.25, threshold=0.6)


def test_eer_interpolates_between_bracketing_points():
    # targets 0.5 0.7 0.9, non-targets 0.1 0.6.
    # threshold: 0.1  0.5  0.6  0.7  0.9  inf
    # FPR:       1    1/2  1/2  0    0    0
    # FNR:       0    0    1/3  1/3  2/3  1
    # FNR - FPR: -1  -1/2 -1/6  1/3  2/3  1   -> crossing between 0.6 and 0.7
    # weight w = (1/6) / (1/3 + 1/6) = 1/3; FPR = 1/2 + w*(0 - 1/2) = 1/3; FNR = 1/3 + w*0 = 1/3.
    # w < 1/2, so the threshold is the lower point's, 0.6.
    scores, labels = _trials([0.5, 0.7, 0.9], [0.1, 0.6])
    eer = compute_eer(scores, labels)
    assert eer.eer == pytest.approx(1 / 3)
    assert eer.threshold == 0.6


@pytest.mark.parametrize(
    ("targets", "nontargets", "expected_eer", "expected_threshold"),
    [
        # targets 0.5 0.9, non-targets 0.1 0.2 0.3 0.4 0.6:
        #   threshold 0.5: FPR 1/5, FNR 0   (d = FNR - FPR = -1/5)
        #   threshold 0.6: FPR 1/5, FNR 1/2 (d = 3/10)
        #   w = (1/5) / (1/2) = 2/5 -> lower point 0.5; EER = 1/5 + w * 0 = 1/5.
        ([0.5, 0.9], [0.1, 0.2, 0.3, 0.4, 0.6], 1 / 5, 0.5),
        # targets 0.3 0.7, non-targets 0.1 0.2 0.6:
        #   threshold 0.3: FPR 1/3, FNR 0   (d = -1/3)
        #   threshold 0.6: FPR 1/3, FNR 1/2 (d = 1/6)
        #   w = (1/3) / (1/2) = 2/3 > 1/2 -> upper point 0.6; EER = 1/3.
        ([0.3, 0.7], [0.1, 0.2, 0.6], 1 / 3, 0.6),
        # targets 0.3, non-targets 0.1 0.2 0.6:
        #   threshold 0.3: FPR 1/3, FNR 0 (d = -1/3); threshold 0.6: FPR 1/3, FNR 1 (d = 2/3)
        #   w = 1/3 -> lower point 0.3; EER = 1/3.
        ([0.3], [0.1, 0.2, 0.6], 1 / 3, 0.3),
        # targets 0.3 0.5, non-targets 0.1 0.2 0.6 0.7 0.8:
        #   threshold 0.5: FPR 3/5, FNR 1/2 (d = -1/10); 0.6: FPR 3/5, FNR 1 (d = 2/5)
        #   w = (1/10) / (1/2) = 1/5 -> lower point 0.5; EER = 3/5.
        ([0.3, 0.5], [0.1, 0.2, 0.6, 0.7, 0.8], 3 / 5, 0.5),
        # targets 0.3 0.4 0.5, non-targets 0.1 0.6:
        #   threshold 0.4: FPR 1/2, FNR 1/3 (d = -1/6); 0.5: FPR 1/2, FNR 2/3 (d = 1/6)
        #   w = 1/2, a tie -> lower point 0.4; EER = 1/2.
        ([0.3, 0.4, 0.5], [0.1, 0.6], 1 / 2, 0.4),
        # targets 0.1 0.5, non-targets 0.2 0.9:
        #   threshold 0.2: FPR 1, FNR 1/2; 0.5: FPR 1/2, FNR 1/2 -> exact crossing at 0.5.
        ([0.1, 0.5], [0.2, 0.9], 1 / 2, 0.5),
    ],
)
def test_eer_threshold_is_the_nearer_bracketing_point(
    targets, nontargets, expected_eer, expected_threshold
):
    eer = compute_eer(*_trials(targets, nontargets))
    assert eer.eer == pytest.approx(expected_eer)
    assert eer.threshold == expected_threshold


def test_ties_give_one_point_per_distinct_score():
    # targets 0.5 0.9, non-targets 0.1 0.5: the target and non-target at 0.5 move together.
    # threshold: 0.1  0.5  0.9  inf
    # FPR:       1    1/2  0    0
    # FNR:       0    0    1/2  1
    # FNR - FPR: -1  -1/2  1/2  -> w = 1/2, EER = 1/2 + 1/2*(0 - 1/2) = 1/4 at 0.5 (tie -> lower).
    scores, labels = _trials([0.5, 0.9], [0.1, 0.5])
    det = det_curve(scores, labels)
    np.testing.assert_array_equal(det.thresholds, [0.1, 0.5, 0.9, np.inf])
    np.testing.assert_allclose(det.fpr, [1, 0.5, 0, 0])
    np.testing.assert_allclose(det.fnr, [0, 0, 0.5, 1])
    assert compute_eer(scores, labels) == EerResult(eer=0.25, threshold=0.5)


def test_all_scores_equal():
    # One distinct score: accept all (FPR 1, FNR 0) or nothing (0, 1); they meet at 1/2.
    det = det_curve([0.5] * 4, [1, 0, 1, 0])
    np.testing.assert_array_equal(det.thresholds, [0.5, np.inf])
    assert compute_eer([0.5] * 4, [1, 0, 1, 0]) == EerResult(eer=0.5, threshold=0.5)
    # Both trivial systems cost exactly the normaliser -> minDCF 1, lowest threshold wins.
    dcf = compute_min_dcf([0.5] * 4, [1, 0, 1, 0], p_target=0.5)
    assert (dcf.min_dcf, dcf.threshold) == (1.0, 0.5)


# minDCF: targets 0.3 0.5 0.8 0.9; non-targets: 39 below 0.3 (0.001 ... 0.039) and one at 0.85.
_DCF_TARGETS = [0.3, 0.5, 0.8, 0.9]
_DCF_NONTARGETS = [0.001 * k for k in range(1, 40)] + [0.85]


def test_min_dcf_hand_computed_p_target_001():
    # p_target 0.01: normaliser min(0.01, 0.99) = 0.01, so DCF = FNR + 99 * FPR.
    #   threshold 0.3:  FNR 0,   FPR 1/40 -> 99/40 = 2.475
    #   threshold 0.9:  FNR 3/4, FPR 0    -> 0.75   (the minimum)
    #   accept nothing: FNR 1,   FPR 0    -> 1
    #   below 0.3 FPR >= 2/40 (>= 4.95); 0.5, 0.8 and 0.85 add FNR to 0.3's FPR term.
    scores, labels = _trials(_DCF_TARGETS, _DCF_NONTARGETS)
    dcf = compute_min_dcf(scores, labels, p_target=0.01)
    assert dcf.min_dcf == pytest.approx(0.75)
    assert dcf.threshold == 0.9
    assert (dcf.p_target, dcf.c_miss, dcf.c_fa) == (0.01, 1.0, 1.0)


def test_min_dcf_hand_computed_p_target_005():
    # p_target 0.05: normaliser min(0.05, 0.95) = 0.05, so DCF = FNR + 19 * FPR.
    #   threshold 0.3:  FNR 0,   FPR 1/40 -> 19/40 = 0.475 (the minimum)
    #   threshold 0.9:  FNR 3/4, FPR 0    -> 0.75
    #   accept nothing: 1; below 0.3: >= 19 * 2/40 = 0.95.
    scores, labels = _trials(_DCF_TARGETS, _DCF_NONTARGETS)
    dcf = compute_min_dcf(scores, labels, p_target=0.05)
    assert dcf.min_dcf == pytest.approx(0.475)
    assert dcf.threshold == 0.3


def test_min_dcf_hand_computed_with_costs():
    # p_target 0.01, c_miss 10, c_fa 1: normaliser min(10 * 0.01, 0.99) = 0.1,
    # DCF = (0.1 * FNR + 0.99 * FPR) / 0.1 = FNR + 9.9 * FPR.
    #   threshold 0.3: 9.9 / 40 = 0.2475 (the minimum); threshold 0.9: 0.75.
    scores, labels = _trials(_DCF_TARGETS, _DCF_NONTARGETS)
    dcf = compute_min_dcf(scores, labels, p_target=0.01, c_miss=10.0)
    assert dcf.min_dcf == pytest.approx(0.2475)
    assert dcf.threshold == 0.3
    assert dcf.c_miss == 10.0


def test_min_dcf_can_be_reached_by_rejecting_everything():
    # Fully inverted at p_target 0.01: DCF = FNR + 99 FPR is 1 only when accepting nothing.
    scores, labels = _trials([0.1, 0.2], [0.8, 0.9])
    dcf = compute_min_dcf(scores, labels, p_target=0.01)
    assert dcf.min_dcf == pytest.approx(1.0)
    assert dcf.threshold == math.inf


# --- against the brute-force reference --------------------------------------------------------


@settings(max_examples=150, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(min_value=0, max_value=6), st.booleans()), min_size=2, max_size=40
    ).filter(lambda rows: len({label for _, label in rows}) == 2)
)
def test_matches_brute_force_on_tied_integer_scores(rows):
    scores = np.array([s for s, _ in rows], dtype=float)
    labels = np.array([int(y) for _, y in rows])
    _assert_matches_brute_force(scores, labels)


@settings(max_examples=100, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.floats(min_value=-1e6, max_value=1e6, allow_nan=False, allow_infinity=False),
            st.booleans(),
        ),
        min_size=2,
        max_size=40,
    ).filter(lambda rows: len({label for _, label in rows}) == 2)
)
def test_matches_brute_force_on_arbitrary_floats(rows):
    scores = np.array([s for s, _ in rows], dtype=float)
    labels = np.array([int(y) for _, y in rows])
    _assert_matches_brute_force(scores, labels)


@pytest.mark.parametrize("seed", range(3))
def test_matches_brute_force_on_random_gaussian_scores(seed):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, size=300)
    scores = rng.normal(size=300) + 1.5 * labels  # targets score higher on average
    _assert_matches_brute_force(scores, labels)


def test_matches_brute_force_on_structured_scores():
    # Blocks of equal scores, interleaved classes and a long run of one class.
    scores = np.repeat([0.0, 1.0, 2.0, 3.0, 4.0], 12)
    labels = np.tile([1, 0, 0, 1, 0, 1], 10)
    _assert_matches_brute_force(scores, labels)
    labels = np.array([0] * 50 + [1] * 10)
    _assert_matches_brute_force(np.arange(60.0) % 7, labels)


# --- properties -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "transform",
    [lambda s: 3.0 * s - 7.0, np.exp, lambda s: s**3, lambda s: np.arctan(s / 4)],
    ids=["affine", "exp", "cube", "arctan"],
)
def test_invariant_to_monotonic_transforms(transform):
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, size=500)
    scores = np.round(rng.normal(size=500) + labels, 2)  # rounding makes many ties
    base = compute_verification_metrics(scores, labels, p_target=0.05)
    moved = compute_verification_metrics(transform(scores), labels, p_target=0.05)
    assert moved.eer == pytest.approx(base.eer, abs=1e-12)
    assert moved.min_dcf == pytest.approx(base.min_dcf, abs=1e-12)
    # Thresholds are always one of the scores, so they move with the transform.
    assert moved.eer_threshold == pytest.approx(transform(base.eer_threshold))
    assert moved.min_dcf_threshold == pytest.approx(transform(base.min_dcf_threshold))


def test_eer_stays_in_unit_interval_and_between_error_rates():
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 2, size=2000)
    scores = rng.normal(size=2000) + 2.0 * labels
    det = det_curve(scores, labels)
    eer = compute_eer(scores, labels)
    assert 0.0 <= eer.eer <= 1.0
    # The EER lies between the rates of the operating point at its threshold.
    (k,) = np.flatnonzero(det.thresholds == eer.threshold)
    assert min(det.fpr[k], det.fnr[k]) <= eer.eer + 1e-12
    assert eer.eer <= max(det.fpr[k], det.fnr[k]) + 1e-12
    assert np.all(np.diff(det.fpr) <= 0) and np.all(np.diff(det.fnr) >= 0)


def test_verification_metrics_agree_with_single_functions():
    rng = np.random.default_rng(2)
    labels = rng.integers(0, 2, size=400).astype(bool)  # bool labels are accepted too
    scores = rng.normal(size=400) + labels
    metrics = compute_verification_metrics(scores, labels, p_target=0.05, c_fa=2.0)
    eer = compute_eer(scores, labels)
    dcf = compute_min_dcf(scores, labels, p_target=0.05, c_fa=2.0)
    assert (metrics.eer, metrics.eer_threshold) == (eer.eer, eer.threshold)
    assert (metrics.min_dcf, metrics.min_dcf_threshold) == (dcf.min_dcf, dcf.threshold)
    assert metrics.num_target == int(labels.sum())
    assert metrics.num_nontarget == int((~labels).sum())
    as_dict = metrics.to_dict()
    assert set(as_dict) == {
        "eer",
        "eer_threshold",
        "min_dcf",
        "min_dcf_threshold",
        "p_target",
        "c_miss",
        "c_fa",
        "num_target",
        "num_nontarget",
    }
    assert as_dict["p_target"] == 0.05 and as_dict["c_fa"] == 2.0
    assert json.loads(json.dumps(as_dict)) == as_dict
    assert all(type(v) in (int, float) for v in as_dict.values())


def test_large_input_is_fast_enough():
    rng = np.random.default_rng(3)
    labels = rng.integers(0, 2, size=500_000)
    scores = rng.normal(size=500_000) + labels
    metrics = compute_verification_metrics(scores, labels)
    # Two unit-variance Gaussians one apart cross at 0.5: EER = Phi(-0.5) ~ 0.3085.
    assert metrics.eer == pytest.approx(0.3085, abs=0.005)


def test_det_curve_is_a_dataclass_of_arrays():
    det = det_curve([0.2, 0.4], [0, 1])
    assert isinstance(det, DetCurve)
    assert det.thresholds.dtype == det.fpr.dtype == det.fnr.dtype == np.float64


# --- validation -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("scores", "labels", "message"),
    [
        ([0.1, 0.2, 0.3], [0, 1], "same length"),
        ([0.1, 0.2], [1, 1], "both target"),
        ([0.1, 0.2], [0, 0], "both target"),
        ([], [], "both target"),
        ([0.1, float("nan")], [0, 1], "finite"),
        ([0.1, float("inf")], [0, 1], "finite"),
        ([0.1, 0.2], [0, 2], "0 .non-target. or 1"),
        ([[0.1, 0.2]], [[0, 1]], "1-D"),
        (["a", "b"], [0, 1], "numbers"),
    ],
)
def test_invalid_inputs_raise_value_error(scores, labels, message):
    for function in (det_curve, compute_eer, compute_min_dcf, compute_verification_metrics):
        with pytest.raises(ValueError, match=message):
            function(scores, labels)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"p_target": 0.0}, "p_target"),
        ({"p_target": 1.0}, "p_target"),
        ({"c_miss": 0.0}, "c_miss"),
        ({"c_fa": -1.0}, "c_fa"),
    ],
)
def test_invalid_costs_raise_value_error(kwargs, message):
    for function in (compute_min_dcf, compute_verification_metrics):
        with pytest.raises(ValueError, match=message):
            function([0.1, 0.2], [0, 1], **kwargs)
