"""Masked 1-D convolution block: Conv1d, ReLU, BatchNorm, in the order of the ECAPA-TDNN paper."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from speakerprint.models.layers.norm import MaskedBatchNorm1d


def reflect_pad(x: Tensor, mask: Tensor, padding: int) -> Tensor:
    """Pad (B, C, T) by ``padding`` frames a side, mirroring each row at its own last valid frame.

    Row b with L valid frames becomes ``x[b, :, r(j - padding)]`` for j in [0, T + 2 padding), where
    r reflects about 0 and L - 1 (as ``F.pad(mode="reflect")`` does on the L valid frames alone), so
    the valid output frames of a padded batch equal those of each utterance run alone. Rows of
    ``padding`` frames or fewer, which ``F.pad`` refuses, are mirrored again and again (period
    2 (L - 1); a one-frame row repeats its frame).
    """
    length = mask.sum(dim=-1).clamp(min=1)  # (B, 1)
    period = (2 * (length - 1)).clamp(min=1)
    index = torch.arange(-padding, x.shape[-1] + padding, device=x.device).unsqueeze(0)  # (1, T')
    index = torch.remainder(index.abs(), period)  # (B, T')
    index = torch.where(index >= length, period - index, index)
    return torch.gather(x, 2, index.unsqueeze(1).expand(-1, x.shape[1], -1))


class ConvReluBn(nn.Module):
    """Conv1d with "same" padding, then ReLU, then BatchNorm, then zeroing of padded frames.

    Zeroing the output keeps the next convolution from reading padded frames: a frame near the end
    of a short utterance then sees the same zeros whether the utterance is alone or padded in a batch.
    ``padding_mode="reflect"`` mirrors each utterance at its own ends instead (SpeechBrain's
    convolutions do this), which is just as independent of batch padding (:func:`reflect_pad`).
    ``negative_slope`` > 0 makes the ReLU a leaky one (SpeechBrain's x-vector uses
    ``torch.nn.LeakyReLU``, slope 0.01); it has no parameters, so the state dict is the same.

    >>> import torch
    >>> block = ConvReluBn(80, 512, kernel_size=5)
    >>> x, mask = torch.randn(2, 80, 100), torch.ones(2, 1, 100, dtype=torch.bool)
    >>> block(x, mask).shape
    torch.Size([2, 512, 100])
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        *,
        kernel_size: int = 1,
        dilation: int = 1,
        padding_mode: str = "zeros",
        negative_slope: float = 0.0,
    ) -> None:
        super().__init__()
        if kernel_size % 2 != 1:
            raise ValueError(f"kernel_size must be odd to keep the frame count, got {kernel_size}")
        if padding_mode not in ("zeros", "reflect"):
            raise ValueError(f"padding_mode must be 'zeros' or 'reflect', got {padding_mode!r}")
        if not 0.0 <= negative_slope < 1.0:
            raise ValueError(f"negative_slope must be in [0, 1), got {negative_slope}")
        self.negative_slope = float(negative_slope)
        self.padding = dilation * (kernel_size - 1) // 2
        self.reflect = padding_mode == "reflect" and self.padding > 0
        self.conv = nn.Conv1d(
            in_channels,
            out_channels,
            kernel_size,
            dilation=dilation,
            padding=0 if self.reflect else self.padding,
        )
        self.norm = MaskedBatchNorm1d(out_channels)

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        """x: (B, C_in, T), zero at padded frames; mask: (B, 1, T) bool -> (B, C_out, T)."""
        if self.reflect:
            x = reflect_pad(x, mask, self.padding)
        x = self.conv(x)
        x = F.leaky_relu(x, self.negative_slope) if self.negative_slope > 0.0 else F.relu(x)
        return self.norm(x, mask) * mask
