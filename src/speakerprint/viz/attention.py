"""Attentive-pooling weights over time: what the pooling listens to in one recording.

ECAPA-TDNN and TitaNet pool their frame features with channel-dependent attention: for every
channel c, weights alpha[c, t] over the frames t that sum to 1. The figure draws them under the
waveform and a speech-activity track: the heat map of alpha (channels sorted by the frame where
they peak), and their mean over channels.

Channel-dependent attention is only worth its parameters if the channels attend differently. The
ECAPA seed reported how alike the channels' curves are; :func:`channel_similarity` measures that
as the mean pairwise cosine similarity of the channels' alpha curves (1 when every channel
attends alike, whatever the curve) and their mean pairwise Pearson correlation (1 when the
curves are equal up to scale and offset; channels with constant alpha are left out of it).

The speech track comes from :mod:`speakerprint.audio.vad` (the energy detector by default, Silero
with ``vad="silero"``), so the figure shows whether attention follows speech or silence.

>>> result = attention_of_file("runs/x/bundle", "a.wav")  # doctest: +SKIP
>>> result.similarity.mean_cosine  # doctest: +SKIP
0.83
>>> save_figure(plot_attention(result), "attention.png")  # doctest: +SKIP
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from speakerprint.errors import ConfigError
from speakerprint.viz._common import bundle_label, new_figure

if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.figure import Figure

__all__ = [
    "AttentionResult",
    "ChannelSimilarity",
    "attention_of_file",
    "attention_of_waveform",
    "channel_similarity",
    "plot_attention",
]


@dataclass(frozen=True)
class ChannelSimilarity:
    """How alike the channels' attention curves are.

    Attributes:
        mean_cosine: mean over channel pairs of the cosine similarity of their alpha curves, in
            [0, 1] (alpha is non-negative); 1 when all curves are proportional.
        mean_correlation: mean over pairs of the Pearson correlation of the curves, in [-1, 1];
            NaN with fewer than two non-constant channels.
        median_peak_ratio: median over channels of ``T * max_t alpha[c, t]``: 1 when attention
            is uniform (plain mean and std pooling), T when each channel picks one frame.
        num_channels: C; ``num_frames``: T.
    """

    mean_cosine: float
    mean_correlation: float
    median_peak_ratio: float
    num_channels: int
    num_frames: int

    def to_dict(self) -> dict[str, float | int]:
        return dict(vars(self))


def _mean_pairwise_cosine(rows: np.ndarray) -> float:
    """Mean cosine over distinct pairs of unit rows (R, T) from the norm of their sum:
    ``|sum u|^2 = R + sum over ordered pairs of u_i . u_j``, O(R T) instead of O(R^2 T)."""
    count = len(rows)
    total = rows.sum(axis=0)
    return float((total @ total - count) / (count * (count - 1)))


def channel_similarity(alpha: np.ndarray) -> ChannelSimilarity:
    """Mean pairwise cosine similarity and Pearson correlation of the channels' curves.

    Args:
        alpha: (C, T) attention weights of one utterance (valid frames only), C >= 2.

    >>> curve = np.array([0.1, 0.2, 0.7])
    >>> channel_similarity(np.stack([curve, curve, curve])).mean_cosine
    1.0
    """
    alpha = np.asarray(alpha, dtype=np.float64)
    if alpha.ndim != 2 or alpha.shape[0] < 2 or alpha.shape[1] < 1:
        raise ValueError(f"alpha must be (channels >= 2, frames >= 1), got {alpha.shape}")
    norms = np.linalg.norm(alpha, axis=1, keepdims=True)
    unit = alpha[norms[:, 0] > 0] / norms[norms[:, 0] > 0]
    cosine = _mean_pairwise_cosine(unit) if len(unit) >= 2 else float("nan")
    centred = alpha - alpha.mean(axis=1, keepdims=True)
    spread = np.linalg.norm(centred, axis=1)
    varying = spread > 1e-12 * max(float(np.abs(alpha).max()), 1e-30)
    if varying.sum() >= 2:
        correlation = _mean_pairwise_cosine(centred[varying] / spread[varying, None])
    else:
        correlation = float("nan")
    return ChannelSimilarity(
        mean_cosine=min(cosine, 1.0) if np.isfinite(cosine) else cosine,
        mean_correlation=min(correlation, 1.0) if np.isfinite(correlation) else correlation,
        median_peak_ratio=float(np.median(alpha.max(axis=1) / np.maximum(alpha.sum(axis=1), 1e-30)))
        * alpha.shape[1],
        num_channels=alpha.shape[0],
        num_frames=alpha.shape[1],
    )


@dataclass(frozen=True)
class AttentionResult:
    """One recording through an attentive-pooling model.

    Attributes:
        wav: (N,) the waveform at ``sample_rate``.
        alpha: (C, T) attention weights of the valid frames; each row sums to 1.
        frame_shift_s: seconds between frames (frame t starts at ``t * frame_shift_s``).
        speech: ``(start_s, end_s)`` spans of speech found by the VAD.
        vad: the VAD method that found them.
        similarity: how alike the channels' curves are.
        name: what the figure calls the model and the recording.
    """

    wav: np.ndarray
    sample_rate: int
    alpha: np.ndarray
    frame_shift_s: float
    speech: tuple[tuple[float, float], ...]
    vad: str
    similarity: ChannelSimilarity
    name: str = ""


def attention_of_waveform(
    bundle, wav: np.ndarray, *, name: str = "", vad: str = "energy"
) -> AttentionResult:
    """The attention weights of a bundle's encoder for one waveform at the bundle's rate, and
    the speech spans that ``vad`` (a :data:`speakerprint.audio.vad.VAD_METHODS` name) finds.

    Raises:
        ConfigError: the encoder has no attentive pooling (only ECAPA-TDNN and TitaNet have),
            or an unknown ``vad``.
    """
    import torch

    from speakerprint.audio.vad import VAD_METHODS, make_vad

    if vad not in VAD_METHODS:
        raise ConfigError(f"unknown VAD {vad!r}; choose one of {', '.join(VAD_METHODS)}")

    encoder, fbank = bundle.encoder, bundle.fbank
    if not hasattr(encoder, "attention_weights"):
        raise ConfigError(
            f"{name or 'this model'}: a {type(encoder).__name__} has no attentive pooling; "
            "attention maps exist for ECAPA-TDNN and TitaNet"
        )
    wav = np.asarray(wav, dtype=np.float32)
    if len(wav) < bundle.min_samples:
        raise ConfigError(
            f"{name or 'the recording'}: {len(wav)} samples, shorter than one analysis window "
            f"({bundle.min_samples} samples)"
        )
    was_training = encoder.training, fbank.training
    encoder.eval()
    fbank.eval()
    try:
        with torch.no_grad():
            device = next(encoder.parameters()).device
            feats, frame_lengths = fbank(torch.from_numpy(wav)[None].to(device))
            alpha = encoder.attention_weights(feats, frame_lengths)[0]  # (C, T)
    finally:
        encoder.train(was_training[0])
        fbank.train(was_training[1])
    alpha = alpha[:, : int(frame_lengths[0])].float().cpu().numpy()
    cfg = fbank.config
    segments = make_vad(vad)(wav, cfg.sample_rate)
    return AttentionResult(
        wav=wav,
        sample_rate=cfg.sample_rate,
        alpha=alpha,
        frame_shift_s=cfg.frame_shift_ms / 1000.0,
        speech=tuple((seg.start_s, seg.end_s) for seg in segments),
        vad=vad,
        similarity=channel_similarity(alpha),
        name=name,
    )


def attention_of_file(
    bundle_path: str | os.PathLike,
    audio_path: str | os.PathLike,
    *,
    device: str = "cpu",
    vad: str = "energy",
) -> AttentionResult:
    """:func:`attention_of_waveform` of an audio file (any format), resampled to the bundle's rate."""
    from speakerprint.audio import load_audio
    from speakerprint.models.bundle import load_bundle

    bundle = load_bundle(bundle_path, device=device)
    wav = load_audio(audio_path, bundle.sample_rate)
    label = f"{bundle_label(bundle_path)} ({bundle.encoder.family}) on {Path(audio_path).name}"
    return attention_of_waveform(bundle, wav, name=label, vad=vad)


def plot_attention(result: AttentionResult, *, max_channels: int = 256) -> Figure:
    """Waveform with the speech track, the alpha heat map (channels sorted by their peak frame;
    at most ``max_channels`` of them, evenly picked) and the mean alpha over channels, on one
    time axis. Weights are drawn as alpha x T, so 1 is the uniform weight."""
    alpha = result.alpha
    num_channels, num_frames = alpha.shape
    shown = alpha
    if num_channels > max_channels:
        shown = alpha[np.linspace(0, num_channels - 1, max_channels).round().astype(int)]
    shown = shown[np.argsort(shown.argmax(axis=1), kind="stable")]
    duration_s = len(result.wav) / result.sample_rate
    frame_times = (np.arange(num_frames) + 0.5) * result.frame_shift_s

    fig = new_figure(10.0, 7.5)
    wave_ax, heat_ax, mean_ax = fig.subplots(3, 1, sharex=True, height_ratios=[1, 2, 1])
    times = np.arange(len(result.wav)) / result.sample_rate
    wave_ax.plot(times, result.wav, color="0.3", linewidth=0.4)
    for i, (start_s, end_s) in enumerate(result.speech):
        label = f"speech ({result.vad} VAD)" if i == 0 else None
        wave_ax.axvspan(start_s, end_s, color="tab:green", alpha=0.2, label=label)
    wave_ax.set_ylabel("waveform")
    if result.speech:
        wave_ax.legend(loc="upper right", fontsize="x-small")
    sim = result.similarity
    wave_ax.set_title(
        f"{result.name}\nchannel alpha curves: mean pairwise cosine {sim.mean_cosine:.3f}, "
        f"mean correlation {sim.mean_correlation:.3f}, median peak/uniform "
        f"{sim.median_peak_ratio:.2f} ({num_channels} channels, {num_frames} frames)",
        fontsize="medium",
    )
    # In units of the uniform weight 1/T: 1 everywhere is plain mean pooling, whatever T is,
    # and float noise around a uniform alpha is not stretched over the whole colour scale.
    relative = shown * num_frames
    top = max(2.0, float(np.percentile(relative, 99.5)))
    image = heat_ax.imshow(
        relative,
        aspect="auto",
        origin="lower",
        interpolation="nearest",
        extent=(0.0, num_frames * result.frame_shift_s, 0, len(shown)),
        cmap="magma",
        vmin=0.0,
        vmax=top,
    )
    # An inset colour bar keeps the three panels' time axes aligned.
    fig.colorbar(image, cax=heat_ax.inset_axes((1.005, 0.0, 0.012, 1.0)), label="alpha x T")
    heat_ax.set_ylabel(f"channel ({len(shown)} of {num_channels},\nsorted by peak frame)")
    mean_alpha = alpha.mean(axis=0) * num_frames
    mean_ax.plot(
        frame_times, mean_alpha, color="tab:blue", linewidth=1.0, label="mean over channels"
    )
    mean_ax.axhline(1.0, color="0.5", linestyle=":", linewidth=0.8, label="uniform (1/T)")
    mean_ax.set_ylim(0.0, max(2.0, 1.1 * float(mean_alpha.max())))
    mean_ax.set_ylabel("alpha x T")
    mean_ax.set_xlabel("time (s)")
    mean_ax.set_xlim(0.0, duration_s)
    mean_ax.legend(loc="upper right", fontsize="x-small")
    return fig
