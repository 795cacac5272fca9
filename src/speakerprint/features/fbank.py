"""Kaldi-compatible log-mel filterbank features as one batched ``nn.Module``.

This is the only feature extractor in the package: training, evaluation, inference and export all
call :class:`Fbank`, so features cannot drift apart between them. It reproduces Kaldi's
``compute-fbank-feats`` (and kaldi-native-fbank) with ``snip_edges=true``, power spectrum, no
energy term, run on int16-scale audio: the waveform in [-1, 1] is scaled by 32768 inside.

Per frame, as in Kaldi: dither (training only), DC removal, pre-emphasis, window, zero-pad to a
power of two, power spectrum, triangular mel filters on the ``1127 ln(1 + f/700)`` scale, log with
a floor at float32 epsilon.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from speakerprint.errors import ConfigError
from speakerprint.features._config import check_field_types
from speakerprint.utils.config import dataclass_from_dict

__all__ = ["Fbank", "FbankConfig", "mean_normalize"]

_WINDOWS = ("povey", "hamming", "hann")
_FLOAT32_EPS = float(torch.finfo(torch.float32).eps)


@dataclass(frozen=True)
class FbankConfig:
    """Settings of :class:`Fbank`, in Kaldi's meaning; saved in model bundles via :meth:`to_dict`.

    Attributes:
        sample_rate: expected waveform rate in Hz.
        num_mel_bins: number of triangular mel filters, the feature dimension.
        frame_length_ms: analysis window length in milliseconds.
        frame_shift_ms: hop between frames in milliseconds.
        preemphasis: pre-emphasis coefficient ``p`` in ``x[i] -= p * x[i-1]``.
        dither: std of Gaussian noise added to each frame, in int16 units; training mode only.
        low_freq_hz: lower edge of the first mel filter in Hz.
        high_freq_hz: upper edge of the last mel filter in Hz; ``<= 0`` is an offset from Nyquist.
        window: ``"povey"`` (Hann to the power 0.85), ``"hamming"`` or ``"hann"``.
        remove_dc_offset: subtract each frame's mean before pre-emphasis.
        mean_norm: subtract the utterance mean over valid frames from every valid frame.

    >>> FbankConfig(num_mel_bins=40).to_dict()["num_mel_bins"]
    40
    """

    sample_rate: int = 16000
    num_mel_bins: int = 80
    frame_length_ms: float = 25.0
    frame_shift_ms: float = 10.0
    preemphasis: float = 0.97
    dither: float = 1.0
    low_freq_hz: float = 20.0
    high_freq_hz: float = 0.0
    window: str = "povey"
    remove_dc_offset: bool = True
    mean_norm: bool = True

    def __post_init__(self) -> None:
        check_field_types(self)
        problems = []
        if self.sample_rate <= 0:
            problems.append(f"sample_rate must be > 0, got {self.sample_rate}")
        if self.num_mel_bins <= 0:
            problems.append(f"num_mel_bins must be > 0, got {self.num_mel_bins}")
        if self.window_size < 2:
            problems.append(f"frame_length_ms={self.frame_length_ms} gives under 2 samples")
        if self.window_shift < 1:
            problems.append(f"frame_shift_ms={self.frame_shift_ms} gives under 1 sample")
        if not 0.0 <= self.preemphasis <= 1.0:
            problems.append(f"preemphasis must be in [0, 1], got {self.preemphasis}")
        if not (math.isfinite(self.dither) and self.dither >= 0.0):
            problems.append(f"dither must be >= 0, got {self.dither}")
        if self.window not in _WINDOWS:
            problems.append(f"window must be one of {_WINDOWS}, got {self.window!r}")
        nyquist = self.sample_rate / 2
        if not 0.0 <= self.low_freq_hz < nyquist:
            problems.append(f"low_freq_hz must be in [0, {nyquist}), got {self.low_freq_hz}")
        if not self.low_freq_hz < self.resolved_high_freq_hz <= nyquist:
            problems.append(
                f"high_freq_hz={self.high_freq_hz} resolves to {self.resolved_high_freq_hz} Hz, "
                f"which must be in (low_freq_hz={self.low_freq_hz}, {nyquist}]"
            )
        if problems:
            raise ConfigError("invalid FbankConfig: " + "; ".join(problems))

    @property
    def window_size(self) -> int:
        """Samples per frame (Kaldi truncates ``sample_rate * frame_length_ms / 1000``)."""
        return _samples(self.sample_rate, self.frame_length_ms)

    @property
    def window_shift(self) -> int:
        """Samples between frame starts."""
        return _samples(self.sample_rate, self.frame_shift_ms)

    @property
    def fft_size(self) -> int:
        """FFT length: the window size rounded up to a power of two."""
        return 1 << max(self.window_size - 1, 1).bit_length()

    @property
    def resolved_high_freq_hz(self) -> float:
        """The upper mel edge in Hz after applying Kaldi's Nyquist-offset rule."""
        nyquist = self.sample_rate / 2
        return self.high_freq_hz if self.high_freq_hz > 0 else nyquist + self.high_freq_hz

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready dict of every field."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FbankConfig:
        """Inverse of :meth:`to_dict`. Unknown keys are an error (a bundle from another version
        must not be half-read); missing keys take their defaults.

        Raises:
            ConfigError: (a ``ValueError``) naming the unknown keys, or a wrong type or value.
        """
        return dataclass_from_dict(cls, data)


def _samples(sample_rate: int, milliseconds: float) -> int:
    exact = sample_rate * milliseconds / 1000.0
    # Kaldi truncates; forgive float error such as 0.1 * 3 = 0.30000000000000004 either way.
    return int(exact + 1e-6)


def _window(config: FbankConfig) -> Tensor:
    """Kaldi's window of ``window_size`` samples, float64."""
    n = config.window_size
    phase = 2.0 * math.pi * torch.arange(n, dtype=torch.float64) / (n - 1)
    if config.window == "hamming":
        return 0.54 - 0.46 * torch.cos(phase)
    hann = 0.5 - 0.5 * torch.cos(phase)
    return hann.pow(0.85) if config.window == "povey" else hann


def _mel(freq_hz: Tensor) -> Tensor:
    return 1127.0 * torch.log1p(freq_hz / 700.0)


def _mel_filters(config: FbankConfig) -> Tensor:
    """Triangular filters as a ``(fft_size // 2 + 1, num_mel_bins)`` float64 matrix.

    As in Kaldi, the filters are triangles in mel, evaluated at the FFT bin centres; the Nyquist
    bin gets no weight.
    """
    num_fft_bins = config.fft_size // 2
    bin_mel = _mel(
        torch.arange(num_fft_bins, dtype=torch.float64) * config.sample_rate / config.fft_size
    )
    mel_low = _mel(torch.tensor(config.low_freq_hz, dtype=torch.float64))
    mel_high = _mel(torch.tensor(config.resolved_high_freq_hz, dtype=torch.float64))
    delta = (mel_high - mel_low) / (config.num_mel_bins + 1)
    left = mel_low + delta * torch.arange(config.num_mel_bins, dtype=torch.float64)  # (F,)
    center, right = left + delta, left + 2 * delta
    mel = bin_mel[:, None]  # (K, 1) against (F,) -> (K, F)
    rising = (mel - left) / (center - left)
    falling = (right - mel) / (right - center)
    weights = torch.where(mel <= center, rising, falling)
    weights = torch.where((mel > left) & (mel < right), weights, torch.zeros(()))
    empty = (weights.sum(0) == 0).nonzero().flatten().tolist()
    if empty:
        raise ConfigError(
            f"mel bins {empty} cover no FFT bin: num_mel_bins={config.num_mel_bins} is too many "
            f"for a {config.fft_size}-point FFT between {config.low_freq_hz} and "
            f"{config.resolved_high_freq_hz} Hz"
        )
    nyquist_row = torch.zeros(1, config.num_mel_bins, dtype=torch.float64)
    return torch.cat([weights, nyquist_row])


def _padding_mask(lengths: Tensor, num_frames: int) -> Tensor:
    """``(B, T, 1)`` bool mask, True for frames at or beyond each row's length."""
    positions = torch.arange(num_frames, device=lengths.device)
    return (positions[None, :] >= lengths[:, None]).unsqueeze(-1)


def mean_normalize(feats: Tensor, lengths: Tensor | None = None) -> Tensor:
    """Subtract each utterance's mean over its valid frames; padded frames become exactly 0.

    Args:
        feats: ``(B, T, F)`` features.
        lengths: ``(B,)`` valid frames per row; ``None`` means all ``T``.

    Returns:
        ``(B, T, F)``, zero mean over each row's valid frames.

    >>> feats = mean_normalize(torch.randn(2, 5, 3), torch.tensor([5, 2]))
    >>> bool(feats[1, 2:].eq(0).all())
    True
    """
    if feats.dim() != 3:
        raise ValueError(f"feats must be (B, T, F), got shape {tuple(feats.shape)}")
    batch, num_frames, _ = feats.shape
    if lengths is None:
        return feats - feats.mean(dim=1, keepdim=True)
    padding = _padding_mask(lengths.to(feats.device), num_frames)
    count = lengths.to(feats.device).clamp(min=1).to(feats.dtype).view(batch, 1, 1)
    mean = feats.masked_fill(padding, 0.0).sum(dim=1, keepdim=True) / count
    return (feats - mean).masked_fill(padding, 0.0)


class Fbank(nn.Module):
    """Batched Kaldi log-mel filterbank: waveform ``(B, N)`` in [-1, 1] -> ``(B, T, F)``.

    Computed in float32 with autocast off, whatever the caller's precision; vectorised over the
    batch (``unfold`` frames, one ``rfft``, one matmul), so it runs on any device after ``.to()``.
    Dither is applied only in training mode; seed it with ``torch.manual_seed``.

    >>> fbank = Fbank(FbankConfig(dither=0.0)).eval()
    >>> feats, frames = fbank(torch.zeros(2, 16000).uniform_(-0.1, 0.1), torch.tensor([16000, 8000]))
    >>> feats.shape, frames.tolist()
    (torch.Size([2, 98, 80]), [98, 48])
    """

    window: Tensor
    mel_filters: Tensor

    def __init__(self, config: FbankConfig | None = None):
        super().__init__()
        self.config = config if config is not None else FbankConfig()
        # Non-persistent: derived from the config, so not part of a state dict.
        self.register_buffer("window", _window(self.config).float(), persistent=False)
        self.register_buffer("mel_filters", _mel_filters(self.config).float(), persistent=False)

    @property
    def feat_dim(self) -> int:
        """Feature dimension ``F`` (the number of mel bins)."""
        return self.config.num_mel_bins

    def num_frames(self, num_samples: Tensor) -> Tensor:
        """Frames from samples, Kaldi ``snip_edges``: ``1 + (n - win) // shift``, 0 if ``n < win``.

        >>> Fbank().num_frames(torch.tensor([0, 399, 400, 16000])).tolist()
        [0, 0, 1, 98]
        """
        num_samples = torch.as_tensor(num_samples)
        frames = torch.div(
            num_samples - self.config.window_size, self.config.window_shift, rounding_mode="floor"
        )
        return (frames + 1).clamp(min=0).long()

    def extra_repr(self) -> str:
        return repr(self.config)

    def forward(self, wav: Tensor, lengths: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Compute features.

        Args:
            wav: ``(B, N)`` float waveform in [-1, 1] at ``config.sample_rate``.
            lengths: ``(B,)`` valid samples per row, in ``[0, N]``; ``None`` means all ``N``.

        Returns:
            ``feats`` ``(B, T, F)`` float32 with ``T = num_frames(N)``, frames beyond each row's
            length exactly 0; and ``frame_lengths`` ``(B,)`` int64.
        """
        if wav.dim() != 2:
            hint = " (use wav.unsqueeze(0) for one utterance)" if wav.dim() == 1 else ""
            raise ValueError(f"Fbank expects wav of shape (B, N), got {tuple(wav.shape)}{hint}")
        if not wav.is_floating_point():
            raise ValueError(
                f"Fbank expects a float waveform in [-1, 1], got {wav.dtype}; "
                "divide int16 audio by 32768"
            )
        batch, num_samples = wav.shape
        if lengths is None:
            lengths = torch.full((batch,), num_samples, dtype=torch.long, device=wav.device)
        else:
            if lengths.shape != (batch,):
                raise ValueError(f"lengths must have shape ({batch},), got {tuple(lengths.shape)}")
            lengths = lengths.to(device=wav.device, dtype=torch.long)
            if not torch.jit.is_tracing() and not torch.compiler.is_compiling():
                if bool((lengths < 0).any()) or bool((lengths > num_samples).any()):
                    raise ValueError(
                        f"lengths must be in [0, {num_samples}], got {lengths.tolist()}"
                    )
        frame_lengths = self.num_frames(lengths)
        config = self.config
        with torch.autocast(device_type=wav.device.type, enabled=False):
            if num_samples < config.window_size:
                feats = wav.new_zeros(batch, 0, config.num_mel_bins, dtype=torch.float32)
                return feats, frame_lengths
            x = wav.float() * 32768.0
            frames = x.unfold(-1, config.window_size, config.window_shift)  # (B, T, win)
            if self.training and config.dither > 0:
                frames = frames + config.dither * torch.randn_like(frames)
            if config.remove_dc_offset:
                frames = frames - frames.mean(dim=-1, keepdim=True)
            if config.preemphasis != 0:
                p = config.preemphasis
                # Kaldi: x[i] -= p * x[i-1] for i > 0, and x[0] -= p * x[0].
                frames = torch.cat(
                    [frames[..., :1] * (1.0 - p), frames[..., 1:] - p * frames[..., :-1]], dim=-1
                )
            # Buffers are cast back in case the module was moved with .half() or .double().
            frames = frames * self.window.float()
            spectrum = torch.fft.rfft(frames, n=config.fft_size)  # (B, T, fft_size // 2 + 1)
            power = spectrum.real.square() + spectrum.imag.square()
            feats = (power @ self.mel_filters.float()).clamp(min=_FLOAT32_EPS).log()  # (B, T, F)
            if config.mean_norm:
                feats = mean_normalize(feats, frame_lengths)
            else:
                feats = feats.masked_fill(_padding_mask(frame_lengths, feats.shape[1]), 0.0)
        return feats, frame_lengths
