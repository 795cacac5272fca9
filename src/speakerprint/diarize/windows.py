"""Speech regions and sliding-window embeddings of a recording, decoded as a stream.

The file is decoded in blocks (:func:`speakerprint.audio.stream_audio`); each block gets its own
VAD and windows, and only the embeddings (a few hundred bytes per window) outlive it, so an hour
of audio never sits in memory whole. A speech region cut by a block boundary is joined again in
the regions returned; its windows stop and restart at the boundary.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from speakerprint.audio import audio_info, stream_audio
from speakerprint.errors import ConfigError
from speakerprint.inference.encoder import SpeakerEncoder

__all__ = ["WindowedSpeech", "embed_speech_windows"]

#: Seconds of audio decoded, VAD-ed and embedded at a time.
BLOCK_S = 120.0


@dataclass(frozen=True)
class WindowedSpeech:
    """What diarization clusters: speech regions and the embeddings of windows over them.

    Attributes:
        regions_s: (R, 2) float64 start and end of each speech region in seconds, in order.
        embeddings: (N, D) float32, length-normalised.
        starts_s, ends_s: (N,) float64 bounds of each window in seconds.
        duration_s: length of the recording in seconds.
    """

    regions_s: np.ndarray
    embeddings: np.ndarray
    starts_s: np.ndarray
    ends_s: np.ndarray
    duration_s: float


def _detector(vad: str | Callable | None) -> Callable | None:
    if vad is None or callable(vad):
        return vad
    from speakerprint.audio.vad import make_vad

    try:
        return make_vad(vad)
    except ValueError as e:
        raise ConfigError(f"vad: {e}") from None


def _block_regions(block: np.ndarray, sample_rate: int, detector: Callable | None) -> list:
    """(start, end) samples of the speech in ``block``."""
    if detector is None:
        return [(0, len(block))] if len(block) else []
    try:
        segments = detector(block, sample_rate)
    except ImportError as e:  # silero-vad missing: the message names the extra
        raise ConfigError(str(e)) from None
    spans = [
        (max(0, round(s.start_s * sample_rate)), min(len(block), round(s.end_s * sample_rate)))
        for s in segments
    ]
    return [(a, b) for a, b in spans if b > a]


def _windows(start: int, end: int, window: int, hop: int) -> list[tuple[int, int]]:
    """Windows every ``hop`` over [start, end), plus one aligned to the end when needed; a
    region shorter than a window is one window of its own length."""
    if end - start <= window:
        return [(start, end)]
    spans = [(s, s + window) for s in range(start, end - window + 1, hop)]
    if spans[-1][1] < end:
        spans.append((end - window, end))
    return spans


def embed_speech_windows(
    encoder: SpeakerEncoder,
    path: str | os.PathLike,
    *,
    window_s: float,
    hop_s: float,
    vad: str | Callable | None,
    batch_size: int = 32,
    progress: bool = False,
) -> WindowedSpeech:
    """Speech regions of ``path`` and the embeddings of ``window_s`` windows every ``hop_s``
    seconds laid over each region (``vad=None``: the whole recording is speech).

    Raises:
        AudioLoadError: a missing, empty or corrupt file (the loader's message).
        ConfigError: a bad window, hop or VAD name, or silero without its extra.
    """
    for name, value in (("window_s", window_s), ("hop_s", hop_s)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
            raise ConfigError(f"{name} must be a positive number of seconds, got {value!r}")
    detector = _detector(vad)
    sr = encoder.sample_rate
    window, hop = max(1, round(window_s * sr)), max(1, round(hop_s * sr))
    regions: list[list[int]] = []
    spans: list[tuple[int, int]] = []
    parts: list[np.ndarray] = []
    offset = 0
    bar = None
    for block in stream_audio(path, sr, block_s=BLOCK_S):
        if progress and bar is None:  # after the first block: a bad file fails without a bar
            bar = _progress_bar(path)
        block_spans = []
        for start, end in _block_regions(block, sr, detector):
            if regions and regions[-1][1] == offset + start:  # cut by the block boundary
                regions[-1][1] = offset + end
            else:
                regions.append([offset + start, offset + end])
            block_spans += _windows(start, end, window, hop)
        # One int16 step of noise, as Kaldi's default dither: stretches of exact digital zero
        # (muted or zero-padded audio) otherwise hit the log floor of the features and make
        # every window that touches them alike, whoever speaks in it. Seeded by position, so a
        # file always gives the same result.
        noise = np.random.default_rng(offset).standard_normal(len(block)).astype(np.float32)
        wav = torch.from_numpy(block + noise / 32768.0)
        for first in range(0, len(block_spans), batch_size):
            batch = block_spans[first : first + batch_size]
            parts.append(encoder.embed_batch([wav[s:e] for s, e in batch]))
        spans += [(offset + s, offset + e) for s, e in block_spans]
        offset += len(block)
        if bar is not None:
            bar.update(len(block) / sr)
    if bar is not None:
        bar.close()
    emb = np.concatenate(parts) if parts else np.zeros((0, encoder.embed_dim), np.float32)
    emb = emb / np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12)
    bounds = np.asarray(spans, dtype=np.float64).reshape(-1, 2) / sr
    return WindowedSpeech(
        regions_s=np.asarray(regions, dtype=np.float64).reshape(-1, 2) / sr,
        embeddings=emb.astype(np.float32),
        starts_s=bounds[:, 0].copy(),
        ends_s=bounds[:, 1].copy(),
        duration_s=offset / sr,
    )


def _progress_bar(path: str | os.PathLike):
    from tqdm import tqdm

    try:
        total = audio_info(path).duration_s
    except Exception:  # the header is unreadable: stream_audio will say why
        total = None
    return tqdm(total=total, unit="s", desc=f"diarize {os.fspath(path)}", leave=False)
