"""Speaker embeddings and verification from an exported ONNX model, without torch.

Needs only numpy, the audio readers (soundfile, PyAV, soxr) and onnxruntime
(``pip install 'speakerprint[onnx]'``): nothing here imports torch, so a server that only embeds
and verifies can leave torch out. The model must have been exported with its features inside
(``speakerprint export BUNDLE --format onnx --with-features``); the sidecar JSON written beside it
gives the sample rate, the shortest input and the decision threshold.

>>> enc = OnnxSpeakerEncoder.from_file("ecapa.onnx")          # doctest: +SKIP
>>> enc.embed("a.wav").shape                                  # doctest: +SKIP
(192,)
>>> enc.verify("a.wav", "b.flac").same_speaker                # doctest: +SKIP
True
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from speakerprint.audio.io import fit_to_length, load_audio, resample
from speakerprint.errors import BundleError
from speakerprint.inference.result import VerificationResult, cosine_score
from speakerprint.inference.speech import DEFAULT_MIN_SPEECH_S, require_speech
from speakerprint.utils.export_format import (
    EXPORT_FORMAT,
    EXPORT_FORMAT_VERSION,
    INPUT_KINDS,
    read_sidecar,
    sidecar_path,
)

# The sidecar format lives in utils.export_format, which export/ writes with; re-exported here.
__all__ = [
    "EXPORT_FORMAT",
    "EXPORT_FORMAT_VERSION",
    "INPUT_KINDS",
    "OnnxSpeakerEncoder",
    "read_sidecar",
    "sidecar_path",
]


def _import_onnxruntime():
    try:
        import onnxruntime
    except ImportError as e:
        raise ImportError(
            "ONNX inference needs onnxruntime: pip install 'speakerprint[onnx]'"
        ) from e
    return onnxruntime


class OnnxSpeakerEncoder:
    """Embeddings and verification from an ONNX model exported with its features inside.

    The interface follows :class:`speakerprint.SpeakerEncoder`: ``embed``, ``embed_batch``,
    ``score``, ``verify``, with embeddings ``(embed_dim,)`` float32, not length-normalised.
    Waveforms shorter than the model's shortest input are repeated up to it, as the torch
    encoder does, so both give the same embedding of the same audio.
    """

    def __init__(self, session: Any, meta: dict[str, Any], path: Path) -> None:
        self.session = session
        self.meta = meta
        self.path = path

    @classmethod
    def from_file(
        cls, path: str | os.PathLike, *, num_threads: int | None = None
    ) -> OnnxSpeakerEncoder:
        """Load ``path`` (a ``.onnx`` file) and its sidecar ``path + '.json'``.

        ``num_threads`` sets onnxruntime's intra-op threads (default: its own choice).

        Raises:
            BundleError: no model or sidecar, or a model exported without features (it takes
                fbank frames, which only the torch package computes).
        """
        path = Path(path)
        if not path.is_file():
            raise BundleError(f"exported model {path} does not exist")
        meta = read_sidecar(path)
        if meta.get("model_format") != "onnx":
            raise BundleError(f"{path} is a {meta.get('model_format')} export, not ONNX")
        if meta["input_kind"] != "waveform":
            raise BundleError(
                f"{path} was exported without its features (it takes fbank frames): re-export "
                "with `speakerprint export BUNDLE --format onnx --with-features` for inference "
                "without torch"
            )
        ort = _import_onnxruntime()
        options = ort.SessionOptions()
        if num_threads is not None:
            options.intra_op_num_threads = num_threads
            options.inter_op_num_threads = 1
        try:
            session = ort.InferenceSession(
                str(path), sess_options=options, providers=["CPUExecutionProvider"]
            )
        except Exception as e:  # onnxruntime raises its own Fail / InvalidGraph types
            raise BundleError(f"onnxruntime cannot load {path}: {e}") from None
        return cls(session, meta, path)

    @property
    def sample_rate(self) -> int:
        return int(self.meta["sample_rate"])

    @property
    def embed_dim(self) -> int:
        return int(self.meta["embed_dim"])

    @property
    def min_samples(self) -> int:
        return int(self.meta["min_samples"])

    def _waveform(self, audio: str | os.PathLike | np.ndarray, sample_rate: int | None):
        if isinstance(audio, (str, os.PathLike)):
            return load_audio(audio, self.sample_rate)
        wav = np.asarray(audio)
        if wav.ndim != 1:
            raise ValueError(f"expected a mono waveform of shape (samples,), got {wav.shape}")
        wav = wav.astype(np.float32, copy=False)
        if not np.isfinite(wav).all():
            raise ValueError("the waveform contains NaN or Inf samples")
        sr = self.sample_rate if sample_rate is None else sample_rate
        return resample(wav, sr, self.sample_rate) if sr != self.sample_rate else wav

    def embed(
        self, audio: str | os.PathLike | np.ndarray, sample_rate: int | None = None
    ) -> np.ndarray:
        """The embedding of one recording, ``(embed_dim,)`` float32.

        ``audio`` is a file path (any format :func:`speakerprint.audio.load_audio` reads) or a
        mono float waveform in [-1, 1] at ``sample_rate`` (default: the model's).
        """
        wav = self._waveform(audio, sample_rate)
        return self.embed_batch(wav[None], np.array([wav.shape[0]]))[0]

    def embed_batch(self, wavs: np.ndarray, lengths: np.ndarray | None = None) -> np.ndarray:
        """Embeddings ``(B, embed_dim)`` of zero-padded waveforms ``(B, N)`` at the model's rate.

        ``lengths`` (B,) are valid samples per row (default: all N); padding never changes an
        embedding.
        """
        wavs = np.asarray(wavs, dtype=np.float32)
        if wavs.ndim != 2:
            raise ValueError(f"wavs must be (batch, samples), got shape {wavs.shape}")
        if lengths is None:
            lengths = np.full(wavs.shape[0], wavs.shape[1], dtype=np.int64)
        lengths = np.asarray(lengths, dtype=np.int64)
        if lengths.shape != (wavs.shape[0],):
            raise ValueError(f"lengths must be ({wavs.shape[0]},), got {lengths.shape}")
        if (lengths <= 0).any() or (lengths > wavs.shape[1]).any():
            raise ValueError(f"lengths must be in [1, {wavs.shape[1]}], got {lengths.tolist()}")
        wavs, lengths = self._repeat_short(wavs, lengths)
        (emb,) = self.session.run(None, {"wav": wavs, "lengths": lengths})
        return emb.astype(np.float32, copy=False)

    def _repeat_short(self, wavs: np.ndarray, lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Rows shorter than :attr:`min_samples` repeated up to it (the torch encoder's policy)."""
        need = self.min_samples
        short = np.flatnonzero(lengths < need)
        if short.size == 0:
            return wavs, lengths
        width = max(wavs.shape[1], need)
        out = np.zeros((wavs.shape[0], width), dtype=np.float32)
        out[:, : wavs.shape[1]] = wavs
        lengths = lengths.copy()
        for row in short:
            out[row, :need] = fit_to_length(wavs[row, : int(lengths[row])], need)
            lengths[row] = need
        return out, lengths

    score = staticmethod(cosine_score)

    def verify(
        self,
        a: str | os.PathLike | np.ndarray,
        b: str | os.PathLike | np.ndarray,
        *,
        threshold: float | None = None,
        sample_rate: int | None = None,
        min_speech_s: float = DEFAULT_MIN_SPEECH_S,
    ) -> VerificationResult:
        """Decide whether two recordings share a speaker, at the sidecar's threshold unless one
        is given (the sidecar copies the source bundle's measured threshold).

        As :meth:`speakerprint.inference.SpeakerEncoder.verify`, a recording with less than
        ``min_speech_s`` seconds of speech is refused with
        :class:`~speakerprint.inference.speech.TooLittleSpeechError`.
        """
        if threshold is None:
            measured = self.meta.get("threshold")
            if not measured:
                raise BundleError(
                    f"{self.path}: the exported bundle had no measured threshold: pass threshold=..."
                )
            threshold = float(measured["value"])
            source = f"{measured['method']} on {measured['measured_on']}"
        else:
            source = "given"
        wavs = [self._waveform(audio, sample_rate) for audio in (a, b)]
        speech_s = [
            require_speech(
                wav,
                self.sample_rate,
                source=str(audio) if isinstance(audio, (str, os.PathLike)) else name,
                min_speech_s=min_speech_s,
            )
            for wav, audio, name in zip(wavs, (a, b), ("a", "b"))
        ]
        score = cosine_score(self.embed(wavs[0]), self.embed(wavs[1]))
        return VerificationResult.decide(score, threshold, source, speech_s=tuple(speech_s))
