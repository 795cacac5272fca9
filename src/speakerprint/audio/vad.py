"""Voice activity detection: where in a recording someone speaks, as ``(start_s, end_s)`` spans.

Two detectors with one interface, ``vad(wav, sample_rate) -> list[SpeechSegment]``:

- :class:`SileroVad`: the Silero VAD network (the ``silero-vad`` package ships its weights; the
  ``vad`` extra), robust to noise and music. Runs on CPU at many times real time.
- :class:`EnergyVad`: frame energy against a threshold set from the recording's own loud and quiet
  frames. No dependency and exact on clean recordings with silent stretches, but any loud noise is
  "speech" to it: a fallback, not a replacement.

Both close gaps shorter than ``min_silence_s``, drop segments shorter than ``min_speech_s`` and pad
each segment by ``pad_s`` on both sides (clipped to the recording), so their outputs compare.

>>> vad = make_vad("energy")
>>> wav = np.concatenate([np.zeros(8000), 0.5 * np.sin(np.arange(16000) * 0.3), np.zeros(8000)])
>>> [(round(s.start_s, 2), round(s.end_s, 2)) for s in vad(wav.astype(np.float32), 16000)]
[(0.44, 1.56)]
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np

from speakerprint.audio.io import resample

__all__ = ["VAD_METHODS", "EnergyVad", "SileroVad", "SpeechSegment", "make_vad"]

VAD_METHODS: tuple[str, ...] = ("energy", "silero")


@dataclass(frozen=True)
class SpeechSegment:
    """One stretch of speech, in seconds from the start of the waveform given to the detector."""

    start_s: float
    end_s: float

    @property
    def duration_s(self) -> float:
        return self.end_s - self.start_s


def _check_wav(wav: np.ndarray, sample_rate: int) -> np.ndarray:
    wav = np.asarray(wav, dtype=np.float32)
    if wav.ndim != 1:
        raise ValueError(f"expected a mono waveform of shape (num_samples,), got {wav.shape}")
    if isinstance(sample_rate, bool) or not isinstance(sample_rate, int) or sample_rate <= 0:
        raise ValueError(f"sample_rate must be a positive int, got {sample_rate!r}")
    return wav


def _check_durations(min_speech_s: float, min_silence_s: float, pad_s: float) -> None:
    for name, value in (
        ("min_speech_s", min_speech_s),
        ("min_silence_s", min_silence_s),
        ("pad_s", pad_s),
    ):
        if not (math.isfinite(value) and value >= 0):
            raise ValueError(f"{name} must be finite and >= 0, got {value}")


def _tidy(
    spans: list[tuple[float, float]],
    total_s: float,
    *,
    min_speech_s: float,
    min_silence_s: float,
    pad_s: float,
) -> list[SpeechSegment]:
    """Close short gaps, drop short segments, pad, clip to ``[0, total_s]`` and merge overlaps."""
    merged: list[list[float]] = []
    for start, end in sorted(spans):
        if merged and start - merged[-1][1] < min_silence_s:
            merged[-1][1] = max(merged[-1][1], end)
        else:
            merged.append([start, end])
    padded: list[list[float]] = []
    for start, end in merged:
        if end - start < min_speech_s:
            continue
        start, end = max(0.0, start - pad_s), min(total_s, end + pad_s)
        if padded and start <= padded[-1][1]:
            padded[-1][1] = end
        else:
            padded.append([start, end])
    return [SpeechSegment(float(start), float(end)) for start, end in padded]


class EnergyVad:
    """Speech where the frame energy exceeds a threshold set from the recording itself.

    Frames of ``frame_ms`` every ``hop_ms``; energy in dB full scale (mean square). The threshold
    is the highest of: the loud level (95th percentile of frame energies) plus ``relative_db``,
    the quiet level (10th percentile) plus ``noise_margin_db``, and ``floor_db``; but at most
    3 dB under the loud level, so a recording of uniform loudness is all speech. A frame over it
    stands for the ``hop_ms`` around its centre, so boundaries are exact to about a frame.

    Args:
        frame_ms: frame length in milliseconds.
        hop_ms: frame shift in milliseconds.
        relative_db: how far under the loud level speech may be (negative).
        noise_margin_db: how far over the quiet level speech must be.
        floor_db: absolute floor in dBFS: quieter frames are never speech.
        min_speech_s, min_silence_s, pad_s: see the module docstring.

    >>> EnergyVad()(np.zeros(16000, np.float32), 16000)
    []
    """

    def __init__(
        self,
        *,
        frame_ms: float = 25.0,
        hop_ms: float = 10.0,
        relative_db: float = -30.0,
        noise_margin_db: float = 10.0,
        floor_db: float = -55.0,
        min_speech_s: float = 0.25,
        min_silence_s: float = 0.3,
        pad_s: float = 0.05,
    ) -> None:
        if not (frame_ms > 0 and hop_ms > 0):
            raise ValueError(f"frame_ms and hop_ms must be > 0, got {frame_ms}, {hop_ms}")
        _check_durations(min_speech_s, min_silence_s, pad_s)
        self.frame_ms = frame_ms
        self.hop_ms = hop_ms
        self.relative_db = relative_db
        self.noise_margin_db = noise_margin_db
        self.floor_db = floor_db
        self.min_speech_s = min_speech_s
        self.min_silence_s = min_silence_s
        self.pad_s = pad_s

    def frame_energies_db(self, wav: np.ndarray, sample_rate: int) -> np.ndarray:
        """Energy of each frame in dBFS, shape ``(num_frames,)``; frame ``i`` starts at ``i*hop``."""
        wav = _check_wav(wav, sample_rate)
        frame = max(1, round(self.frame_ms * sample_rate / 1000))
        hop = max(1, round(self.hop_ms * sample_rate / 1000))
        if len(wav) == 0:
            return np.zeros(0, dtype=np.float64)
        num_frames = 1 + max(0, -(-(len(wav) - frame) // hop))
        padded = np.zeros((num_frames - 1) * hop + frame, dtype=np.float64)
        padded[: len(wav)] = wav
        # Cumulative sums give every frame's sum of squares without a (num_frames, frame) copy.
        cumulative = np.concatenate([[0.0], np.cumsum(padded * padded)])
        starts = np.arange(num_frames) * hop
        ends = np.minimum(starts + frame, len(wav))
        power = (cumulative[ends] - cumulative[starts]) / np.maximum(ends - starts, 1)
        return 10.0 * np.log10(np.maximum(power, 1e-12))

    def __call__(self, wav: np.ndarray, sample_rate: int) -> list[SpeechSegment]:
        """Speech segments of ``wav`` (mono, float in [-1, 1]) in seconds."""
        energy = self.frame_energies_db(wav, sample_rate)
        total_s = len(wav) / sample_rate
        if len(energy) == 0:
            return []
        loud, quiet = np.percentile(energy, [95, 10])
        threshold = max(loud + self.relative_db, quiet + self.noise_margin_db, self.floor_db)
        threshold = min(threshold, loud - 3.0)
        if loud < self.floor_db:
            return []
        speech = energy > threshold
        hop_s, frame_s = self.hop_ms / 1000, self.frame_ms / 1000
        # Runs of speech frames; each frame stands for the hop around its centre, so a run of
        # frames i..j spans [i*hop + (frame - hop)/2, j*hop + (frame + hop)/2).
        edges = np.flatnonzero(np.diff(np.concatenate([[0], speech.astype(np.int8), [0]])))
        spans = [
            (
                max(0.0, float(first) * hop_s + (frame_s - hop_s) / 2),
                min(float(last - 1) * hop_s + (frame_s + hop_s) / 2, total_s),
            )
            for first, last in zip(edges[::2], edges[1::2])
        ]
        return _tidy(
            spans,
            total_s,
            min_speech_s=self.min_speech_s,
            min_silence_s=self.min_silence_s,
            pad_s=self.pad_s,
        )


class SileroVad:
    """Speech segments from the Silero VAD network (``pip install 'speakerprint[vad]'``).

    The model (TorchScript, shipped inside the ``silero-vad`` wheel) is loaded on first use. It
    runs at 8 or 16 kHz; audio at any other rate is resampled to 16 kHz first.

    Args:
        threshold: speech probability over which a 32 ms window is speech.
        min_speech_s, min_silence_s, pad_s: see the module docstring.

    >>> SileroVad()(wav, 16000)  # doctest: +SKIP
    [SpeechSegment(start_s=0.61, end_s=2.11)]
    """

    def __init__(
        self,
        *,
        threshold: float = 0.5,
        min_speech_s: float = 0.25,
        min_silence_s: float = 0.3,
        pad_s: float = 0.05,
    ) -> None:
        if not 0 < threshold < 1:
            raise ValueError(f"threshold must be in (0, 1), got {threshold}")
        _check_durations(min_speech_s, min_silence_s, pad_s)
        self.threshold = threshold
        self.min_speech_s = min_speech_s
        self.min_silence_s = min_silence_s
        self.pad_s = pad_s
        self._model = None

    def _load(self):
        if self._model is None:
            try:
                from silero_vad import load_silero_vad
            except ImportError:
                raise ImportError(
                    "Silero VAD needs the silero-vad package: pip install 'speakerprint[vad]' "
                    "(or use the energy VAD)"
                ) from None
            with warnings.catch_warnings():
                # The package's loader uses APIs its dependencies have deprecated; not ours to fix.
                warnings.simplefilter("ignore", DeprecationWarning)
                self._model = load_silero_vad(onnx=False)
        return self._model

    def __call__(self, wav: np.ndarray, sample_rate: int) -> list[SpeechSegment]:
        """Speech segments of ``wav`` (mono, float in [-1, 1]) in seconds."""
        import torch

        wav = _check_wav(wav, sample_rate)
        model = self._load()  # first: without the package, its error names the extra
        from silero_vad import get_speech_timestamps

        total_s = len(wav) / sample_rate
        if sample_rate not in (8000, 16000):
            wav, sample_rate = resample(wav, sample_rate, 16000), 16000
        with torch.inference_mode():
            stamps = get_speech_timestamps(
                torch.from_numpy(np.ascontiguousarray(wav)),
                model,
                threshold=self.threshold,
                sampling_rate=sample_rate,
                # Our own _tidy does the merging, dropping and padding, as for EnergyVad.
                min_speech_duration_ms=0,
                min_silence_duration_ms=0,
                speech_pad_ms=0,
                return_seconds=False,
            )
        spans = [(s["start"] / sample_rate, min(s["end"] / sample_rate, total_s)) for s in stamps]
        return _tidy(
            spans,
            total_s,
            min_speech_s=self.min_speech_s,
            min_silence_s=self.min_silence_s,
            pad_s=self.pad_s,
        )


def make_vad(method: str) -> EnergyVad | SileroVad:
    """The detector called ``method`` (one of :data:`VAD_METHODS`) with its default settings;
    build :class:`EnergyVad` or :class:`SileroVad` directly to change them.

    Raises:
        ValueError: an unknown method, naming the valid ones.
    """
    if method == "energy":
        return EnergyVad()
    if method == "silero":
        return SileroVad()
    raise ValueError(f"unknown VAD method {method!r}; choose one of {', '.join(VAD_METHODS)}")
