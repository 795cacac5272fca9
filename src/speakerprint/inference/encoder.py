"""A small inference interface: load a bundle, embed audio, verify two recordings.

Three ways in, one embedding function underneath (:meth:`Bundle.embed_batch`, which masks padding):
:meth:`SpeakerEncoder.embed` for one recording, :meth:`SpeakerEncoder.embed_batch` for many,
:meth:`SpeakerEncoder.embed_file` for a long recording cut into overlapping windows.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from speakerprint.audio import load_audio, resample, stream_audio
from speakerprint.errors import BundleError, ConfigError
from speakerprint.inference.result import VerificationResult, cosine_score
from speakerprint.inference.speech import DEFAULT_MIN_SPEECH_S, require_speech
from speakerprint.models.bundle import (
    Bundle,
    legacy_model_fingerprints,
    load_bundle,
    model_fingerprint,
)
from speakerprint.utils.memory import release_free_heap

#: The model that ships with the package (see README: ECAPA-TDNN C=512 trained on the 100 training
#: speakers of speechocean762's train split).
DEFAULT_MODEL_NAME = "ecapa_c512_speechocean762"
#: Seconds of audio decoded at a time when embed_file streams a file.
STREAM_BLOCK_S = 30.0

AudioInput = str | os.PathLike | np.ndarray | torch.Tensor


def default_model_path() -> Path:
    from speakerprint.hub.resolve import shipped_model_path

    return shipped_model_path()


@dataclass(frozen=True)
class SegmentEmbeddings:
    """Embeddings of the windows of one recording, in time order.

    Attributes:
        embeddings: (N, embed_dim) float32, not length-normalised; N is 0 when VAD found no speech.
        starts_s: (N,) float64, start of each window in seconds from the start of the recording.
        ends_s: (N,) float64, end of each window in seconds.
    """

    embeddings: np.ndarray
    starts_s: np.ndarray
    ends_s: np.ndarray

    def __len__(self) -> int:
        return len(self.starts_s)


class SpeakerEncoder:
    """Speaker embeddings and verification from a model bundle.

    >>> enc = SpeakerEncoder.from_pretrained()                  # doctest: +SKIP
    >>> emb = enc.embed("speaker1.wav")                         # doctest: +SKIP
    >>> enc.verify("speaker1.wav", "maybe_speaker1.flac").same_speaker  # doctest: +SKIP
    True
    """

    def __init__(
        self, bundle: Bundle, *, path: str | os.PathLike | None = None, compile: bool = False
    ) -> None:
        self.bundle = bundle
        #: The bundle folder this encoder was loaded from (None when built from a Bundle object).
        self.path = None if path is None else Path(path)
        self._fingerprint: str | None = None
        self._legacy_fingerprints: list[str] | None = None
        bundle.encoder.eval()
        bundle.fbank.eval()
        if compile:
            bundle.compile()

    @classmethod
    def from_pretrained(
        cls,
        model: str | os.PathLike | None = None,
        *,
        device: str | torch.device = "cpu",
        compile: bool = False,
    ) -> SpeakerEncoder:
        """Load a model by any of its names; ``None`` loads the model that ships with speakerprint.

        ``model`` is a name from ``speakerprint models`` (an alias such as ``"wespeaker-resnet34"``
        or a hub id such as ``"pyannote/wespeaker-voxceleb-resnet34-LM"``: fetched once at its
        pinned revision, converted, then read from the cache), a local checkpoint file or folder
        in its toolkit's own layout (converted once, never touching the network), or a bundle
        folder. See :func:`speakerprint.hub.resolve_model`.

        ``compile=True`` embeds through ``torch.compile`` (:meth:`Bundle.compile`): faster once
        compiled, at a compile of seconds to a minute for the first input shapes.

        >>> enc = SpeakerEncoder.from_pretrained("wespeaker-resnet34")  # doctest: +SKIP
        """
        from speakerprint.hub.resolve import resolve_model

        path = resolve_model(model)
        return cls(load_bundle(path, device=device), path=path, compile=compile)

    @property
    def sample_rate(self) -> int:
        return self.bundle.sample_rate

    @property
    def embed_dim(self) -> int:
        return self.bundle.encoder.embed_dim

    @property
    def device(self) -> torch.device:
        return next(self.bundle.encoder.parameters()).device

    @property
    def fingerprint(self) -> str:
        """SHA-256 of the bundle's weights and model config
        (:func:`~speakerprint.models.bundle.model_fingerprint`, the same under every release):
        two encoders with the same fingerprint give the same embeddings, so stores check it."""
        if self._fingerprint is None:
            self._fingerprint = model_fingerprint(self._bundle_folder())
        return self._fingerprint

    @property
    def legacy_fingerprints(self) -> list[str]:
        """The fingerprints older releases gave this bundle
        (:func:`~speakerprint.models.bundle.legacy_model_fingerprints`): pass them to
        :func:`~speakerprint.inference.store.open_store` so that a store those releases made is
        migrated to :attr:`fingerprint`, not refused."""
        if self._legacy_fingerprints is None:
            self._legacy_fingerprints = legacy_model_fingerprints(self._bundle_folder())
        return self._legacy_fingerprints

    def _bundle_folder(self) -> Path:
        if self.path is None:
            raise BundleError(
                "this encoder was built from a Bundle object, not loaded from a folder, so "
                "it has no fingerprint: load it with SpeakerEncoder.from_pretrained(path)"
            )
        return self.path

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

    def embed_batch(
        self,
        wavs: torch.Tensor | np.ndarray | Sequence[np.ndarray | torch.Tensor],
        lengths: torch.Tensor | np.ndarray | Sequence[int] | None = None,
    ) -> np.ndarray:
        """Embeddings of many waveforms at the model's rate: (B, embed_dim) float32.

        ``wavs`` is either a zero-padded batch (B, N) with ``lengths`` (B,) the valid samples of
        each row (None: every row is full), or a list of mono waveforms of any lengths, which are
        padded here. Padding never changes an embedding: row i equals ``embed(wavs[i][:lengths[i]])``
        up to float rounding.

        >>> enc.embed_batch([wav_a, wav_b]).shape  # doctest: +SKIP
        (2, 192)
        """
        if isinstance(wavs, (list, tuple)):
            if lengths is not None:
                raise ValueError("lengths are implied by a list of waveforms: pass lengths=None")
            if not wavs:
                return np.zeros((0, self.embed_dim), dtype=np.float32)
            rows = [torch.as_tensor(np.asarray(w, dtype=np.float32)) for w in wavs]
            if any(r.dim() != 1 for r in rows):
                raise ValueError("expected mono waveforms of shape (samples,)")
            if len({len(r) for r in rows}) == 1:
                # Nothing to pad: the unmasked forward pass (as embed's), about 15% faster.
                wavs = torch.stack(rows)
            else:
                lengths = torch.tensor([len(r) for r in rows], dtype=torch.int64)
                batch = torch.zeros(len(rows), int(lengths.max()))
                for i, r in enumerate(rows):
                    batch[i, : len(r)] = r
                wavs = batch
        wavs = torch.as_tensor(wavs, dtype=torch.float32)
        if lengths is not None:
            lengths = torch.as_tensor(lengths, dtype=torch.int64)
            if lengths.shape != (wavs.shape[0],) or bool((lengths > wavs.shape[-1]).any()):
                raise ValueError(
                    f"lengths must be (batch,) = ({wavs.shape[0]},) samples, none above the "
                    f"padded length {wavs.shape[-1]}; got {lengths.tolist()}"
                )
        return self.bundle.embed_batch(wavs, lengths).cpu().numpy()

    def embed_file(
        self,
        audio: AudioInput,
        *,
        window_s: float = 3.0,
        hop_s: float = 1.5,
        vad: str | Callable | None = None,
        sample_rate: int | None = None,
        batch_size: int = 16,
    ) -> SegmentEmbeddings:
        """Embeddings of overlapping windows of a (long) recording, with their times.

        Windows of ``window_s`` seconds start every ``hop_s`` seconds; when the last regular
        window stops short of the end, one more window is aligned to the end, so every sample is
        covered. A recording (or speech region) shorter than one window gives one window of its
        own length. With ``vad`` ("energy" or "silero"), windows are laid over the detected
        speech regions only, and a recording without speech gives no windows (N = 0). A file
        without ``vad`` is decoded as a stream and embedded as its windows complete, so memory
        stays bounded whatever its length (``bench/long_file.py``); with ``vad``, or given as an
        array, the whole recording is in memory (about 230 MB per hour at 16 kHz).

        Args:
            audio: a file path or a mono waveform (see :meth:`embed`).
            window_s: window length in seconds.
            hop_s: distance between window starts in seconds (gaps appear if above window_s).
            vad: None; "energy" or "silero" (:func:`speakerprint.audio.vad.make_vad`); or a
                detector such as ``EnergyVad(min_silence_s=0.5)``: ``vad(wav, sample_rate)``
                returning segments with ``start_s`` and ``end_s``.
            sample_rate: the waveform's rate, for array input.
            batch_size: windows per forward pass.

        >>> segs = enc.embed_file("meeting.m4a", window_s=2.0, hop_s=1.0)  # doctest: +SKIP
        >>> segs.embeddings.shape, segs.starts_s[:3], segs.ends_s[:3]  # doctest: +SKIP
        ((3599, 192), array([0., 1., 2.]), array([2., 3., 4.]))
        """
        for name, value in (("window_s", window_s), ("hop_s", hop_s)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
                raise ConfigError(f"{name} must be a positive number of seconds, got {value!r}")
            if value * self.sample_rate < 1:
                raise ConfigError(f"{name}={value} is shorter than one sample")
        if batch_size < 1:
            raise ConfigError(f"batch_size must be at least 1, got {batch_size}")
        detector = None if vad is None else _vad_detector(vad)
        window = round(window_s * self.sample_rate)
        hop = round(hop_s * self.sample_rate)
        if detector is None and isinstance(audio, (str, os.PathLike)):
            spans, parts = self._streamed_windows(audio, window, hop, batch_size)
        else:
            wav = self._waveform(audio, sample_rate)
            regions = [(0, len(wav))] if detector is None else self._speech_regions(wav, detector)
            spans = [w for start, end in regions for w in _windows(start, end, window, hop)]
            wav_t = torch.from_numpy(wav)
            parts = [
                self.embed_batch([wav_t[s:e] for s, e in spans[first : first + batch_size]])
                for first in range(0, len(spans), batch_size)
            ]
        embeddings = np.zeros((len(spans), self.embed_dim), dtype=np.float32)
        if parts:
            embeddings[:] = np.concatenate(parts)
        bounds = np.asarray(spans, dtype=np.float64).reshape(-1, 2) / self.sample_rate
        return SegmentEmbeddings(embeddings, bounds[:, 0].copy(), bounds[:, 1].copy())

    def _streamed_windows(
        self, path: str | os.PathLike, window: int, hop: int, batch_size: int
    ) -> tuple[list[tuple[int, int]], list[np.ndarray]]:
        """:func:`_windows` over a file decoded as a stream, embedded batch by batch as the
        windows complete: the spans, batches and embeddings of the decoded-array path, while
        memory holds one decoded block, the samples still needed and one batch."""
        spans: list[tuple[int, int]] = []
        parts: list[np.ndarray] = []
        buffer, buffer_start, next_start, done = np.zeros(0, np.float32), 0, 0, 0

        def flush(count: int) -> None:
            nonlocal done
            batch = spans[done : done + count]
            parts.append(
                self.embed_batch(
                    [
                        torch.from_numpy(buffer[s - buffer_start : e - buffer_start])
                        for s, e in batch
                    ]
                )
            )
            done += len(batch)
            # A batch's activations come and go in large blocks that fragment glibc's heap:
            # without this the resident size grows with the recording (bench/long_file.py).
            release_free_heap()

        for block in stream_audio(path, self.sample_rate, block_s=STREAM_BLOCK_S):
            buffer = np.concatenate([buffer, block])
            end = buffer_start + len(buffer)
            while next_start + window <= end:
                spans.append((next_start, next_start + window))
                next_start += hop
                if len(spans) - done == batch_size:
                    flush(batch_size)
            # Still needed: the windows waiting for a batch, later regular windows (from
            # next_start) and the window aligned to the end (from next_start - hop or later).
            keep_from = spans[done][0] if done < len(spans) else next_start - hop
            keep_from = max(keep_from, buffer_start)
            buffer, buffer_start = buffer[keep_from - buffer_start :], keep_from
        end = buffer_start + len(buffer)
        if not spans and end > 0:
            spans.append((0, end))
        elif spans and spans[-1][1] < end:
            spans.append((end - window, end))
        if done < len(spans):
            flush(len(spans) - done)
        return spans, parts

    def _speech_regions(self, wav: np.ndarray, detector: Callable) -> list[tuple[int, int]]:
        """Speech regions as (start, end) samples of ``wav``."""
        try:
            segments = detector(wav, self.sample_rate)
        except ImportError as e:  # silero-vad not installed: the message names the extra
            raise ConfigError(str(e)) from None
        spans = [
            (
                max(0, round(seg.start_s * self.sample_rate)),
                min(len(wav), round(seg.end_s * self.sample_rate)),
            )
            for seg in segments
        ]
        return [(start, end) for start, end in spans if end > start]

    score = staticmethod(cosine_score)

    def verify(
        self,
        a: AudioInput,
        b: AudioInput,
        *,
        threshold: float | None = None,
        sample_rate: int | None = None,
        min_speech_s: float = DEFAULT_MIN_SPEECH_S,
    ) -> VerificationResult:
        """Decide whether two recordings share a speaker.

        The threshold is the one measured when the bundle was trained or calibrated (stated in
        ``threshold_source``) unless one is given (:meth:`Bundle.decision_threshold`). A bundle
        with a score calibration (``speakerprint calibrate``) also gives the score as a
        log-likelihood ratio, ``llr``.

        Each recording must hold ``min_speech_s`` seconds of speech
        (:func:`~speakerprint.inference.speech.require_speech`; 0 accepts anything): the score
        of silence or of a fragment says nothing about the speakers (silence against silence
        scores near 1), so such a pair is refused rather than decided. The speech found is in
        the result's ``speech_s``.

        Raises:
            TooLittleSpeechError: a recording with less than ``min_speech_s`` of speech.
            ConfigError: a threshold that is not a finite number, a bad ``min_speech_s``.
            BundleError: no threshold given and none measured, or an unreadable calibration.
        """
        self.bundle.decision_threshold(threshold)  # a bad or missing threshold fails first
        wav_a, wav_b = self._waveform(a, sample_rate), self._waveform(b, sample_rate)
        speech_s = (
            require_speech(
                wav_a, self.sample_rate, source=_source(a, "a"), min_speech_s=min_speech_s
            ),
            require_speech(
                wav_b, self.sample_rate, source=_source(b, "b"), min_speech_s=min_speech_s
            ),
        )
        return self.verify_embeddings(
            self.embed(wav_a), self.embed(wav_b), threshold=threshold, speech_s=speech_s
        )

    def verify_embeddings(
        self,
        emb_a: np.ndarray,
        emb_b: np.ndarray,
        *,
        threshold: float | None = None,
        speech_s: tuple[float, float] | None = None,
    ) -> VerificationResult:
        """:meth:`verify`'s decision for two embeddings (D,) already computed, e.g. of long
        files embedded by :func:`speakerprint.inference.extract.embed_recording`. No speech is
        measured here: ``speech_s`` is what the caller measured, carried into the result."""
        threshold, source = self.bundle.decision_threshold(threshold)
        score = cosine_score(emb_a, emb_b)
        llr = None
        if self.bundle.calibration is not None:
            from speakerprint.eval.calibration import Calibration

            try:
                calibration = Calibration.from_dict(self.bundle.calibration)
            except ValueError as e:
                raise BundleError(
                    f"the model bundle's score calibration is unreadable: {e}"
                ) from None
            llr = float(calibration.llr(score))
        return VerificationResult.decide(score, threshold, source, llr, speech_s)


def _source(audio: AudioInput, name: str) -> str:
    """How an error names an input: its path, or ``name`` for a waveform."""
    return str(audio) if isinstance(audio, (str, os.PathLike)) else name


def _vad_detector(vad: str | Callable) -> Callable:
    """A VAD method's name -> its detector (:mod:`speakerprint.audio.vad`); a detector as is."""
    if not isinstance(vad, str):
        if not callable(vad):
            raise ConfigError(f"vad must be None, 'energy', 'silero' or a VAD object, got {vad!r}")
        return vad
    try:
        from speakerprint.audio.vad import make_vad
    except ImportError:
        raise ConfigError(
            f"vad={vad!r} needs the module speakerprint.audio.vad, which this installation "
            "does not have; use vad=None"
        ) from None
    try:
        return make_vad(vad)
    except ValueError as e:
        raise ConfigError(f"vad: {e}") from None


def _windows(start: int, end: int, window: int, hop: int) -> list[tuple[int, int]]:
    """(start, end) sample spans of the windows over [start, end): regular ones every ``hop``,
    plus one aligned to ``end`` when the regular ones stop short of it."""
    if end - start <= window:
        return [(start, end)] if end > start else []
    spans = [(s, s + window) for s in range(start, end - window + 1, hop)]
    if spans[-1][1] < end:
        spans.append((end - window, end))
    return spans
