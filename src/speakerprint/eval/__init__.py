"""Evaluation: verification metrics (EER, minDCF, actual DCF, Cllr, DET curves), score
normalisation against a cohort, calibration of scores to log-likelihood ratios, speaker
identification, and evaluation runs of a model under a test condition with an embedding cache.

The parts that run a model (``Condition``, ``EmbeddingCache``, ``evaluate``...) are imported on
first use, so that the numpy-only metrics do not load torch."""

from __future__ import annotations

from typing import TYPE_CHECKING

from speakerprint.eval.calibration import (
    Calibration,
    fit_calibration,
    threshold_at_eer,
    threshold_at_fa_rate,
    threshold_for_bayes,
)
from speakerprint.eval.identification import (
    IDENTIFICATION_MODES,
    IdentificationResult,
    OpenSetResult,
    closed_set_identification,
    open_set_identification,
    speaker_means,
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

if TYPE_CHECKING:  # pragma: no cover
    from speakerprint.eval.cache import CachedEmbeddings, EmbeddingCache, bundle_fingerprint
    from speakerprint.eval.conditions import CONDITION_KINDS, Condition, embed_condition
    from speakerprint.eval.scoring import EvalResult, ScoreNormalization, evaluate

# Imported on first use: these load torch (through the model bundle).
_LAZY = {
    "CONDITION_KINDS": "conditions",
    "Condition": "conditions",
    "embed_condition": "conditions",
    "CachedEmbeddings": "cache",
    "EmbeddingCache": "cache",
    "bundle_fingerprint": "cache",
    "EvalResult": "scoring",
    "ScoreNormalization": "scoring",
    "evaluate": "scoring",
}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f"speakerprint.eval.{_LAZY[name]}"), name)
    raise AttributeError(f"module 'speakerprint.eval' has no attribute {name!r}")


__all__ = [
    "CONDITION_KINDS",
    "IDENTIFICATION_MODES",
    "NORMALIZATION_METHODS",
    "ActDcfResult",
    "CachedEmbeddings",
    "Calibration",
    "Condition",
    "DcfResult",
    "DetCurve",
    "EerResult",
    "EmbeddingCache",
    "EvalResult",
    "IdentificationResult",
    "OpenSetResult",
    "ScoreNormalization",
    "VerificationMetrics",
    "asnorm",
    "bayes_threshold",
    "bundle_fingerprint",
    "closed_set_identification",
    "cohort_from_embeddings",
    "cohort_from_manifest",
    "compute_act_dcf",
    "compute_cllr",
    "compute_eer",
    "compute_min_cllr",
    "compute_min_dcf",
    "compute_verification_metrics",
    "det_curve",
    "embed_condition",
    "evaluate",
    "fit_calibration",
    "normalize_scores",
    "normalize_scores_by_index",
    "open_set_identification",
    "snorm",
    "speaker_means",
    "threshold_at_eer",
    "threshold_at_fa_rate",
    "threshold_for_bayes",
    "tnorm",
    "znorm",
]
