"""Score calibration (raw score to log-likelihood ratio) and decision thresholds.

A calibrated system turns a raw score ``s`` into a natural-log likelihood ratio
``llr = scale * s + offset``, fitted on development trials by logistic regression. Calibrated
LLRs can be thresholded by Bayes' rule for any prior and costs (:func:`threshold_for_bayes`),
instead of re-tuning a threshold on data for every operating point. Thresholds chosen on data
(:func:`threshold_at_eer`, :func:`threshold_at_fa_rate`) need no calibration.

The decision rule is that of :mod:`speakerprint.eval.metrics`: accept if ``score >= threshold``.

>>> import numpy as np
>>> rng = np.random.default_rng(1)
>>> labels = np.repeat([1, 0], 2000)
>>> scores = np.where(labels == 1, 0.5, 0.3) + 0.1 * rng.normal(size=4000)
>>> calibration = fit_calibration(scores, labels, p_target=0.5)
>>> round(calibration.scale), round(calibration.offset)  # closed form: 20 and -8
(20, -8)
>>> round(threshold_for_bayes(calibration, 0.5), 2)  # halfway between the class means
0.4
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import scipy.optimize
import scipy.special
from numpy.typing import ArrayLike

from speakerprint.eval.metrics import (
    DetCurve,
    _count,
    _eer,
    _min_dcf,
    _validate,
    bayes_threshold,
    compute_eer,
    det_curve,
)
from speakerprint.utils.config import dataclass_from_dict

__all__ = [
    "DEFAULT_FA_RATES",
    "Calibration",
    "OperatingPoint",
    "operating_points",
    "fit_calibration",
    "threshold_at_eer",
    "threshold_at_fa_rate",
    "threshold_for_bayes",
]


@dataclass(frozen=True)
class Calibration:
    """An affine map from raw scores to natural-log likelihood ratios: ``scale * s + offset``.

    Attributes:
        scale: LLR per unit of raw score; positive for any useful system.
        offset: LLR of a raw score of 0.
        p_target: the target prior the fit was weighted for, or None for plain logistic
            regression (weighted by the trial list's own proportion of targets).

    >>> Calibration(scale=10.0, offset=-4.0, p_target=None).llr([0.3, 0.5]).tolist()
    [-1.0, 1.0]
    """

    scale: float
    offset: float
    p_target: float | None = None

    def llr(self, scores: ArrayLike) -> np.ndarray:
        """Calibrated LLRs of ``scores``, same shape, float64."""
        return self.scale * np.asarray(scores, dtype=np.float64) + self.offset

    def to_dict(self) -> dict[str, float | None]:
        """Plain floats (and None), ready for JSON; :meth:`from_dict` reads it back."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, object]) -> Calibration:
        """Read :meth:`to_dict`'s output, checking keys and values.

        Raises:
            ValueError: a missing or unknown key, or a value that is not a finite number
                (``p_target`` may be None, else strictly between 0 and 1).
        """

        def check(name: str, value: object, key: str) -> float | None:
            if name == "p_target" and value is None:
                return None
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ValueError(f"calibration {name} must be a number, got {value!r}")
            if not math.isfinite(value):
                raise ValueError(f"calibration {name} must be finite, got {value}")
            if name == "p_target" and not 0.0 < value < 1.0:
                raise ValueError(f"calibration p_target must lie in (0, 1), got {value}")
            return float(value)

        return dataclass_from_dict(cls, data, label="calibration", require_all=True, convert=check)


def _weighted_logistic_loss(
    params: np.ndarray, z: np.ndarray, sign: np.ndarray, weight: np.ndarray, prior_logit: float
) -> tuple[float, np.ndarray]:
    """Loss and gradient in (w, b) of ``sum weight * log(1 + exp(-sign * (z @ w + b + L)))``.

    ``z`` is (N, S): one column per input score (one for calibration, several for fusion).
    """
    margin = sign * (z @ params[:-1] + params[-1] + prior_logit)
    loss = float(np.sum(weight * np.logaddexp(0.0, -margin)))
    d_eta = -sign * weight * scipy.special.expit(-margin)  # derivative in z @ w + b
    return loss, np.append(z.T @ d_eta, d_eta.sum())


def _weighted_logistic_hessian(
    params: np.ndarray, z: np.ndarray, sign: np.ndarray, weight: np.ndarray, prior_logit: float
) -> np.ndarray:
    eta = z @ params[:-1] + params[-1] + prior_logit
    curvature = weight * scipy.special.expit(eta) * scipy.special.expit(-eta)
    design = np.hstack([z, np.ones((len(z), 1))])  # (N, S + 1)
    return (design * curvature[:, None]).T @ design


def _fit_logistic(
    columns: np.ndarray, is_target: np.ndarray, p_target: float | None, what: str
) -> tuple[np.ndarray, float]:
    """Prior-weighted logistic regression of LLRs on the score columns (N, S).

    Returns the weights (S,) and the offset of ``llr = columns @ weights + offset``.
    """
    num_target = int(is_target.sum())
    num_nontarget = len(is_target) - num_target
    if p_target is not None and not 0.0 < p_target < 1.0:
        raise ValueError(f"p_target must be strictly between 0 and 1 or None, got {p_target}")
    prior = num_target / len(is_target) if p_target is None else float(p_target)
    # Standardised columns keep the parameters on one scale, so the solver is well conditioned.
    mean = columns.mean(axis=0)
    spread = columns.std(axis=0)
    spread[spread == 0] = 1.0  # a constant column: z == 0 and its weight stays 0
    z = (columns - mean) / spread
    sign = np.where(is_target, 1.0, -1.0)
    weight = np.where(is_target, prior / num_target, (1.0 - prior) / num_nontarget)
    args = (z, sign, weight, float(scipy.special.logit(prior)))
    result = scipy.optimize.minimize(
        _weighted_logistic_loss,
        x0=np.zeros(columns.shape[1] + 1),  # LLR 0 everywhere: the uninformative start
        args=args,
        jac=True,
        hess=_weighted_logistic_hessian,
        method="trust-exact",
        options={"gtol": 1e-9},
    )
    # The weights sum to 1, so the loss is O(1): a gradient below 1e-6 is converged even when
    # rounding stops the solver short of gtol ("failure to predict improvement").
    if not result.success and np.abs(result.jac).max() > 1e-6:
        warnings.warn(f"{what} did not converge: {result.message}", RuntimeWarning, stacklevel=3)
    w = result.x[:-1] / spread  # llr = sum_s w_s (c_s - mean_s) / spread_s + b
    return w, float(result.x[-1] - np.dot(w, mean))


def fit_calibration(
    scores: ArrayLike, labels: ArrayLike, *, p_target: float | None = None
) -> Calibration:
    """Fit ``llr = scale * score + offset`` by logistic regression on development trials.

    With ``p_target`` this is the prior-weighted logistic regression of Brümmer's FoCal: it
    minimises

        ``p_target * mean_targets log(1 + exp(-(llr + L))) +
        (1 - p_target) * mean_nontargets log(1 + exp(llr + L))``,  ``L = logit(p_target)``,

    the expected cross-entropy of the posteriors at that prior, so the LLRs are best calibrated
    around the operating point of ``p_target``; at ``p_target=0.5`` it is ``Cllr * log(2)``, so
    the fit minimises Cllr over all affine maps. Without ``p_target`` it is plain (unweighted)
    logistic regression on the trials, whose posterior log odds less the trial list's prior log
    odds ``log(num_target / num_nontarget)`` are the LLR; that is the same objective at the
    trial list's own target proportion. Either way the objective is convex and is minimised with
    scipy's trust-region Newton method on standardised scores.

    If the scores separate the classes perfectly the loss has no minimum (a steeper map is
    always better); the fit then stops at a steep, finite map and warns.

    Args:
        scores: (N,) finite raw scores, higher means more likely the same speaker.
        labels: (N,) 1 for target trials, 0 for non-target trials; both must occur.
        p_target: prior to weight the fit for, strictly between 0 and 1; None for plain.

    Raises:
        ValueError: bad scores, labels or ``p_target``.

    >>> fit_calibration([0.1, 0.4, 0.5, 0.8], [0, 1, 0, 1], p_target=0.5).scale > 0
    True
    """
    scores_arr, is_target = _validate(scores, labels)
    separated = bool(scores_arr[is_target].min() > scores_arr[~is_target].max())
    if separated:
        warnings.warn(
            "the scores separate targets from non-targets perfectly, so logistic regression has "
            "no finite optimum; the calibration is steep and overconfident. Calibrate on more "
            "(or harder) trials.",
            RuntimeWarning,
            stacklevel=2,
        )
    with warnings.catch_warnings():
        if separated:  # already said; the solver's own complaint adds nothing
            warnings.simplefilter("ignore", RuntimeWarning)
        weights, offset = _fit_logistic(scores_arr[:, None], is_target, p_target, "calibration fit")
    return Calibration(scale=float(weights[0]), offset=offset, p_target=p_target)


def threshold_at_eer(scores: ArrayLike, labels: ArrayLike) -> float:
    """The raw-score threshold nearest the equal error rate (``compute_eer(...).threshold``).

    >>> threshold_at_eer([0.1, 0.2, 0.8, 0.9], [0, 0, 1, 1])
    0.8
    """
    return compute_eer(scores, labels).threshold


def threshold_at_fa_rate(scores: ArrayLike, labels: ArrayLike, fa_rate: float) -> float:
    """The lowest threshold whose false-acceptance rate on these trials is at most ``fa_rate``.

    Thresholds are the operating points of :func:`~speakerprint.eval.metrics.det_curve` (each
    distinct score, then ``inf``), so on the trials given, "accept if ``score >= threshold``"
    accepts at most ``fa_rate`` of the non-targets, and any lower threshold accepts more. It is
    ``inf`` only when even the highest score would let in too many non-targets.

    Args:
        scores: (N,) finite scores, higher means more likely the same speaker.
        labels: (N,) 1 for target trials, 0 for non-target trials; both must occur.
        fa_rate: the largest acceptable fraction of non-targets accepted, in [0, 1].

    >>> threshold_at_fa_rate([0.1, 0.2, 0.3, 0.4, 0.9], [0, 0, 0, 0, 1], fa_rate=0.25)
    0.4
    """
    return _threshold_at_fa_rate(det_curve(scores, labels), fa_rate)


def _threshold_at_fa_rate(det: DetCurve, fa_rate: float) -> float:
    fa_rate = float(fa_rate)
    if not 0.0 <= fa_rate <= 1.0:
        raise ValueError(f"fa_rate must lie in [0, 1], got {fa_rate}")
    # fpr never rises along the ascending thresholds and ends at 0, so a first one exists.
    return float(det.thresholds[int(np.argmax(det.fpr <= fa_rate))])


def threshold_for_bayes(
    calibration: Calibration, p_target: float, *, c_miss: float = 1.0, c_fa: float = 1.0
) -> float:
    """The raw-score threshold of the Bayes decision for a prior and costs, via calibrated LLRs.

    Accepting when ``calibration.llr(score) >= bayes_threshold(p_target, c_miss, c_fa)`` is the
    same as accepting when ``score >= (bayes_threshold - offset) / scale``, which is returned.

    Raises:
        ValueError: ``calibration.scale <= 0`` (higher scores would not mean "more likely the
            same speaker", so no threshold of the form ``score >= t`` is the Bayes decision), or
            bad costs.

    >>> threshold_for_bayes(Calibration(scale=10.0, offset=-4.0), 0.5)
    0.4
    """
    llr_threshold = bayes_threshold(p_target, c_miss=c_miss, c_fa=c_fa)
    if not calibration.scale > 0.0:
        raise ValueError(
            f"calibration scale must be positive for a score threshold, got {calibration.scale}"
        )
    return (llr_threshold - calibration.offset) / calibration.scale


# The false-acceptance rates of the threshold table: a security setting (0.1 %) and a
# convenience one (1 %).
DEFAULT_FA_RATES = (0.01, 0.001)


@dataclass(frozen=True)
class OperatingPoint:
    """A threshold chosen on a trial list, and the error rates it gives on that list.

    Attributes:
        name: how it was chosen, e.g. ``"EER"``, ``"FA <= 1%"``, ``"minDCF p_target=0.01"``.
        threshold: accept a trial if ``score >= threshold``.
        false_accept_rate: fraction of non-target trials accepted at it.
        miss_rate: fraction of target trials rejected at it.
    """

    name: str
    threshold: float
    false_accept_rate: float
    miss_rate: float

    def to_dict(self) -> dict[str, float | str]:
        return dataclasses.asdict(self)


def operating_points(
    scores: ArrayLike,
    labels: ArrayLike,
    *,
    fa_rates: tuple[float, ...] = DEFAULT_FA_RATES,
    p_targets: tuple[float, ...] = (0.01, 0.05),
) -> list[OperatingPoint]:
    """The threshold table of a report: the EER threshold, the lowest threshold whose
    false-acceptance rate is at most each of ``fa_rates``, and the minDCF threshold at each of
    ``p_targets`` (C_miss = C_fa = 1), each with the error rates it gives on these trials.

    These thresholds are measured on the trials given, so their error rates there are
    optimistic; a threshold for deployment is chosen on development trials (``speakerprint
    calibrate``) and checked on others.

    >>> [p.name for p in operating_points([0.1, 0.2, 0.8, 0.9], [0, 0, 1, 1])]
    ['EER', 'FA <= 1%', 'FA <= 0.1%', 'minDCF p_target=0.01', 'minDCF p_target=0.05']
    """
    counts = _count(*_validate(scores, labels))  # one sort for every row of the table
    det = counts.det()
    chosen = [("EER", _eer(counts).threshold)]
    chosen += [(f"FA <= {100 * r:g}%", _threshold_at_fa_rate(det, r)) for r in fa_rates]
    chosen += [(f"minDCF p_target={p:g}", _min_dcf(det, p, 1.0, 1.0).threshold) for p in p_targets]
    points = []
    for name, threshold in chosen:
        # Every chosen threshold is one of the DET's operating points: read its rates there.
        k = int(np.searchsorted(det.thresholds, threshold))
        points.append(OperatingPoint(name, threshold, float(det.fpr[k]), float(det.fnr[k])))
    return points
