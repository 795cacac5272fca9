"""Kaldi-compatible log-mel filterbank features as one batched ``nn.Module``.

This is the only feature extractor in the package: training, evaluation, inference and export all
call :class:`Fbank`, so features cannot drift apart between them. It reproduces Kaldi's
``compute-fbank-feats`` (and kaldi-native-fbank) with ``snip_edges=true``, power spectrum, no
energy term, run on int16-scale audio: the waveform in [-1, 1] is scaled by 32768 inside.

Per frame, as in Kaldi: dither (training only), DC removal, pre-emphasis, window, zero-pad to a
power of two, power spectrum, triangular mel filters on the ``1127 ln(1 + f/700)`` scale, log with
a floor at float32 epsilon.

Export uses the same computation (:func:`log_mel`): :class:`ExportFbank` is an eval-mode
``Fbank`` in operations that ONNX and TorchScript take for any batch size and length. torch's
TorchScript-based ONNX exporter has no symbolic for ``aten::fft_rfft`` at any opset and cannot
export ``unfold`` over a dynamic length, and ``Fbank`` itself (a config object, input checks) does
not compile with ``torch.jit.script``; so ``ExportFbank`` gathers frames with an index matrix and
takes the DFT of the zero-padded frame as one matmul with a fixed ``(window_size, 2 * (fft_size //
2 + 1))`` cosine/sine basis (zero padding adds nothing to the sum, so the basis needs only
``window_size`` rows). ``Fbank(config, dft=True)`` computes the same DFT spectrum in eager torch,
and ``tests/features`` holds the DFT path to the FFT path.
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

__all__ = ["ExportFbank", "Fbank", "FbankConfig", "dft_basis", "log_mel", "mean_normalize"]

_WINDOWS = ("povey", "hamming", "hann")
_RFFT = torch.empty(0)  # log_mel's "no DFT basis": take the spectrum with rfft


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
        waveform_scale: the waveform in [-1, 1] is multiplied by this before framing: 32768 is
            Kaldi's int16 scale (and WeSpeaker's); 3D-Speaker feeds [-1, 1] itself (1.0). Only
            the log floor and dither see the difference once the mean is subtracted.

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
    waveform_scale: float = 32768.0

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
        if not (math.isfinite(self.waveform_scale) and self.waveform_scale > 0.0):
            problems.append(f"waveform_scale must be > 0, got {self.waveform_scale}")
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
        """Plain JSON-ready dict of every field; ``waveform_scale`` only when it is not 32768,
        so that the dicts (and the fingerprints) of bundles written before it existed stay."""
        data = dataclasses.asdict(self)
        if data["waveform_scale"] == 32768.0:
            del data["waveform_scale"]
        return data

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


def dft_basis(window_size: int, fft_size: int) -> Tensor:
    """``(window_size, 2K)`` float64 basis, ``K = fft_size // 2 + 1``: ``[cos | -sin]``.

    ``frames @ basis`` gives the real parts (first K columns) and imaginary parts (last K) of
    ``torch.fft.rfft(frames, n=fft_size)`` for frames of ``window_size`` samples.

    >>> frames = torch.randn(3, 400, dtype=torch.float64)
    >>> spec = frames @ dft_basis(400, 512)
    >>> ref = torch.fft.rfft(frames, n=512)
    >>> torch.allclose(spec[:, :257], ref.real) and torch.allclose(spec[:, 257:], ref.imag)
    True
    """
    if not 0 < window_size <= fft_size:
        raise ValueError(f"need 0 < window_size <= fft_size, got {window_size} and {fft_size}")
    n = torch.arange(window_size, dtype=torch.float64)[:, None]
    k = torch.arange(fft_size // 2 + 1, dtype=torch.float64)[None, :]
    # n * k mod fft_size keeps the angle small, so float64 cos/sin stay exact to the last bits.
    angle = 2.0 * math.pi * torch.remainder(n * k, fft_size) / fft_size
    return torch.cat([torch.cos(angle), -torch.sin(angle)], dim=1)


def log_mel(
    frames: Tensor,
    frame_lengths: Tensor,
    window: Tensor,
    mel_filters: Tensor,
    dft: Tensor,
    fft_size: int,
    preemphasis: float,
    remove_dc_offset: bool,
    mean_norm: bool,
) -> Tensor:
    """Kaldi log-mel features of int16-scale frames ``(B, T, win)`` float32 -> ``(B, T, F)``.

    The one feature computation, shared by :class:`Fbank` and :class:`ExportFbank` (TorchScript
    compiles it with the latter). ``dft``: an empty tensor takes the spectrum with ``rfft``;
    :func:`dft_basis` (float32) takes it as one matmul, which ONNX can export. Frames at or past
    ``frame_lengths`` (B,) come out exactly 0; with ``mean_norm`` each row's mean over its valid
    frames is subtracted first (as :func:`mean_normalize`).
    """
    if remove_dc_offset:
        frames = frames - frames.mean(dim=-1, keepdim=True)
    if preemphasis != 0.0:
        # Kaldi: x[i] -= p * x[i-1] for i > 0, and x[0] -= p * x[0].
        first = frames[:, :, :1] * (1.0 - preemphasis)
        frames = torch.cat([first, frames[:, :, 1:] - preemphasis * frames[:, :, :-1]], dim=-1)
    frames = frames * window
    if dft.numel() > 0:
        num_bins = dft.shape[1] // 2
        spectrum = torch.matmul(frames, dft)  # (B, T, 2K): real parts, then imaginary
        real = spectrum[:, :, :num_bins]
        imag = spectrum[:, :, num_bins:]
        power = real * real + imag * imag
    else:
        spectrum = torch.fft.rfft(frames, n=fft_size)  # (B, T, fft_size // 2 + 1) complex
        power = spectrum.real.square() + spectrum.imag.square()
    log_floor = 1.1920928955078125e-07  # float32 epsilon, as Kaldi (a literal for TorchScript)
    feats = torch.matmul(power, mel_filters).clamp(min=log_floor).log()  # (B, T, F)
    positions = torch.arange(feats.shape[1], device=feats.device)
    padding = (positions.unsqueeze(0) >= frame_lengths.unsqueeze(1)).unsqueeze(2)  # (B, T, 1)
    if mean_norm:
        count = frame_lengths.clamp(min=1).to(feats.dtype).unsqueeze(1).unsqueeze(2)
        mean = feats.masked_fill(padding, 0.0).sum(dim=1, keepdim=True) / count
        feats = feats - mean
    return feats.masked_fill(padding, 0.0)


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
    Dither is applied only in training mode; seed it with ``torch.manual_seed``. ``dft=True``
    takes the spectrum as a matmul with :func:`dft_basis` instead of ``rfft``, as the exported
    graph does (:class:`ExportFbank`); float32 rounds the two differently, by ~1e-4 on log-mel
    values of order 10.

    >>> fbank = Fbank(FbankConfig(dither=0.0)).eval()
    >>> feats, frames = fbank(torch.zeros(2, 16000).uniform_(-0.1, 0.1), torch.tensor([16000, 8000]))
    >>> feats.shape, frames.tolist()
    (torch.Size([2, 98, 80]), [98, 48])
    """

    window: Tensor
    mel_filters: Tensor

    def __init__(self, config: FbankConfig | None = None, *, dft: bool = False):
        super().__init__()
        self.config = config if config is not None else FbankConfig()
        self.dft = dft
        # Non-persistent: derived from the config, so not part of a state dict.
        self.register_buffer("window", _window(self.config).float(), persistent=False)
        self.register_buffer("mel_filters", _mel_filters(self.config).float(), persistent=False)
        if dft:
            basis = dft_basis(self.config.window_size, self.config.fft_size).float()
            self.register_buffer("dft_basis", basis, persistent=False)

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
        return repr(self.config) + (", dft=True" if self.dft else "")

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
            x = wav.float() * float(config.waveform_scale)
            frames = x.unfold(-1, config.window_size, config.window_shift)  # (B, T, win)
            if self.training and config.dither > 0:
                frames = frames + config.dither * torch.randn_like(frames)
            # Buffers are cast back in case the module was moved with .half() or .double().
            feats = log_mel(
                frames,
                frame_lengths,
                self.window.float(),
                self.mel_filters.float(),
                self.dft_basis.float() if self.dft else _RFFT,
                config.fft_size,
                float(config.preemphasis),
                bool(config.remove_dc_offset),
                bool(config.mean_norm),
            )
        return feats, frame_lengths


class ExportFbank(nn.Module):
    """Eval-mode :class:`Fbank` (no dither) as exportable operations: ``(B, N)`` -> ``(B, T, F)``.

    The same computation (:func:`log_mel`, with the DFT spectrum of ``Fbank(config, dft=True)``);
    frames are gathered with an index matrix instead of ``unfold``, so the graph takes any batch
    size and length under ONNX and ``torch.jit.script``. Same contract as ``Fbank.forward``:
    ``wav`` float32 in [-1, 1] at the config's sample rate, ``lengths`` (B,) valid samples; returns
    features with frames beyond each row's length exactly 0 and ``frame_lengths`` (B,) int64.
    Needs ``N >= window_size``; lengths are not range-checked (an exported graph cannot raise).

    >>> fbank = Fbank().eval()
    >>> wav, lengths = torch.randn(2, 8000) * 0.1, torch.tensor([8000, 5000])
    >>> feats, frames = ExportFbank(fbank)(wav, lengths)
    >>> (feats - fbank(wav, lengths)[0]).abs().max() < 1e-3, frames.tolist()
    (tensor(True), [48, 29])
    """

    def __init__(self, fbank: Fbank) -> None:
        super().__init__()
        config = fbank.config
        self.window_size = config.window_size
        self.window_shift = config.window_shift
        self.fft_size = config.fft_size
        self.preemphasis = float(config.preemphasis)
        self.remove_dc_offset = bool(config.remove_dc_offset)
        self.mean_norm = bool(config.mean_norm)
        self.waveform_scale = float(config.waveform_scale)
        self.register_buffer("offsets", torch.arange(config.window_size), persistent=False)
        self.register_buffer("window", fbank.window.detach().float().clone(), persistent=False)
        basis = dft_basis(config.window_size, config.fft_size).float()
        self.register_buffer("basis", basis, persistent=False)
        mel = fbank.mel_filters.detach().float().clone()
        self.register_buffer("mel_filters", mel, persistent=False)

    def forward(self, wav: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        lengths = lengths.long()
        frame_lengths = torch.div(
            lengths - self.window_size, self.window_shift, rounding_mode="floor"
        )
        frame_lengths = (frame_lengths + 1).clamp(min=0)
        num_frames = (wav.shape[1] - self.window_size) // self.window_shift + 1
        starts = torch.arange(num_frames, device=wav.device) * self.window_shift  # (T,)
        index = starts.unsqueeze(1) + self.offsets.unsqueeze(0)  # (T, win)
        frames = wav.float()[:, index] * self.waveform_scale  # (B, T, win)
        feats = log_mel(
            frames,
            frame_lengths,
            self.window,
            self.mel_filters,
            self.basis,
            self.fft_size,
            self.preemphasis,
            self.remove_dc_offset,
            self.mean_norm,
        )
        return feats, frame_lengths
