"""Evaluation: verification metrics (EER, minDCF, actual DCF, Cllr, DET curves), score
normalisation against a cohort, and calibration of scores to log-likelihood ratios."""

from __future__ import annotations

from speakerprint.eval.calibration import (
    Calibration,
    fit_calibration,
    threshold_at_eer,
    threshold_at_fa_rate,
    threshold_for_bayes,
)
from speakerprint.eval.metrics import (
    ActDcfResult,
    DcfResult,
    DetCurve,
    EerResult,
    VerificationMetrics,
    bayes_threshold,
    compute_act_dcf,
    compute_cllr,
    compute_eer,
    compute_min_cllr,
    compute_min_dcf,
    compute_verification_metrics,
    det_curve,
)
from speakerprint.eval.normalization import (
    NORMALIZATION_METHODS,
    asnorm,
    cohort_from_embeddings,
    cohort_from_manifest,
    normalize_scores,
    normalize_scores_by_index,
    snorm,
    tnorm,
    znorm,
)

__all__ = [
    "NORMALIZATION_METHODS",
    "ActDcfResult",
    "Calibration",
    "DcfResult",
    "DetCurve",
    "EerResult",
    "VerificationMetrics",
    "asnorm",
    "bayes_threshold",
    "cohort_from_embeddings",
    "cohort_from_manifest",
    "compute_act_dcf",
    "compute_cllr",
    "compute_eer",
    "compute_min_cllr",
    "compute_min_dcf",
    "compute_verification_metrics",
    "det_curve",
    "fit_calibration",
    "normalize_scores",
    "normalize_scores_by_index",
    "snorm",
    "threshold_at_eer",
    "threshold_at_fa_rate",
    "threshold_for_bayes",
    "tnorm",
    "znorm",
]
