"""How much speech an input holds, and the rule every speaker decision applies to it.

A speaker embedding of silence, hum or a tenth of a second of a word is not evidence of who is
speaking, yet it is still a vector with a cosine: digital silence against digital silence scores
about 1.0, so it would "verify" as the same speaker and be "identified" as anyone enrolled from
silence, while 0.1 s of a speaker's own voice scores under the threshold against them. So
``verify``, ``enroll`` and ``identify`` (Python API, CLI and HTTP service alike) first measure the
speech in each input with the energy VAD (:class:`~speakerprint.audio.vad.EnergyVad`, its default
settings) and refuse an input with less than ``min_speech_s`` seconds of it, raising
:class:`TooLittleSpeechError` (CLI: one line, exit 2; HTTP: 422 ``too_little_speech``).

:data:`DEFAULT_MIN_SPEECH_S` was set on real recordings (docs/usage.md, "Too little speech"):
the shipped model's errors grow quickly below a second of speech, and 2641 of the 2646
speechocean762 utterances (1.6 to 20 s long) hold more. ``min_speech_s=0`` turns the check off
(the speech is still measured and reported).

The energy VAD counts any steady sound well above the recording's quiet level as speech (noise,
music): this check stops silence and fragments, not a recording of the wrong kind of sound.

Imports numpy only (no torch), so the onnxruntime encoder applies the same rule.

>>> require_speech(np.zeros(48000, np.float32), 16000, source="silence.wav")  # doctest: +ELLIPSIS
Traceback (most recent call last):
speakerprint.inference.speech.TooLittleSpeechError: silence.wav: 0.00 s of speech in 3.00 s of audio, under the minimum of 1 s ...
>>> wav = np.random.default_rng(0).normal(0, 0.1, 32000).astype(np.float32)  # 2 s, all "speech"
>>> round(require_speech(wav, 16000, source="noise.wav"), 2)
2.0
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np

from speakerprint.audio.vad import EnergyVad
from speakerprint.errors import ConfigError, SpeakerprintError

__all__ = [
    "DEFAULT_MIN_SPEECH_S",
    "TooLittleSpeechError",
    "check_min_speech_s",
    "require_speech",
    "speech_seconds",
]

#: Seconds of detected speech an input needs for verify, enroll and identify.
DEFAULT_MIN_SPEECH_S = 1.0

# Stateless: one detector serves every call and thread.
_VAD = EnergyVad()


class TooLittleSpeechError(SpeakerprintError, ValueError):
    """An input with less detected speech than a speaker decision needs.

    Attributes:
        source: the input as named in the message (a path, an upload's name, "a"...).
        speech_s: seconds of speech detected.
        duration_s: seconds of audio.
        min_speech_s: the minimum it fell short of.
    """

    def __init__(
        self, source: str, speech_s: float, duration_s: float, min_speech_s: float
    ) -> None:
        super().__init__(
            f"{source}: {speech_s:.2f} s of speech in {duration_s:.2f} s of audio, under the "
            f"minimum of {min_speech_s:g} s (min_speech_s) for a speaker decision"
        )
        self.source = source
        self.speech_s = speech_s
        self.duration_s = duration_s
        self.min_speech_s = min_speech_s


def check_min_speech_s(min_speech_s: float) -> float:
    """``min_speech_s`` as a float, or ConfigError unless it is a finite number >= 0."""
    if isinstance(min_speech_s, bool) or not isinstance(min_speech_s, (int, float)):
        raise ConfigError(f"min_speech_s must be a number of seconds, got {min_speech_s!r}")
    if not (math.isfinite(min_speech_s) and min_speech_s >= 0):
        raise ConfigError(f"min_speech_s must be finite and >= 0, got {min_speech_s!r}")
    return float(min_speech_s)


def speech_seconds(wav: np.ndarray, sample_rate: int) -> float:
    """Seconds of speech the energy VAD finds in a mono waveform (float in [-1, 1])."""
    return float(sum(segment.duration_s for segment in _VAD(wav, sample_rate)))


def require_speech(
    wav: np.ndarray | Iterable[np.ndarray],
    sample_rate: int,
    *,
    source: str,
    min_speech_s: float = DEFAULT_MIN_SPEECH_S,
) -> float:
    """The seconds of speech in ``wav`` (to the millisecond), once they reach ``min_speech_s``.

    Args:
        wav: a mono waveform (num_samples,), or its consecutive blocks as
            :func:`~speakerprint.audio.stream_audio` yields them, so that a long file is
            measured without being held whole. Each block is measured on its own (the energy
            VAD sets its threshold from the block's loud and quiet frames), so blocks should
            hold seconds of audio: with 30 s blocks a long file measures within a few percent
            of the whole (tests/inference/test_speech.py).
        sample_rate: the waveform's rate in Hz.
        source: how the message names the input.
        min_speech_s: seconds of speech needed; 0 accepts anything.

    Raises:
        TooLittleSpeechError: less speech than ``min_speech_s``.
        ConfigError: a ``min_speech_s`` that is negative or not a number.
    """
    min_speech_s = check_min_speech_s(min_speech_s)
    blocks = [wav] if isinstance(wav, np.ndarray) else wav
    speech_s = num_samples = 0
    for block in blocks:
        speech_s += speech_seconds(block, sample_rate)
        num_samples += len(block)
    speech_s = round(speech_s, 3)  # the VAD's edges are ~10 ms apart: no more digits to report
    if speech_s < min_speech_s:
        raise TooLittleSpeechError(source, speech_s, num_samples / sample_rate, min_speech_s)
    return speech_s
