"""Audio input: one loader for every format, resampling and header reads.

>>> from speakerprint.audio import load_audio, audio_info
>>> wav = load_audio("utt.flac", 16000)  # doctest: +SKIP
>>> wav.ndim, wav.dtype  # doctest: +SKIP
(1, dtype('float32'))
"""

from __future__ import annotations

from speakerprint.audio.io import (
    AudioInfo,
    AudioLoadError,
    AudioTooLongError,
    audio_info,
    fit_to_length,
    load_audio,
    load_audio_bytes,
    resample,
    stream_audio,
)

__all__ = [
    "AudioInfo",
    "AudioLoadError",
    "AudioTooLongError",
    "audio_info",
    "fit_to_length",
    "load_audio",
    "load_audio_bytes",
    "resample",
    "stream_audio",
]
