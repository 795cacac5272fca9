"""Evaluation: verification metrics (EER, minDCF, DET curves)."""

from __future__ import annotations

from speakerprint.eval.metrics import (
    DcfResult,
    DetCurve,
    EerResult,
    VerificationMetrics,
    compute_eer,
    compute_min_dcf,
    compute_verification_metrics,
    det_curve,
)

__all__ = [
    "DcfResult",
    "DetCurve",
    "EerResult",
    "VerificationMetrics",
    "compute_eer",
    "compute_min_dcf",
    "compute_verification_metrics",
    "det_curve",
]
