"""Inference: embeddings and verification from a model bundle."""

from speakerprint.inference.encoder import SpeakerEncoder, VerificationResult, default_model_path

__all__ = ["SpeakerEncoder", "VerificationResult", "default_model_path"]
