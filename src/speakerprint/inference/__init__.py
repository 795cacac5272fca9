"""Inference: embeddings and verification from a model bundle.

Names are imported on first use, so that ``speakerprint.inference.result`` can be used without
torch (by the onnxruntime encoder).
"""

from __future__ import annotations

_LAZY = {
    "SpeakerEncoder": "encoder",
    "default_model_path": "encoder",
    "SegmentEmbeddings": "encoder",
    "EnrollmentStore": "store",
    "VerificationResult": "result",
    "TooLittleSpeechError": "speech",
}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f"speakerprint.inference.{_LAZY[name]}"), name)
    raise AttributeError(f"module 'speakerprint.inference' has no attribute {name!r}")


__all__ = sorted(_LAZY)
