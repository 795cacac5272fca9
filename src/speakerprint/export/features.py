"""The filterbank in a form that ONNX and TorchScript can export for any batch size and length.

:class:`~speakerprint.features.Fbank` frames the waveform with ``unfold`` and takes one ``rfft``.
Neither exports: torch 2.13's ONNX exporter (the TorchScript-based one; the dynamo one needs
``onnxscript``) has no symbolic for ``aten::fft_rfft`` at any opset and cannot export ``unfold``
over a dynamic length, and ``Fbank`` itself does not compile with ``torch.jit.script``.
:class:`ExportFbank` computes the same features with export-friendly operations: frames are gathered
with an index matrix, and the DFT of the zero-padded frame is one matmul with a fixed
``(window_size, 2 * (fft_size // 2 + 1))`` cosine/sine basis (zero padding adds nothing to the sum,
so the basis needs only ``window_size`` rows). It takes its window and mel filters from the
``Fbank`` it is built from, and ``tests/export`` holds its output to ``Fbank``'s.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from speakerprint.features import Fbank

__all__ = ["ExportFbank", "dft_basis"]

_FLOAT32_EPS = float(torch.finfo(torch.float32).eps)


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


class ExportFbank(nn.Module):
    """Eval-mode :class:`Fbank` (no dither) as exportable operations: ``(B, N)`` -> ``(B, T, F)``.

    Same contract as ``Fbank.forward``: ``wav`` float32 in [-1, 1] at the config's sample rate,
    ``lengths`` (B,) valid samples; returns features with frames beyond each row's length exactly
    0 (mean-normalised if the config says so) and ``frame_lengths`` (B,) int64. Needs
    ``N >= window_size``; lengths are not range-checked (an exported graph cannot raise).

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
        self.num_bins = config.fft_size // 2 + 1
        self.preemphasis = float(config.preemphasis)
        self.remove_dc_offset = bool(config.remove_dc_offset)
        self.mean_norm = bool(config.mean_norm)
        self.log_floor = _FLOAT32_EPS
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
        frames = wav.float()[:, index] * 32768.0  # (B, T, win)
        if self.remove_dc_offset:
            frames = frames - frames.mean(dim=-1, keepdim=True)
        if self.preemphasis != 0.0:
            p = self.preemphasis
            frames = torch.cat(
                [frames[:, :, :1] * (1.0 - p), frames[:, :, 1:] - p * frames[:, :, :-1]], dim=-1
            )
        frames = frames * self.window
        spectrum = torch.matmul(frames, self.basis)  # (B, T, 2K): real parts, then imaginary
        real = spectrum[:, :, : self.num_bins]
        imag = spectrum[:, :, self.num_bins :]
        power = real * real + imag * imag
        feats = torch.matmul(power, self.mel_filters).clamp(min=self.log_floor).log()  # (B, T, F)
        positions = torch.arange(feats.shape[1], device=wav.device)
        padding = (positions.unsqueeze(0) >= frame_lengths.unsqueeze(1)).unsqueeze(2)  # (B, T, 1)
        if self.mean_norm:
            count = frame_lengths.clamp(min=1).to(feats.dtype).unsqueeze(1).unsqueeze(2)
            mean = feats.masked_fill(padding, 0.0).sum(dim=1, keepdim=True) / count
            feats = feats - mean
        return feats.masked_fill(padding, 0.0), frame_lengths
