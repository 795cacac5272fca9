"""Tests of speakerprint.eval.calibration: the closed-form LLR of two Gaussians, an independent
Newton (IRLS) logistic regression, Cllr improvement, exact false-acceptance thresholds, errors."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from speakerprint.eval import (
    Calibration,
    bayes_threshold,
    compute_act_dcf,
    compute_cllr,
    compute_eer,
    compute_min_cllr,
    compute_min_dcf,
    det_curve,
    fit_calibration,
    threshold_at_eer,
    threshold_at_fa_rate,
    threshold_for_bayes,
)

# Cosine-like scores: targets N(0.6, 0.15^2), non-targets N(0.2, 0.15^2). With equal variances
# the LLR is linear: log N(s; mt, v) - log N(s; mn, v) = (mt - mn) / v * s - (mt^2 - mn^2) / (2 v)
# = 0.4 / 0.0225 * s - 0.32 / 0.045 = 17.78 s - 7.11.
_MEAN_TARGET, _MEAN_NONTARGET, _STD = 0.6, 0.2, 0.15
_SCALE = (_MEAN_TARGET - _MEAN_NONTARGET) / _STD**2
_OFFSET = -(_MEAN_TARGET**2 - _MEAN_NONTARGET**2) / (2 * _STD**2)


def _gaussian_trials(seed, num_target, num_nontarget):
    rng = np.random.default_rng(seed)
    labels = np.repeat([1, 0], [num_target, num_nontarget])
    means = np.where(labels == 1, _MEAN_TARGET, _MEAN_NONTARGET)
    return means + _STD * rng.normal(size=len(labels)), labels


def _irls_logistic_regression(scores, labels, iterations=50):
    # Unweighted logistic regression by plain Newton steps on the raw scores: posterior log odds
    # = w0 + w1 * score.
    x = np.stack([np.ones_like(scores), scores], axis=1)
    w = np.zeros(2)
    for _ in range(iterations):
        p = 1.0 / (1.0 + np.exp(-(x @ w)))
        gradient = x.T @ (p - labels)
        hessian = (x * (p * (1 - p))[:, None]).T @ x
        w -= np.linalg.solve(hessian, gradient)
    return w


# --- fitting ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("p_target", "num_target", "num_nontarget"),
    [(None, 20000, 20000), (None, 5000, 40000), (0.5, 5000, 40000), (0.05, 20000, 20000)],
)
def test_recovers_the_closed_form_llr_of_two_gaussians(p_target, num_target, num_nontarget):
    # Logistic regression is well specified here, so every prior weighting and every class
    # proportion must find the same line; only the sampling noise differs.
    scores, labels = _gaussian_trials(0, num_target, num_nontarget)
    calibration = fit_calibration(scores, labels, p_target=p_target)
    assert calibration.scale == pytest.approx(_SCALE, rel=0.05)
    assert calibration.offset == pytest.approx(_OFFSET, rel=0.05)
    grid = np.linspace(0.1, 0.7, 7)  # where the data are
    np.testing.assert_allclose(calibration.llr(grid), _SCALE * grid + _OFFSET, atol=0.25)
    assert calibration.p_target == p_target


def test_plain_fit_matches_newton_logistic_regression_less_the_prior_log_odds():
    scores, labels = _gaussian_trials(1, 3000, 9000)
    w0, w1 = _irls_logistic_regression(scores, labels)
    calibration = fit_calibration(scores, labels)
    assert calibration.scale == pytest.approx(w1, rel=1e-6)
    assert calibration.offset == pytest.approx(w0 - math.log(3000 / 9000), rel=1e-6)


def test_fit_at_even_prior_minimises_cllr_over_affine_maps():
    scores, labels = _gaussian_trials(2, 2000, 6000)
    calibration = fit_calibration(scores, labels, p_target=0.5)
    best = compute_cllr(calibration.llr(scores), labels)
    for d_scale in (-0.5, 0.5):
        for d_offset in (-0.1, 0.0, 0.1):
            moved = (calibration.scale + d_scale) * scores + calibration.offset + d_offset
            assert best <= compute_cllr(moved, labels)


def test_calibration_lowers_cllr_of_raw_scores_read_as_llrs():
    scores, labels = _gaussian_trials(3, 2000, 6000)
    raw_cllr = compute_cllr(scores, labels)  # cosines read as LLRs: nearly uninformative
    calibrated_cllr = compute_cllr(
        fit_calibration(scores, labels, p_target=0.5).llr(scores), labels
    )
    assert compute_min_cllr(scores, labels) <= calibrated_cllr < raw_cllr
    assert raw_cllr > 0.85 and calibrated_cllr < 0.5


def test_calibration_keeps_the_order_of_scores():
    scores, labels = _gaussian_trials(4, 500, 500)
    llrs = fit_calibration(scores, labels).llr(scores)
    assert compute_eer(llrs, labels).eer == pytest.approx(compute_eer(scores, labels).eer)


def test_perfectly_separated_scores_warn_and_give_a_steep_finite_map():
    with pytest.warns(RuntimeWarning, match="separate"):
        calibration = fit_calibration([0.1, 0.2, 0.8, 0.9], [0, 0, 1, 1])
    assert math.isfinite(calibration.scale) and calibration.scale > 10
    assert threshold_for_bayes(calibration, 0.5) == pytest.approx(0.5)


def test_constant_scores_give_a_flat_map():
    calibration = fit_calibration([0.3] * 6, [1, 0, 0, 1, 0, 0])
    assert calibration.scale == 0.0
    # Plain fit: the posterior is the trial prior, so the LLR is 0.
    assert calibration.offset == pytest.approx(0.0, abs=1e-9)
    with pytest.raises(ValueError, match="scale must be positive"):
        threshold_for_bayes(calibration, 0.5)


# --- serialisation ----------------------------------------------------------------------------


@pytest.mark.parametrize("p_target", [None, 0.01])
def test_to_dict_round_trips_through_json(p_target):
    calibration = Calibration(scale=17.5, offset=-7.25, p_target=p_target)
    as_dict = calibration.to_dict()
    assert as_dict == {"scale": 17.5, "offset": -7.25, "p_target": p_target}
    assert Calibration.from_dict(json.loads(json.dumps(as_dict))) == calibration


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"scale": 1.0, "offset": 0.0}, r"missing calibration keys: 'p_target'"),
        (
            {"scale": 1.0, "offset": 0.0, "p_target": None, "bias": 1},
            r"unknown calibration keys: 'bias'",
        ),
        ({"scale": "1", "offset": 0.0, "p_target": None}, "scale must be a number"),
        ({"scale": True, "offset": 0.0, "p_target": None}, "scale must be a number"),
        ({"scale": 1.0, "offset": float("inf"), "p_target": None}, "offset must be finite"),
        ({"scale": 1.0, "offset": 0.0, "p_target": 1.5}, "p_target must lie in"),
    ],
)
def test_from_dict_rejects_bad_data(data, message):
    with pytest.raises(ValueError, match=message):
        Calibration.from_dict(data)


# --- thresholds -------------------------------------------------------------------------------


def test_threshold_at_fa_rate_is_exact_on_distinct_scores():
    scores, labels = _gaussian_trials(5, 300, 1000)
    nontargets = np.sort(scores[labels == 0])
    for fa_rate in (0.001, 0.01, 0.0123, 0.05, 0.5, 1.0):
        threshold = threshold_at_fa_rate(scores, labels, fa_rate)
        accepted = int((nontargets >= threshold).sum())
        # 1000 distinct non-target scores: exactly floor(rate * 1000) can be let in.
        assert accepted == math.floor(fa_rate * 1000 + 1e-9)
        # ... and it is the lowest such threshold: the next lower score lets in one more.
        lower = scores[scores < threshold]
        if len(lower):
            assert int((nontargets >= lower.max()).sum()) == accepted + 1


def test_threshold_at_fa_rate_with_ties_and_extremes():
    # Non-targets 0.1 0.5 0.5 0.9, targets 0.3 0.7 0.95. Ascending thresholds and FPR:
    # 0.1: 4/4, 0.3: 3/4, 0.5: 3/4, 0.7: 1/4, 0.9: 1/4, 0.95: 0, inf: 0.
    scores = [0.1, 0.5, 0.5, 0.9, 0.3, 0.7, 0.95]
    labels = [0, 0, 0, 0, 1, 1, 1]
    assert threshold_at_fa_rate(scores, labels, 1.0) == 0.1
    assert threshold_at_fa_rate(scores, labels, 0.75) == 0.3
    assert threshold_at_fa_rate(scores, labels, 0.5) == 0.7  # the tie at 0.5 cannot be split
    assert threshold_at_fa_rate(scores, labels, 0.25) == 0.7
    assert threshold_at_fa_rate(scores, labels, 0.0) == 0.95
    # A non-target on top: no finite threshold accepts none of them.
    assert threshold_at_fa_rate([0.2, 0.9], [1, 0], 0.0) == math.inf


def test_threshold_at_fa_rate_agrees_with_the_det_curve():
    scores, labels = _gaussian_trials(6, 200, 200)
    det = det_curve(scores, labels)
    for fa_rate in np.linspace(0, 1, 23):
        threshold = threshold_at_fa_rate(scores, labels, fa_rate)
        ok = det.thresholds[det.fpr <= fa_rate]
        assert threshold == ok.min()


def test_threshold_at_eer_is_the_eer_threshold():
    scores, labels = _gaussian_trials(7, 300, 700)
    assert threshold_at_eer(scores, labels) == compute_eer(scores, labels).threshold


def test_threshold_for_bayes_hand_computed():
    calibration = Calibration(scale=10.0, offset=-4.0)
    # LLR threshold 0 at p_target 0.5: 10 s - 4 = 0 -> s = 0.4.
    assert threshold_for_bayes(calibration, 0.5) == pytest.approx(0.4)
    # p_target 0.01: LLR threshold log 99 -> s = (log 99 + 4) / 10.
    assert threshold_for_bayes(calibration, 0.01) == pytest.approx((math.log(99) + 4) / 10)
    # c_miss 99 makes p_target 0.01 act like an even prior.
    assert threshold_for_bayes(calibration, 0.01, c_miss=99.0) == pytest.approx(0.4)


def test_threshold_for_bayes_gives_the_same_decisions_as_calibrated_llrs():
    scores, labels = _gaussian_trials(8, 1000, 1000)
    calibration = fit_calibration(scores, labels)
    for p_target in (0.01, 0.1, 0.5):
        threshold = threshold_for_bayes(calibration, p_target)
        by_llr = calibration.llr(scores) >= bayes_threshold(p_target)
        np.testing.assert_array_equal(scores >= threshold, by_llr)


def test_bayes_threshold_from_a_dev_fit_is_near_optimal_on_new_trials():
    dev_scores, dev_labels = _gaussian_trials(9, 5000, 20000)
    eval_scores, eval_labels = _gaussian_trials(10, 5000, 20000)
    for p_target in (0.05, 0.5):
        calibration = fit_calibration(dev_scores, dev_labels, p_target=p_target)
        threshold = threshold_for_bayes(calibration, p_target)
        act = compute_act_dcf(eval_scores, eval_labels, threshold, p_target=p_target).act_dcf
        best = compute_min_dcf(eval_scores, eval_labels, p_target=p_target).min_dcf
        assert best <= act < best + 0.03


# --- errors -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("scores", "labels", "kwargs", "message"),
    [
        ([0.1, 0.2], [1, 1], {}, "both target"),
        ([0.1, float("nan")], [0, 1], {}, "finite"),
        ([0.1, 0.2, 0.3], [0, 1], {}, "same length"),
        ([0.1, 0.2], [0, 1], {"p_target": 0.0}, "p_target"),
        ([0.1, 0.2], [0, 1], {"p_target": 1.0}, "p_target"),
    ],
)
def test_fit_calibration_rejects_bad_inputs(scores, labels, kwargs, message):
    with pytest.raises(ValueError, match=message):
        fit_calibration(scores, labels, **kwargs)


def test_threshold_functions_reject_bad_inputs():
    with pytest.raises(ValueError, match="fa_rate"):
        threshold_at_fa_rate([0.1, 0.2], [0, 1], 1.5)
    with pytest.raises(ValueError, match="fa_rate"):
        threshold_at_fa_rate([0.1, 0.2], [0, 1], float("nan"))
    with pytest.raises(ValueError, match="both target"):
        threshold_at_fa_rate([0.1, 0.2], [0, 0], 0.1)
    with pytest.raises(ValueError, match="both target"):
        threshold_at_eer([0.1, 0.2], [1, 1])
    with pytest.raises(ValueError, match="p_target"):
        threshold_for_bayes(Calibration(scale=1.0, offset=0.0), 0.0)
    with pytest.raises(ValueError, match="scale must be positive"):
        threshold_for_bayes(Calibration(scale=-1.0, offset=0.0), 0.5)
