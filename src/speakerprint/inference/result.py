"""The result of a verification decision, shared by the torch and the onnxruntime encoders
(this module imports neither)."""

from __future__ import annotations

from dataclasses import asdict, dataclass

__all__ = ["VerificationResult"]


@dataclass(frozen=True)
class VerificationResult:
    """Whether two recordings share a speaker, and on what grounds.

    Attributes:
        score: cosine similarity of the two embeddings, in [-1, 1].
        threshold: the decision threshold: same speaker if ``score >= threshold``.
        same_speaker: the decision.
        threshold_source: where the threshold was measured, or ``"given"``.
    """

    score: float
    threshold: float
    same_speaker: bool
    threshold_source: str

    def to_dict(self) -> dict[str, float | bool | str]:
        return asdict(self)
