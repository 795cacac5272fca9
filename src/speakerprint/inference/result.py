"""The result of a verification decision, shared by the torch and the onnxruntime encoders
(this module imports neither)."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
from numpy.typing import ArrayLike

__all__ = ["VerificationResult", "cosine_score"]


def cosine_score(emb_a: ArrayLike, emb_b: ArrayLike) -> float:
    """Cosine similarity of two embeddings, in float64.

    >>> cosine_score([1.0, 0.0], [1.0, 1.0])
    0.7071067811865475
    """
    a = np.asarray(emb_a, dtype=np.float64)
    b = np.asarray(emb_b, dtype=np.float64)
    return float(a @ b / max(np.linalg.norm(a) * np.linalg.norm(b), 1e-12))


@dataclass(frozen=True)
class VerificationResult:
    """Whether two recordings share a speaker, and on what grounds.

    Attributes:
        score: cosine similarity of the two embeddings, in [-1, 1].
        threshold: the decision threshold: same speaker if ``score >= threshold``.
        same_speaker: the decision.
        threshold_source: where the threshold was measured, or ``"given"``.
        llr: the score as a natural-log likelihood ratio, when the model carries a score
            calibration (``speakerprint calibrate``); None otherwise. Positive favours the
            same speaker; ``exp(llr)`` is how much more likely the score is if it is.
        speech_s: seconds of speech detected in the two recordings, ``(a, b)``
            (:mod:`speakerprint.inference.speech`); None when decided from embeddings alone.
    """

    score: float
    threshold: float
    same_speaker: bool
    threshold_source: str
    llr: float | None = None
    speech_s: tuple[float, float] | None = None

    @classmethod
    def decide(
        cls,
        score: float,
        threshold: float,
        source: str,
        llr: float | None = None,
        speech_s: tuple[float, float] | None = None,
    ) -> VerificationResult:
        """Same speaker when ``score >= threshold``.

        Raises:
            ValueError: a threshold that is not a finite number.
        """
        if not math.isfinite(threshold):
            raise ValueError(f"the threshold must be a finite number, got {threshold}")
        llr = None if llr is None else float(llr)
        if speech_s is not None:
            speech_s = (float(speech_s[0]), float(speech_s[1]))
        return cls(float(score), float(threshold), bool(score >= threshold), source, llr, speech_s)

    def to_dict(self) -> dict[str, float | bool | str | dict | None]:
        """The fields as JSON-ready values; ``speech_s`` as ``{"a": seconds, "b": seconds}``."""
        fields = asdict(self)
        if self.speech_s is not None:
            fields["speech_s"] = {"a": self.speech_s[0], "b": self.speech_s[1]}
        return fields
