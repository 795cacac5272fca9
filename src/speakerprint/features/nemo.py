"""NVIDIA NeMo's log-mel front end (``FilterbankFeatures``), for converted ``.nemo`` checkpoints.

A TitaNet converted from NeMo gives NeMo's embeddings only on NeMo's features, which differ from
the Kaldi fbank in almost every step. Per batch, as NeMo's ``AudioToMelSpectrogramPreprocessor``
computes them from a waveform in [-1, 1] (no int16 scaling):

1. samples beyond each row's length set to 0 (NeMo relies on the caller's zero padding; the
   pre-emphasis mask below does the same whenever pre-emphasis is on);
2. dither: Gaussian noise of std ``dither``, training mode only;
3. pre-emphasis ``x[i] - p x[i-1]`` over the whole row (the first sample kept), then the samples at
   and beyond the row's length zeroed again;
4. ``torch.stft`` with ``center=True`` and zero (``"constant"``) padding of ``n_fft // 2`` at both
   ends, a symmetric (``periodic=False``) window of ``win_length`` samples centred in ``n_fft``;
   with ``exact_pad`` instead ``(n_fft - hop) // 2`` zeros at both ends and ``center=False``;
5. magnitude ``sqrt(re^2 + im^2)`` raised to ``mag_power`` (2: power);
6. Slaney-style mel filters (librosa's default ``htk=False`` mel scale: linear below 1 kHz,
   logarithmic above) with Slaney area normalisation ``2 / (f[i+2] - f[i])``;
7. ``log(x + 2**-24)`` (``log_zero_guard_type: add``) or ``log(max(x, guard))`` (``clamp``);
8. per-feature normalisation over the valid frames: ``(x - mean) / (std + 1e-5)`` with the
   unbiased std (``normalize: per_feature``), or one mean and std over all features and valid
   frames (``all_features``);
9. frames at and beyond ``len // hop`` (the valid count; the last STFT frame is never valid) set to
   ``pad_value`` and the time axis padded with it to a multiple of ``pad_to``.

The encoder masks every frame beyond the returned lengths, so ``pad_to`` changes no embedding.

>>> import torch
>>> features = NemoFeatures(NemoFeaturesConfig()).eval()
>>> feats, frames = features(torch.randn(2, 16000) * 0.1, torch.tensor([16000, 8000]))
>>> feats.shape, frames.tolist()
(torch.Size([2, 112, 80]), [100, 50])
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

__all__ = ["NemoFeatures", "NemoFeaturesConfig", "from_dict", "slaney_mel_filters"]

KIND = "nemo"
_WINDOWS = ("hann", "hamming", "blackman", "bartlett", "none")
_NORMALIZE = ("per_feature", "all_features", "none")
_STD_GUARD = 1e-5  # NeMo's CONSTANT, added to the std before dividing


@dataclass(frozen=True)
class NemoFeaturesConfig:
    """NeMo ``FilterbankFeatures`` settings, in its units; saved in bundles via :meth:`to_dict`.

    Attributes:
        sample_rate: expected waveform rate in Hz.
        win_length: window length in samples (NeMo: ``int(window_size * sample_rate)``).
        hop_length: hop in samples (NeMo: ``int(window_stride * sample_rate)``).
        n_fft: FFT length; the window is centred in it.
        window: ``hann``, ``hamming``, ``blackman``, ``bartlett`` (torch's, symmetric) or ``none``.
        num_mel_bins: mel filters (NeMo ``features`` / ``nfilt``).
        low_freq_hz: lower edge of the first mel filter.
        high_freq_hz: upper edge of the last mel filter (NeMo's ``highfreq: null`` is Nyquist).
        mel_norm: ``slaney`` (area normalisation) or ``none``.
        preemphasis: coefficient of ``x[i] - p x[i-1]``; 0 for none.
        dither: std of the noise added in training mode, in waveform units.
        log: take the log of the mel energies.
        log_zero_guard_type: ``add`` (log(x + guard)) or ``clamp`` (log(max(x, guard))).
        log_zero_guard_value: the guard.
        normalize: ``per_feature``, ``all_features`` or ``none``.
        mag_power: exponent of the STFT magnitude.
        pad_to: pad the frame axis to a multiple of this (0: no padding).
        pad_value: value of the frames beyond each row's length.
        exact_pad: NeMo's ``exact_pad`` (``center=False`` with ``(n_fft - hop) // 2`` zeros).
    """

    sample_rate: int = 16000
    win_length: int = 400
    hop_length: int = 160
    n_fft: int = 512
    window: str = "hann"
    num_mel_bins: int = 80
    low_freq_hz: float = 0.0
    high_freq_hz: float = 8000.0
    mel_norm: str = "slaney"
    preemphasis: float = 0.97
    dither: float = 1e-5
    log: bool = True
    log_zero_guard_type: str = "add"
    log_zero_guard_value: float = 2.0**-24
    normalize: str = "per_feature"
    mag_power: float = 2.0
    pad_to: int = 16
    pad_value: float = 0.0
    exact_pad: bool = False

    def __post_init__(self) -> None:
        check_field_types(self)
        problems = []
        for name in ("sample_rate", "win_length", "hop_length", "n_fft", "num_mel_bins"):
            if getattr(self, name) <= 0:
                problems.append(f"{name} must be > 0, got {getattr(self, name)}")
        if self.win_length > self.n_fft:
            problems.append(f"win_length ({self.win_length}) must be <= n_fft ({self.n_fft})")
        if self.window not in _WINDOWS:
            problems.append(f"window must be one of {_WINDOWS}, got {self.window!r}")
        if self.mel_norm not in ("slaney", "none"):
            problems.append(f"mel_norm must be 'slaney' or 'none', got {self.mel_norm!r}")
        if self.normalize not in _NORMALIZE:
            problems.append(f"normalize must be one of {_NORMALIZE}, got {self.normalize!r}")
        if self.log_zero_guard_type not in ("add", "clamp"):
            problems.append(
                f"log_zero_guard_type must be 'add' or 'clamp', got {self.log_zero_guard_type!r}"
            )
        if not self.log_zero_guard_value > 0:
            problems.append(f"log_zero_guard_value must be > 0, got {self.log_zero_guard_value}")
        if not 0.0 <= self.low_freq_hz < self.high_freq_hz <= self.sample_rate / 2:
            problems.append(
                f"need 0 <= low_freq_hz ({self.low_freq_hz}) < high_freq_hz "
                f"({self.high_freq_hz}) <= {self.sample_rate / 2}"
            )
        if not (math.isfinite(self.dither) and self.dither >= 0):
            problems.append(f"dither must be >= 0, got {self.dither}")
        if self.pad_to < 0:
            problems.append(f"pad_to must be >= 0, got {self.pad_to}")
        if self.mag_power <= 0:
            problems.append(f"mag_power must be > 0, got {self.mag_power}")
        if self.exact_pad and self.hop_length % 2 == 1:
            problems.append("exact_pad needs an even hop_length (as in NeMo)")
        if problems:
            raise ConfigError("invalid NemoFeaturesConfig: " + "; ".join(problems))

    # The front-end contract of speakerprint.features (bundles and exports read these).
    @property
    def window_size(self) -> int:
        """Samples per analysis window."""
        return self.win_length

    @property
    def window_shift(self) -> int:
        """Samples between frames."""
        return self.hop_length

    @property
    def frame_length_ms(self) -> float:
        return 1000.0 * self.win_length / self.sample_rate

    @property
    def frame_shift_ms(self) -> float:
        return 1000.0 * self.hop_length / self.sample_rate

    @property
    def stft_pad(self) -> int:
        """Zeros added at each end of the waveform before framing."""
        return (self.n_fft - self.hop_length) // 2 if self.exact_pad else self.n_fft // 2

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready dict of every field, with ``kind: "nemo"``."""
        return {"kind": KIND, **dataclasses.asdict(self)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> NemoFeaturesConfig:
        """Inverse of :meth:`to_dict`; unknown keys are a ConfigError."""
        return config_from_dict(cls, data, KIND)


def _hz_to_slaney_mel(freq_hz: Tensor) -> Tensor:
    """Slaney's Auditory Toolbox mel scale: 3 mels per 200 Hz up to 1 kHz, then logarithmic with
    27 mels per factor 6.4 (librosa's ``hz_to_mel`` with ``htk=False``)."""
    linear = freq_hz * 3.0 / 200.0
    log_step = math.log(6.4) / 27.0
    logarithmic = 15.0 + torch.log(freq_hz.clamp(min=1000.0) / 1000.0) / log_step
    return torch.where(freq_hz >= 1000.0, logarithmic, linear)


def _slaney_mel_to_hz(mels: Tensor) -> Tensor:
    linear = mels * 200.0 / 3.0
    log_step = math.log(6.4) / 27.0
    logarithmic = 1000.0 * torch.exp(log_step * (mels - 15.0))
    return torch.where(mels >= 15.0, logarithmic, linear)


def slaney_mel_filters(
    sample_rate: int,
    n_fft: int,
    num_mel_bins: int,
    low_freq_hz: float,
    high_freq_hz: float,
    *,
    norm: str = "slaney",
) -> Tensor:
    """Triangular mel filters as an ``(num_mel_bins, n_fft // 2 + 1)`` float32 matrix.

    ``num_mel_bins + 2`` edges equally spaced on the Slaney mel scale between the two frequencies;
    filter i rises linearly in Hz from edge i to edge i+1 and falls to edge i+2, evaluated at the
    FFT bin frequencies ``k * sample_rate / n_fft``. With ``norm="slaney"`` each row is scaled by
    ``2 / (edge[i+2] - edge[i])`` so that every filter has the same area. (The filters of
    ``librosa.filters.mel(norm="slaney")``, which NeMo stores in its archives as
    ``preprocessor.featurizer.fb``; librosa is not needed here. As librosa, the triangles are
    computed in float64 and stored in float32 before the normalisation, which is computed in
    float64 and stored in float32 again: the result matches it bit for bit.)
    """
    fft_hz = torch.linspace(0.0, sample_rate / 2, n_fft // 2 + 1, dtype=torch.float64)
    mel_edges = torch.linspace(
        float(_hz_to_slaney_mel(torch.tensor(float(low_freq_hz), dtype=torch.float64))),
        float(_hz_to_slaney_mel(torch.tensor(float(high_freq_hz), dtype=torch.float64))),
        num_mel_bins + 2,
        dtype=torch.float64,
    )
    edges_hz = _slaney_mel_to_hz(mel_edges)  # (F + 2,)
    widths = edges_hz[1:] - edges_hz[:-1]  # (F + 1,)
    offsets = edges_hz[:, None] - fft_hz[None, :]  # (F + 2, K)
    rising = -offsets[:-2] / widths[:-1, None]  # (F, K)
    falling = offsets[2:] / widths[1:, None]
    weights = torch.minimum(rising, falling).clamp(min=0.0).float()
    if norm == "slaney":
        area = (2.0 / (edges_hz[2:] - edges_hz[:-2]))[:, None]
        weights = (weights.double() * area).float()
    return weights


def window_tensor(config: NemoFeaturesConfig) -> Tensor | None:
    """NeMo's analysis window: torch's symmetric (``periodic=False``) window, or None."""
    functions = {
        "hann": torch.hann_window,
        "hamming": torch.hamming_window,
        "blackman": torch.blackman_window,
        "bartlett": torch.bartlett_window,
    }
    if config.window == "none":
        return None
    return functions[config.window](config.win_length, periodic=False)


class NemoFeatures(nn.Module):
    """NeMo's log-mel features: waveform ``(B, N)`` in [-1, 1] -> ``(B, T, F)`` and frame counts.

    Float32 with autocast off; dither only in training mode. See the module docstring for the
    steps.
    """

    mel_filters: Tensor
    window: Tensor

    def __init__(self, config: NemoFeaturesConfig | None = None) -> None:
        super().__init__()
        self.config = config if config is not None else NemoFeaturesConfig()
        cfg = self.config
        filters = slaney_mel_filters(
            cfg.sample_rate,
            cfg.n_fft,
            cfg.num_mel_bins,
            cfg.low_freq_hz,
            cfg.high_freq_hz,
            norm=cfg.mel_norm,
        )
        self.register_buffer("mel_filters", filters, persistent=False)  # (F, K)
        window = window_tensor(cfg)
        self.has_window = window is not None
        self.register_buffer(
            "window", window if window is not None else torch.ones(cfg.win_length), persistent=False
        )

    @property
    def feat_dim(self) -> int:
        return self.config.num_mel_bins

    def num_frames(self, num_samples: Tensor) -> Tensor:
        """Valid frames: ``(n + 2 pad - n_fft) // hop`` (``n // hop`` with NeMo's defaults).

        >>> NemoFeatures().num_frames(torch.tensor([0, 159, 160, 16000])).tolist()
        [0, 0, 1, 100]
        """
        cfg = self.config
        num_samples = torch.as_tensor(num_samples)
        frames = torch.div(
            num_samples + 2 * cfg.stft_pad - cfg.n_fft, cfg.hop_length, rounding_mode="floor"
        )
        return torch.where(num_samples == 0, torch.zeros_like(frames), frames).clamp(min=0).long()

    def extra_repr(self) -> str:
        return repr(self.config)

    def forward(self, wav: Tensor, lengths: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """wav: (B, N) float in [-1, 1]; lengths: (B,) samples, None for all N.

        Returns ``feats`` (B, T, F) float32, ``pad_value`` beyond each row's length, and
        ``frame_lengths`` (B,) int64.
        """
        if wav.dim() != 2:
            hint = " (use wav.unsqueeze(0) for one utterance)" if wav.dim() == 1 else ""
            raise ValueError(f"NemoFeatures expects wav (B, N), got {tuple(wav.shape)}{hint}")
        if not wav.is_floating_point():
            raise ValueError(f"NemoFeatures expects a float waveform in [-1, 1], got {wav.dtype}")
        batch, num_samples = wav.shape
        if lengths is None:
            lengths = torch.full((batch,), num_samples, dtype=torch.long, device=wav.device)
        else:
            if lengths.shape != (batch,):
                raise ValueError(f"lengths must have shape ({batch},), got {tuple(lengths.shape)}")
            lengths = lengths.to(device=wav.device, dtype=torch.long)
            if bool((lengths < 0).any()) or bool((lengths > num_samples).any()):
                raise ValueError(f"lengths must be in [0, {num_samples}], got {lengths.tolist()}")
        cfg = self.config
        frame_lengths = self.num_frames(lengths)
        with torch.autocast(device_type=wav.device.type, enabled=False):
            positions = torch.arange(num_samples, device=wav.device)
            x = wav.float().masked_fill(positions[None, :] >= lengths[:, None], 0.0)
            if cfg.exact_pad:
                x = nn.functional.pad(x, (cfg.stft_pad, cfg.stft_pad))
            if self.training and cfg.dither > 0:
                x = x + cfg.dither * torch.randn_like(x)
            if cfg.preemphasis != 0:
                # As NeMo: the mask counts from the start of the (exact-padded) signal.
                keep = torch.arange(x.shape[1], device=x.device)[None, :] < lengths[:, None]
                x = torch.cat([x[:, :1], x[:, 1:] - cfg.preemphasis * x[:, :-1]], dim=1)
                x = x.masked_fill(~keep, 0.0)
            spectrum = torch.stft(
                x,
                n_fft=cfg.n_fft,
                hop_length=cfg.hop_length,
                win_length=cfg.win_length,
                window=self.window.float() if self.has_window else None,
                center=not cfg.exact_pad,
                pad_mode="constant",
                return_complex=True,
            )  # (B, n_fft // 2 + 1, T)
            magnitude = torch.view_as_real(spectrum).square().sum(-1).sqrt()
            if cfg.mag_power != 1.0:
                magnitude = magnitude.pow(cfg.mag_power)
            feats = torch.matmul(self.mel_filters.float(), magnitude)  # (B, F, T)
            if cfg.log:
                if cfg.log_zero_guard_type == "add":
                    feats = torch.log(feats + cfg.log_zero_guard_value)
                else:
                    feats = torch.log(feats.clamp(min=cfg.log_zero_guard_value))
            num_frames = feats.shape[-1]
            valid = torch.arange(num_frames, device=feats.device)[None, :] < frame_lengths[:, None]
            if cfg.normalize != "none":
                feats = _normalize(feats, valid, frame_lengths, cfg.normalize)
            feats = feats.masked_fill(~valid[:, None, :], cfg.pad_value)
            if cfg.pad_to > 0 and num_frames % cfg.pad_to != 0:
                extra = cfg.pad_to - num_frames % cfg.pad_to
                feats = nn.functional.pad(feats, (0, extra), value=cfg.pad_value)
        return feats.transpose(1, 2), frame_lengths  # (B, T, F)


def _normalize(feats: Tensor, valid: Tensor, frame_lengths: Tensor, mode: str) -> Tensor:
    """NeMo's ``normalize_batch``: unbiased std over valid frames, plus 1e-5, 0 for one frame."""
    mask = valid[:, None, :]  # (B, 1, T)
    count = frame_lengths.to(feats.dtype)
    if mode == "per_feature":
        mean = torch.where(mask, feats, 0.0).sum(dim=2) / count[:, None]  # (B, F)
        centred = torch.where(mask, feats - mean[:, :, None], 0.0)
        std = (centred.square().sum(dim=2) / (count[:, None] - 1.0)).sqrt()
        std = std.masked_fill(std.isnan(), 0.0) + _STD_GUARD
        return (feats - mean[:, :, None]) / std[:, :, None]
    # all_features: one mean and std per utterance over its valid frames and every feature
    values = count * feats.shape[1]
    mean = torch.where(mask, feats, 0.0).sum(dim=(1, 2)) / values  # (B,)
    centred = torch.where(mask, feats - mean[:, None, None], 0.0)
    std = (centred.square().sum(dim=(1, 2)) / (values - 1.0)).sqrt() + _STD_GUARD
    return (feats - mean[:, None, None]) / std[:, None, None]


def from_dict(data: dict[str, Any]) -> NemoFeatures:
    """The front end a bundle's ``features`` dict (``kind: "nemo"``) describes."""
    return NemoFeatures(NemoFeaturesConfig.from_dict(data))
