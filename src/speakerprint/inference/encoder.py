"""A small inference interface: load a bundle, embed audio, verify two recordings."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from speakerprint.audio import load_audio, resample
from speakerprint.errors import BundleError
from speakerprint.models.bundle import Bundle, load_bundle

#: The model that ships with the package (see README: ECAPA-TDNN C=512 trained on the 100 training
#: speakers of speechocean762's train split).
DEFAULT_MODEL_NAME = "ecapa_c512_speechocean762"

AudioInput = str | os.PathLike | np.ndarray | torch.Tensor


def default_model_path() -> Path:
    return Path(__file__).resolve().parent.parent / "pretrained" / DEFAULT_MODEL_NAME


@dataclass(frozen=True)
class VerificationResult:
    score: float  # cosine similarity in [-1, 1]
    threshold: float
    same_speaker: bool  # score >= threshold
    threshold_source: str  # where the threshold was measured, or "given"

    def to_dict(self) -> dict:
        return {
            "score": self.score,
            "threshold": self.threshold,
            "same_speaker": self.same_speaker,
            "threshold_source": self.threshold_source,
        }


class SpeakerEncoder:
    """Speaker embeddings and verification from a model bundle.

    >>> enc = SpeakerEncoder.from_pretrained()                  # doctest: +SKIP
    >>> emb = enc.embed("speaker1.wav")                         # doctest: +SKIP
    >>> enc.verify("speaker1.wav", "maybe_speaker1.flac").same_speaker  # doctest: +SKIP
    True
    """

    def __init__(self, bundle: Bundle) -> None:
        self.bundle = bundle
        bundle.encoder.eval()
        bundle.fbank.eval()

    @classmethod
    def from_pretrained(
        cls, path: str | os.PathLike | None = None, *, device: str | torch.device = "cpu"
    ) -> SpeakerEncoder:
        """Load a bundle folder; ``None`` loads the model that ships with speakerprint."""
        if path is None:
            path = default_model_path()
            if not path.is_dir():
                raise BundleError(
                    f"the default model is not installed at {path}; pass a bundle path "
                    "(a run folder's bundle/ from `speakerprint train`)"
                )
        return cls(load_bundle(path, device=device))

    @property
    def sample_rate(self) -> int:
        return self.bundle.sample_rate

    @property
    def embed_dim(self) -> int:
        return self.bundle.encoder.embed_dim

    def _waveform(self, audio: AudioInput, sample_rate: int | None) -> np.ndarray:
        if isinstance(audio, (str, os.PathLike)):
            return load_audio(audio, self.sample_rate)
        wav = audio.detach().cpu().numpy() if isinstance(audio, torch.Tensor) else np.asarray(audio)
        if wav.ndim != 1:
            raise ValueError(f"expected a mono waveform of shape (samples,), got {wav.shape}")
        wav = wav.astype(np.float32, copy=False)
        if not np.isfinite(wav).all():
            raise ValueError("the waveform contains NaN or Inf samples")
        sr = self.sample_rate if sample_rate is None else sample_rate
        return resample(wav, sr, self.sample_rate) if sr != self.sample_rate else wav

    def embed(self, audio: AudioInput, sample_rate: int | None = None) -> np.ndarray:
        """The embedding of one recording, (embed_dim,) float32, not length-normalised.

        ``audio`` is a file path or a mono waveform in [-1, 1]; ``sample_rate`` is the waveform's
        rate (default: the model's) and is ignored for paths, which are resampled as they load.
        """
        wav = torch.from_numpy(self._waveform(audio, sample_rate))[None]
        return self.bundle.embed_batch(wav).cpu().numpy()[0]

    def embed_batch(self, wavs: torch.Tensor, lengths: torch.Tensor | None = None) -> np.ndarray:
        """Embeddings of zero-padded waveforms (B, N) at the model's rate; lengths (B,) samples."""
        return self.bundle.embed_batch(wavs, lengths).cpu().numpy()

    @staticmethod
    def score(emb_a: np.ndarray, emb_b: np.ndarray) -> float:
        """Cosine similarity of two embeddings."""
        a = np.asarray(emb_a, dtype=np.float64)
        b = np.asarray(emb_b, dtype=np.float64)
        return float(a @ b / max(np.linalg.norm(a) * np.linalg.norm(b), 1e-12))

    def verify(
        self,
        a: AudioInput,
        b: AudioInput,
        *,
        threshold: float | None = None,
        sample_rate: int | None = None,
    ) -> VerificationResult:
        """Decide whether two recordings share a speaker.

        The threshold is the one measured when the bundle was trained (stated in
        ``threshold_source``) unless one is given.
        """
        if threshold is None:
            measured = self.bundle.threshold
            if measured is None:
                raise BundleError("this bundle has no measured threshold: pass threshold=...")
            threshold, source = measured.value, f"{measured.method} on {measured.measured_on}"
        else:
            source = "given"
        score = self.score(self.embed(a, sample_rate), self.embed(b, sample_rate))
        return VerificationResult(
            score=score,
            threshold=float(threshold),
            same_speaker=score >= threshold,
            threshold_source=source,
        )
