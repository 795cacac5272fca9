"""SpeechBrain's log-mel filterbank and sentence mean normalisation, as one batched ``nn.Module``.

Converted SpeechBrain checkpoints (``speakerprint.convert.speechbrain``) were trained on these
features, not on Kaldi's, so their bundles carry this front end (``kind: "speechbrain"``). It
reproduces ``speechbrain.lobes.features.Fbank`` followed by
``speechbrain.processing.features.InputNormalization(norm_type="sentence", std_norm=False)``,
the pipeline of SpeechBrain's speaker models (``spkrec-ecapa-voxceleb``), without importing
SpeechBrain:

* STFT: ``torch.stft`` framing, centred (``n_fft // 2`` zeros at each end of the utterance), a
  periodic Hamming window of ``frame_length_ms``, an ``n_fft``-point FFT; ``1 + N // hop`` frames.
* power spectrum (no pre-emphasis, no DC removal, no dither, no int16 scaling).
* triangular mel filters on the ``2595 log10(1 + f / 700)`` scale between ``f_min_hz`` and
  ``f_max_hz``, each symmetric with the half-width of its lower neighbour spacing, unnormalised.
* dB: ``10 log10(max(x, amin))``, then each utterance is floored at its maximum minus ``top_db``.
* the utterance mean over its frames is subtracted from every frame.

In a batch the waveform beyond each row's length is treated as zeros (what the centred STFT of
the row alone pads with), and the ``top_db`` maximum and the mean are taken over the row's own
frames, so padding never changes a row's features; frames beyond a row's length are 0.

>>> import torch
>>> fbank = SpeechBrainFbank(SpeechBrainFbankConfig(num_mel_bins=80))
>>> feats, frames = fbank(torch.zeros(2, 16000).uniform_(-0.1, 0.1), torch.tensor([16000, 8000]))
>>> feats.shape, frames.tolist()
(torch.Size([2, 101, 80]), [101, 51])
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from speakerprint.errors import ConfigError
from speakerprint.features._config import check_field_types, config_from_dict

__all__ = ["KIND", "SpeechBrainFbank", "SpeechBrainFbankConfig", "from_dict"]

KIND = "speechbrain"


@dataclass(frozen=True)
class SpeechBrainFbankConfig:
    """Settings of :class:`SpeechBrainFbank`, named after SpeechBrain's ``Fbank`` arguments.

    Attributes:
        sample_rate: expected waveform rate in Hz (``sample_rate``).
        num_mel_bins: number of mel filters (``n_mels``).
        n_fft: FFT length in samples (``n_fft``); the window is centred in it if shorter.
        frame_length_ms: window length (``win_length``), rounded to samples as SpeechBrain does.
        frame_shift_ms: hop between frames (``hop_length``), likewise.
        f_min_hz: lower edge of the first mel filter (``f_min``).
        f_max_hz: upper edge of the last mel filter (``f_max``; SpeechBrain's default is
            ``sample_rate // 2``).
        amin: floor of the filterbank energies before the log (``Filterbank.amin``).
        top_db: each utterance's dB values are floored at its maximum minus this.
        mean_norm: subtract each utterance's mean (``InputNormalization`` with
            ``norm_type="sentence"``, ``std_norm=False``).

    >>> SpeechBrainFbankConfig().to_dict()["kind"]
    'speechbrain'
    """

    sample_rate: int = 16000
    num_mel_bins: int = 80
    n_fft: int = 400
    frame_length_ms: float = 25.0
    frame_shift_ms: float = 10.0
    f_min_hz: float = 0.0
    f_max_hz: float = 8000.0
    amin: float = 1e-10
    top_db: float = 80.0
    mean_norm: bool = True

    def __post_init__(self) -> None:
        check_field_types(self)
        problems = []
        if self.sample_rate <= 0:
            problems.append(f"sample_rate must be > 0, got {self.sample_rate}")
        if self.num_mel_bins <= 0:
            problems.append(f"num_mel_bins must be > 0, got {self.num_mel_bins}")
        if self.n_fft < 2:
            problems.append(f"n_fft must be >= 2, got {self.n_fft}")
        if not 2 <= self.window_size <= self.n_fft:
            problems.append(
                f"frame_length_ms={self.frame_length_ms} gives {self.window_size} samples, which "
                f"must be in [2, n_fft={self.n_fft}]"
            )
        if self.window_shift < 1:
            problems.append(f"frame_shift_ms={self.frame_shift_ms} gives under 1 sample")
        if not 0.0 <= self.f_min_hz < self.f_max_hz <= self.sample_rate / 2:
            problems.append(
                f"need 0 <= f_min_hz < f_max_hz <= {self.sample_rate / 2}, got "
                f"{self.f_min_hz} and {self.f_max_hz}"
            )
        if not (math.isfinite(self.amin) and self.amin > 0):
            problems.append(f"amin must be > 0, got {self.amin}")
        if not (math.isfinite(self.top_db) and self.top_db >= 0):
            problems.append(f"top_db must be >= 0, got {self.top_db}")
        if problems:
            raise ConfigError("invalid SpeechBrainFbankConfig: " + "; ".join(problems))

    @property
    def window_size(self) -> int:
        """Window samples: SpeechBrain rounds ``sample_rate * frame_length_ms / 1000``."""
        return int(round(self.sample_rate / 1000.0 * self.frame_length_ms))

    @property
    def window_shift(self) -> int:
        """Hop in samples, rounded as SpeechBrain does."""
        return int(round(self.sample_rate / 1000.0 * self.frame_shift_ms))

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready dict of every field, plus ``kind: "speechbrain"``."""
        return {"kind": KIND, **dataclasses.asdict(self)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SpeechBrainFbankConfig:
        """Inverse of :meth:`to_dict`; an unknown key or another ``kind`` is a ConfigError."""
        return config_from_dict(cls, data, KIND)


def _window(config: SpeechBrainFbankConfig) -> Tensor:
    """torch.stft's window: a periodic Hamming window (float32, as SpeechBrain's) centred in
    ``n_fft`` zeros."""
    window = torch.hamming_window(config.window_size, periodic=True, dtype=torch.float32)
    left = (config.n_fft - config.window_size) // 2
    return nn.functional.pad(window, (left, config.n_fft - config.window_size - left))


def _mel_filters(config: SpeechBrainFbankConfig) -> Tensor:
    """``(n_fft // 2 + 1, num_mel_bins)`` filter matrix, as SpeechBrain's ``Filterbank`` builds it.

    Computed in float32 in SpeechBrain's order of operations, which puts the filters within a few
    float32 ulps of its own (float64 would differ from them by about 1e-5).
    """
    mel_low = 2595.0 * math.log10(1.0 + config.f_min_hz / 700.0)
    mel_high = 2595.0 * math.log10(1.0 + config.f_max_hz / 700.0)
    mel = torch.linspace(mel_low, mel_high, config.num_mel_bins + 2, dtype=torch.float32)
    hz = 700 * (10 ** (mel / 2595) - 1)
    central = hz[1:-1]  # (F,)
    band = (hz[1:] - hz[:-1])[:-1]  # (F,) the spacing below each centre
    # SpeechBrain spreads the bins up to sample_rate // 2 (integer division), not sample_rate / 2.
    freqs = torch.linspace(0, config.sample_rate // 2, config.n_fft // 2 + 1, dtype=torch.float32)
    slope = (freqs[:, None] - central[None, :]) / band[None, :]  # (K, F)
    return torch.clamp(torch.minimum(slope + 1.0, -slope + 1.0), min=0.0)


def _valid_frames(frames: Tensor, num_frames: int) -> Tensor:
    """``(B, T, 1)`` bool mask, True for each row's own frames."""
    positions = torch.arange(num_frames, device=frames.device)
    return (positions[None, :] < frames[:, None]).unsqueeze(-1)


class SpeechBrainFbank(nn.Module):
    """SpeechBrain's Fbank + sentence mean normalisation: waveform ``(B, N)`` -> ``(B, T, F)``.

    Computed in float32 with autocast off; deterministic (no dither) in train and eval mode.
    """

    window: Tensor
    mel_filters: Tensor

    def __init__(self, config: SpeechBrainFbankConfig | None = None) -> None:
        super().__init__()
        self.config = config if config is not None else SpeechBrainFbankConfig()
        # Non-persistent: derived from the config, so not part of a state dict.
        self.register_buffer("window", _window(self.config).float(), persistent=False)
        self.register_buffer("mel_filters", _mel_filters(self.config).float(), persistent=False)

    @property
    def feat_dim(self) -> int:
        """Feature dimension ``F`` (the number of mel filters)."""
        return self.config.num_mel_bins

    def num_frames(self, num_samples: Tensor) -> Tensor:
        """Frames from samples for the centred STFT: ``1 + n // hop``.

        >>> SpeechBrainFbank().num_frames(torch.tensor([1, 159, 160, 16000])).tolist()
        [1, 1, 2, 101]
        """
        num_samples = torch.as_tensor(num_samples)
        return (torch.div(num_samples, self.config.window_shift, rounding_mode="floor") + 1).long()

    def extra_repr(self) -> str:
        return repr(self.config)

    def forward(self, wav: Tensor, lengths: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Compute features.

        Args:
            wav: ``(B, N)`` float waveform in [-1, 1] at ``config.sample_rate``.
            lengths: ``(B,)`` valid samples per row, in ``[1, N]``; ``None`` means all ``N``.

        Returns:
            ``feats`` ``(B, T, F)`` float32 with ``T = num_frames(N)``, frames beyond each row's
            length exactly 0; and ``frame_lengths`` ``(B,)`` int64.
        """
        if wav.dim() != 2:
            hint = " (use wav.unsqueeze(0) for one utterance)" if wav.dim() == 1 else ""
            raise ValueError(
                f"SpeechBrainFbank expects wav of shape (B, N), got {tuple(wav.shape)}{hint}"
            )
        if not wav.is_floating_point():
            raise ValueError(
                f"SpeechBrainFbank expects a float waveform in [-1, 1], got {wav.dtype}"
            )
        batch, num_samples = wav.shape
        if lengths is None:
            lengths = torch.full((batch,), num_samples, dtype=torch.long, device=wav.device)
        else:
            if lengths.shape != (batch,):
                raise ValueError(f"lengths must have shape ({batch},), got {tuple(lengths.shape)}")
            lengths = lengths.to(device=wav.device, dtype=torch.long)
            if not torch.jit.is_tracing() and not torch.compiler.is_compiling():
                if bool((lengths < 1).any()) or bool((lengths > num_samples).any()):
                    raise ValueError(
                        f"lengths must be in [1, {num_samples}], got {lengths.tolist()}"
                    )
        frame_lengths = self.num_frames(lengths)
        config = self.config
        with torch.autocast(device_type=wav.device.type, enabled=False):
            x = wav.float()
            # The row alone would be centred with zeros; so is the batch, whatever its padding.
            samples = torch.arange(num_samples, device=wav.device)
            x = x.masked_fill(samples[None, :] >= lengths[:, None], 0.0)
            half = config.n_fft // 2
            x = nn.functional.pad(x, (half, half))
            frames = x.unfold(-1, config.n_fft, config.window_shift)  # (B, T, n_fft)
            frames = frames * self.window.float()
            spectrum = torch.fft.rfft(frames)  # (B, T, n_fft // 2 + 1)
            power = spectrum.real.square() + spectrum.imag.square()
            energies = power @ self.mel_filters.float()  # (B, T, F)
            feats = 10.0 * torch.log10(energies.clamp(min=config.amin))
            valid = _valid_frames(frame_lengths, feats.shape[1])  # (B, T, 1)
            peak = feats.masked_fill(~valid, float("-inf")).amax(dim=(1, 2), keepdim=True)
            feats = torch.maximum(feats, peak - config.top_db)
            feats = feats.masked_fill(~valid, 0.0)
            if config.mean_norm:
                count = frame_lengths.clamp(min=1).to(feats.dtype).view(batch, 1, 1)
                mean = feats.sum(dim=1, keepdim=True) / count
                feats = (feats - mean).masked_fill(~valid, 0.0)
        return feats, frame_lengths


def from_dict(data: dict[str, Any]) -> SpeechBrainFbank:
    """The front end a bundle's ``features`` dict (``kind: "speechbrain"``) describes."""
    return SpeechBrainFbank(SpeechBrainFbankConfig.from_dict(data))
