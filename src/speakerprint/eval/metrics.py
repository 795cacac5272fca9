"""Verification metrics: DET curve, EER, minimum and actual detection cost, Cllr and minCllr.

All functions take one score per trial and a 0/1 label per trial (1: target, same speaker;
0: non-target) and are pure, vectorised numpy: one sort and cumulative sums, whatever the number
of trials. The decision rule everywhere is "accept the trial if ``score >= threshold``", so a higher
score must mean "more likely the same speaker".

EER and minDCF judge only the order of the scores (discrimination). Actual DCF and Cllr also judge
the values: actual DCF at the threshold a system really uses, Cllr the scores read as
log-likelihood ratios (calibration). minCllr is the Cllr after the best monotonic recalibration,
so ``Cllr - minCllr`` is the part of the cost that calibration can remove.

>>> import numpy as np
>>> scores = np.array([0.9, 0.8, 0.3, 0.6, 0.2, 0.1])
>>> labels = np.array([1, 1, 1, 0, 0, 0])
>>> m = compute_verification_metrics(scores, labels, p_target=0.05)
>>> round(m.eer, 4), m.num_target, m.num_nontarget
(0.3333, 3, 3)
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike

__all__ = [
    "ActDcfResult",
    "DcfResult",
    "DetCurve",
    "EerResult",
    "VerificationMetrics",
    "bayes_threshold",
    "compute_act_dcf",
    "compute_cllr",
    "compute_eer",
    "compute_min_cllr",
    "compute_min_dcf",
    "compute_verification_metrics",
    "det_curve",
]


@dataclass(frozen=True)
class DetCurve:
    """Operating points of a detector, one per distinct threshold, thresholds ascending.

    Point ``k`` accepts every trial with ``score >= thresholds[k]``. ``thresholds`` holds each
    distinct score once, then ``+inf`` (accept nothing). So the first point accepts everything
    (``fpr == 1``, ``fnr == 0``) and the last accepts nothing (``fpr == 0``, ``fnr == 1``); along
    the arrays ``fpr`` never rises and ``fnr`` never falls.

    Attributes:
        thresholds: (K,) float64, ascending, last one ``+inf``.
        fpr: (K,) false-positive (false-acceptance) rate: accepted non-targets / non-targets.
        fnr: (K,) false-negative (miss) rate: rejected targets / targets.
    """

    thresholds: np.ndarray
    fpr: np.ndarray
    fnr: np.ndarray


@dataclass(frozen=True)
class EerResult:
    """Equal error rate as a fraction in [0, 1] and the operating-point threshold nearest to it."""

    eer: float
    threshold: float


@dataclass(frozen=True)
class DcfResult:
    """Normalised minimum detection cost, the threshold reaching it and the costs it assumes."""

    min_dcf: float
    threshold: float
    p_target: float
    c_miss: float
    c_fa: float


@dataclass(frozen=True)
class ActDcfResult:
    """Normalised detection cost at one given threshold, its error rates and the costs it assumes.

    Attributes:
        act_dcf: normalised like ``DcfResult.min_dcf``; 1.0 is the cost of the better trivial
            system, and it can exceed 1 when the threshold is badly placed.
        threshold: the threshold the trials were decided at (accept if ``score >= threshold``).
        miss_rate: fraction of target trials rejected.
        false_accept_rate: fraction of non-target trials accepted.
    """

    act_dcf: float
    threshold: float
    miss_rate: float
    false_accept_rate: float
    p_target: float
    c_miss: float
    c_fa: float


@dataclass(frozen=True)
class VerificationMetrics:
    """EER and minDCF of one trial list, with the costs the minDCF assumes and the trial counts.

    ``to_dict()`` gives plain Python floats and ints, ready for JSON. A threshold can be ``inf``
    (minDCF reached by rejecting every trial), which ``json.dumps`` writes as ``Infinity``.
    """

    eer: float
    eer_threshold: float
    min_dcf: float
    min_dcf_threshold: float
    p_target: float
    c_miss: float
    c_fa: float
    num_target: int
    num_nontarget: int

    def to_dict(self) -> dict[str, float | int]:
        return dataclasses.asdict(self)


def _validate(
    scores: ArrayLike, labels: ArrayLike, *, allow_infinite: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """Return scores as float64 (N,) and labels as bool (N,), or raise ValueError saying why.

    ``allow_infinite`` lets through +-inf (never NaN): an LLR may honestly be infinite.
    """
    scores_arr = np.asarray(scores)
    labels_arr = np.asarray(labels)
    if scores_arr.ndim != 1 or labels_arr.ndim != 1:
        raise ValueError(
            f"scores and labels must be 1-D arrays, got shapes {scores_arr.shape} "
            f"and {labels_arr.shape}"
        )
    if len(scores_arr) != len(labels_arr):
        raise ValueError(
            f"scores and labels must have the same length, got {len(scores_arr)} scores "
            f"and {len(labels_arr)} labels"
        )
    if not (np.issubdtype(scores_arr.dtype, np.number) or scores_arr.dtype == bool):
        raise ValueError(f"scores must be numbers, got dtype {scores_arr.dtype}")
    scores_arr = scores_arr.astype(np.float64)
    bad = np.isnan(scores_arr) if allow_infinite else ~np.isfinite(scores_arr)
    if bad.any():
        first = int(np.flatnonzero(bad)[0])
        raise ValueError(
            f"scores must be finite: {int(bad.sum())} of {len(scores_arr)} are NaN or infinite "
            f"(first at index {first}: {scores_arr[first]})"
        )
    if not (np.issubdtype(labels_arr.dtype, np.number) or labels_arr.dtype == bool):
        raise ValueError(f"labels must be 0 or 1, got dtype {labels_arr.dtype}")
    not_binary = (labels_arr != 0) & (labels_arr != 1)
    if not_binary.any():
        first = int(np.flatnonzero(not_binary)[0])
        raise ValueError(
            f"labels must be 0 (non-target) or 1 (target); index {first} is {labels_arr[first]!r}"
        )
    is_target = labels_arr == 1
    num_target = int(is_target.sum())
    if num_target == 0 or num_target == len(is_target):
        raise ValueError(
            "labels must contain both target (1) and non-target (0) trials, got "
            f"{num_target} target and {len(is_target) - num_target} non-target"
        )
    return scores_arr, is_target


def _validate_costs(p_target: float, c_miss: float, c_fa: float) -> None:
    if not 0.0 < p_target < 1.0:
        raise ValueError(f"p_target must be strictly between 0 and 1, got {p_target}")
    if not (c_miss > 0.0 and c_fa > 0.0 and np.isfinite(c_miss) and np.isfinite(c_fa)):
        raise ValueError(f"c_miss and c_fa must be positive and finite, got {c_miss} and {c_fa}")


@dataclass(frozen=True)
class _Counts:
    """Operating points as integer counts, so that comparisons of error rates are exact."""

    thresholds: np.ndarray  # (K,) ascending, last +inf
    misses: np.ndarray  # (K,) int64, targets rejected
    false_accepts: np.ndarray  # (K,) int64, non-targets accepted
    num_target: int
    num_nontarget: int

    def det(self) -> DetCurve:
        return DetCurve(
            thresholds=self.thresholds,
            fpr=self.false_accepts / self.num_nontarget,
            fnr=self.misses / self.num_target,
        )


def _count(scores: np.ndarray, is_target: np.ndarray) -> _Counts:
    order = np.argsort(scores, kind="stable")
    sorted_scores = scores[order]
    # rejected_*[i]: how many targets / non-targets lie strictly before sorted index i, i.e. are
    # rejected by the threshold sorted_scores[i]. Evaluating it only at the first index of each
    # distinct score gives one operating point per distinct score, so ties are never split.
    rejected_targets = np.concatenate(([0], np.cumsum(is_target[order], dtype=np.int64)))
    rejected_nontargets = np.arange(len(scores) + 1, dtype=np.int64) - rejected_targets
    unique_scores, first_index = np.unique(sorted_scores, return_index=True)
    # Appending index N (every trial rejected) gives the accept-nothing end point.
    first_index = np.append(first_index, len(scores))
    num_target = int(rejected_targets[-1])
    num_nontarget = int(rejected_nontargets[-1])
    return _Counts(
        thresholds=np.append(unique_scores, np.inf),
        misses=rejected_targets[first_index],
        false_accepts=num_nontarget - rejected_nontargets[first_index],
        num_target=num_target,
        num_nontarget=num_nontarget,
    )


def _eer(counts: _Counts) -> EerResult:
    det = counts.det()
    # (FNR - FPR) * num_target * num_nontarget, in integers so that "equal" and "nearer" are exact.
    # It rises strictly from -1 (accept all) to +1 (accept nothing), scaled: each step to the next
    # distinct threshold rejects at least one more trial. So it crosses zero exactly once.
    diff = counts.misses * counts.num_nontarget - counts.false_accepts * counts.num_target
    upper = int(np.argmax(diff >= 0))  # first point with FNR >= FPR; always >= 1
    lower = upper - 1
    if diff[upper] == 0:
        return EerResult(eer=float(det.fnr[upper]), threshold=float(det.thresholds[upper]))
    # Interpolate both rates linearly between the bracketing points; where they meet, FNR == FPR.
    weight = -diff[lower] / (diff[upper] - diff[lower])
    eer = det.fpr[lower] + weight * (det.fpr[upper] - det.fpr[lower])
    # A threshold between two distinct scores acts exactly like the upper one, so the only
    # thresholds that mean anything are the operating points'. Take the one nearer the crossing
    # (ties and the accept-nothing end point go to the lower, finite threshold).
    upper_is_nearer = -diff[lower] > diff[upper] and np.isfinite(det.thresholds[upper])
    nearest = upper if upper_is_nearer else lower
    return EerResult(eer=float(eer), threshold=float(det.thresholds[nearest]))


def _min_dcf(det: DetCurve, p_target: float, c_miss: float, c_fa: float) -> DcfResult:
    dcf = c_miss * p_target * det.fnr + c_fa * (1.0 - p_target) * det.fpr
    # Divide by the cost of the better of the two trivial systems (accept all, reject all), so
    # that 1.0 means "no better than not looking at the audio" (NIST SRE convention).
    dcf = dcf / min(c_miss * p_target, c_fa * (1.0 - p_target))
    best = int(np.argmin(dcf))  # first, i.e. lowest threshold, among equal minima
    return DcfResult(
        min_dcf=float(dcf[best]),
        threshold=float(det.thresholds[best]),
        p_target=float(p_target),
        c_miss=float(c_miss),
        c_fa=float(c_fa),
    )


def det_curve(scores: ArrayLike, labels: ArrayLike) -> DetCurve:
    """Operating points (FPR, FNR) for every distinct score as the threshold, plus accept-nothing.

    Args:
        scores: (N,) finite scores, higher means more likely the same speaker.
        labels: (N,) 1 for target trials, 0 for non-target trials; both must occur.

    Returns:
        A :class:`DetCurve` with ``K = number of distinct scores + 1`` points.

    >>> det_curve([0.1, 0.5, 0.5, 0.9], [0, 1, 0, 1]).fpr.tolist()
    [1.0, 0.5, 0.0, 0.0]
    """
    return _count(*_validate(scores, labels)).det()


def compute_eer(scores: ArrayLike, labels: ArrayLike) -> EerResult:
    """Equal error rate: where the miss rate (FNR) equals the false-acceptance rate (FPR).

    Definition. Take the operating points of :func:`det_curve` (one per distinct score, plus
    accept-nothing). ``FNR - FPR`` rises strictly along them from -1 to +1. If a point has
    ``FNR == FPR``, the EER is that rate and the threshold is that point's. Otherwise let ``a``
    and ``b`` be the two consecutive points with ``FNR < FPR`` at ``a`` and ``FNR > FPR`` at
    ``b``; FNR and FPR are interpolated linearly between ``a`` and ``b`` (with the same weight)
    and the EER is the rate where the two lines meet. ``threshold`` is then the threshold of
    whichever of ``a`` and ``b`` is nearer to that crossing (``a`` on a tie, and always ``a`` when
    ``b`` is the accept-nothing point), so it is always one of the scores and "accept if
    ``score >= threshold``" reproduces an actual operating point next to the EER.

    Args:
        scores: (N,) finite scores, higher means more likely the same speaker.
        labels: (N,) 1 for target trials, 0 for non-target trials; both must occur.

    Returns:
        EER as a fraction in [0, 1] (not a percentage), and the threshold.

    >>> compute_eer([0.1, 0.2, 0.8, 0.9], [0, 0, 1, 1])
    EerResult(eer=0.0, threshold=0.8)
    """
    return _eer(_count(*_validate(scores, labels)))


def compute_min_dcf(
    scores: ArrayLike,
    labels: ArrayLike,
    *,
    p_target: float = 0.01,
    c_miss: float = 1.0,
    c_fa: float = 1.0,
) -> DcfResult:
    """Minimum normalised detection cost over all operating points of :func:`det_curve`.

    ``DCF(t) = c_miss * p_target * FNR(t) + c_fa * (1 - p_target) * FPR(t)``, divided by
    ``min(c_miss * p_target, c_fa * (1 - p_target))``, the cost of the better trivial system
    (NIST SRE convention). The result therefore lies in [0, 1]. ``threshold`` is the lowest
    threshold reaching the minimum; it is ``inf`` when rejecting every trial is best.

    Args:
        scores: (N,) finite scores, higher means more likely the same speaker.
        labels: (N,) 1 for target trials, 0 for non-target trials; both must occur.
        p_target: prior probability of a target trial, strictly between 0 and 1.
        c_miss: cost of rejecting a target trial.
        c_fa: cost of accepting a non-target trial.

    >>> compute_min_dcf([0.1, 0.2, 0.8, 0.9], [0, 0, 1, 1], p_target=0.05).min_dcf
    0.0
    """
    _validate_costs(p_target, c_miss, c_fa)
    return _min_dcf(det_curve(scores, labels), p_target, c_miss, c_fa)


def compute_verification_metrics(
    scores: ArrayLike,
    labels: ArrayLike,
    *,
    p_target: float = 0.01,
    c_miss: float = 1.0,
    c_fa: float = 1.0,
) -> VerificationMetrics:
    """EER (:func:`compute_eer`) and minDCF (:func:`compute_min_dcf`) from one sort of the scores.

    Args:
        scores: (N,) finite scores, higher means more likely the same speaker.
        labels: (N,) 1 for target trials, 0 for non-target trials; both must occur.
        p_target, c_miss, c_fa: the minDCF costs, see :func:`compute_min_dcf`.
    """
    _validate_costs(p_target, c_miss, c_fa)
    scores_arr, is_target = _validate(scores, labels)
    counts = _count(scores_arr, is_target)
    eer = _eer(counts)
    dcf = _min_dcf(counts.det(), p_target, c_miss, c_fa)
    return VerificationMetrics(
        eer=eer.eer,
        eer_threshold=eer.threshold,
        min_dcf=dcf.min_dcf,
        min_dcf_threshold=dcf.threshold,
        p_target=dcf.p_target,
        c_miss=dcf.c_miss,
        c_fa=dcf.c_fa,
        num_target=counts.num_target,
        num_nontarget=counts.num_nontarget,
    )


def bayes_threshold(p_target: float, *, c_miss: float = 1.0, c_fa: float = 1.0) -> float:
    """The LLR threshold of the Bayes decision: ``log(c_fa * (1 - p_target) / (c_miss * p_target))``.

    Accepting a trial when its natural-log likelihood ratio is ``>=`` this value minimises the
    expected cost ``c_miss * p_target * P(miss) + c_fa * (1 - p_target) * P(false accept)``, if
    the LLRs are calibrated. Use it as the ``threshold`` of :func:`compute_act_dcf` on LLRs.

    >>> round(bayes_threshold(0.01), 4)
    4.5951
    """
    _validate_costs(p_target, c_miss, c_fa)
    return float(np.log(c_fa * (1.0 - p_target)) - np.log(c_miss * p_target))


def compute_act_dcf(
    scores: ArrayLike,
    labels: ArrayLike,
    threshold: float,
    *,
    p_target: float = 0.01,
    c_miss: float = 1.0,
    c_fa: float = 1.0,
) -> ActDcfResult:
    """Actual normalised detection cost when every trial is decided at ``threshold``.

    The same cost as :func:`compute_min_dcf`, ``c_miss * p_target * FNR + c_fa * (1 - p_target)
    * FPR`` divided by ``min(c_miss * p_target, c_fa * (1 - p_target))``, but at the threshold
    given instead of the best one, so ``act_dcf >= min_dcf`` and the gap measures how well the
    threshold was chosen beforehand. For calibrated LLRs the threshold is
    :func:`bayes_threshold`; for raw scores it is one from a development set.

    Args:
        scores: (N,) finite scores, higher means more likely the same speaker.
        labels: (N,) 1 for target trials, 0 for non-target trials; both must occur.
        threshold: accept a trial if ``score >= threshold``; may be ``+-inf``, not NaN.
        p_target, c_miss, c_fa: the costs, see :func:`compute_min_dcf`.

    >>> llrs = [-3.0, -1.0, 5.0, 2.0]
    >>> compute_act_dcf(llrs, [0, 0, 1, 1], bayes_threshold(0.01), p_target=0.01).act_dcf
    0.5
    """
    _validate_costs(p_target, c_miss, c_fa)
    scores_arr, is_target = _validate(scores, labels)
    threshold = float(threshold)
    if np.isnan(threshold):
        raise ValueError("threshold must be a number or +-inf, got NaN")
    accepted = scores_arr >= threshold
    num_target = int(is_target.sum())
    miss_rate = int((is_target & ~accepted).sum()) / num_target
    false_accept_rate = int((~is_target & accepted).sum()) / (len(is_target) - num_target)
    dcf = c_miss * p_target * miss_rate + c_fa * (1.0 - p_target) * false_accept_rate
    return ActDcfResult(
        act_dcf=float(dcf / min(c_miss * p_target, c_fa * (1.0 - p_target))),
        threshold=threshold,
        miss_rate=miss_rate,
        false_accept_rate=false_accept_rate,
        p_target=float(p_target),
        c_miss=float(c_miss),
        c_fa=float(c_fa),
    )


def _cllr(llrs: np.ndarray, is_target: np.ndarray) -> float:
    # log(1 + e^-x) as logaddexp(0, -x): no overflow, and exactly 0 for an LLR of +inf on a
    # target (or -inf on a non-target), +inf for an infinite LLR on the wrong side.
    target_cost = np.logaddexp(0.0, -llrs[is_target]).mean()
    nontarget_cost = np.logaddexp(0.0, llrs[~is_target]).mean()
    return float((target_cost + nontarget_cost) / (2.0 * np.log(2.0)))


def compute_cllr(llrs: ArrayLike, labels: ArrayLike) -> float:
    """Log-likelihood-ratio cost (Brümmer), in bits: how well scores work as calibrated LLRs.

    ``Cllr = (mean over targets of log2(1 + e^-llr) + mean over non-targets of log2(1 + e^llr))
    / 2``. It is the cross-entropy of the posteriors the LLRs give at a target prior of 1/2,
    averaged over the two classes so that their proportions in the trial list do not matter.
    0 is a perfect system; 1 is the cost of a system that always says LLR 0 ("no idea"); above 1
    the scores are worse than not using them, which usually means they are not calibrated.

    Args:
        llrs: (N,) natural-log likelihood ratios ``log p(score | target) / p(score | non-target)``.
            +-inf is allowed: on the right side a trial costs 0, on the wrong side Cllr is inf.
        labels: (N,) 1 for target trials, 0 for non-target trials; both must occur.

    Returns:
        Cllr in bits, >= 0.

    >>> compute_cllr([0.0, 0.0, 0.0], [1, 0, 0])
    1.0
    """
    return _cllr(*_validate(llrs, labels, allow_infinite=True))


def _pav_llrs(scores: np.ndarray, is_target: np.ndarray) -> np.ndarray:
    """(N,) LLRs of the optimal monotonic (non-decreasing) map of ``scores``, from PAV.

    Pool adjacent violators fits the target posterior as a non-decreasing step function of the
    score: blocks of consecutive scores, each given its fraction of targets. Tied scores start in
    one block, so they always get one value whatever their order. Pooling a block into its
    predecessor while the predecessor's fraction is not smaller keeps the stack of block
    fractions strictly increasing; every pool removes a block, so this is O(N) after the sort.
    """
    _, group_of, group_size = np.unique(scores, return_inverse=True, return_counts=True)
    group_of = group_of.reshape(-1)
    group_targets = np.bincount(group_of, weights=is_target, minlength=len(group_size))
    # Integer counts, compared by cross-multiplying, so pooling decisions are exact.
    block_targets: list[int] = []
    block_sizes: list[int] = []
    block_groups: list[int] = []
    for targets, size in zip(group_targets.astype(np.int64).tolist(), group_size.tolist()):
        groups = 1
        while block_sizes and block_targets[-1] * size >= targets * block_sizes[-1]:
            targets += block_targets.pop()
            size += block_sizes.pop()
            groups += block_groups.pop()
        block_targets.append(targets)
        block_sizes.append(size)
        block_groups.append(groups)
    targets_arr = np.array(block_targets, dtype=np.float64)
    nontargets_arr = np.array(block_sizes, dtype=np.float64) - targets_arr
    num_target = int(is_target.sum())
    # Posterior log odds of each block, minus the prior log odds of the trial list, give the LLR.
    # A block of one class has posterior 0 or 1 and an LLR of -inf or +inf, which is right: its
    # trials then cost exactly 0 in _cllr, so there is nothing to clip.
    with np.errstate(divide="ignore"):
        block_llrs = np.log(targets_arr) - np.log(nontargets_arr)
    block_llrs -= np.log(num_target) - np.log(len(is_target) - num_target)
    return np.repeat(block_llrs, block_groups)[group_of]


def compute_min_cllr(scores: ArrayLike, labels: ArrayLike) -> float:
    """Cllr after the best monotonic recalibration of the scores: the discrimination part of Cllr.

    The scores are mapped to LLRs by pool adjacent violators (PAV): the non-decreasing step
    function of the score whose target posteriors fit the labels best (for every proper scoring
    rule at once), turned into LLRs by subtracting the trial list's prior log odds
    ``log(num_target / num_nontarget)``. Those LLRs are the best any monotonic calibration of
    these scores can do on these trials, so ``compute_min_cllr(s, y) <= compute_cllr(f(s), y)``
    for every non-decreasing ``f``, and it depends only on the order of the scores. It lies in
    [0, 1]: 0 when the classes are separated, 1 when the scores carry no information. Blocks of
    a single class get an infinite LLR and cost exactly 0 (their limit), never NaN.

    Args:
        scores: (N,) finite scores, higher means more likely the same speaker.
        labels: (N,) 1 for target trials, 0 for non-target trials; both must occur.

    Returns:
        minCllr in bits.

    >>> compute_min_cllr([0.1, 0.2, 0.8, 0.9], [0, 0, 1, 1])
    0.0
    """
    scores_arr, is_target = _validate(scores, labels)
    return _cllr(_pav_llrs(scores_arr, is_target), is_target)
