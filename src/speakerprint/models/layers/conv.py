"""Masked 1-D convolution block: Conv1d, ReLU, BatchNorm, in the order of the ECAPA-TDNN paper."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from speakerprint.models.layers.norm import MaskedBatchNorm1d


class ConvReluBn(nn.Module):
    """Conv1d with zero "same" padding, then ReLU, then BatchNorm, then zeroing of padded frames.

    Zeroing the output keeps the next convolution from reading padded frames: a frame near the end
    of a short utterance then sees the same zeros whether the utterance is alone or padded in a batch.

    >>> import torch
    >>> block = ConvReluBn(80, 512, kernel_size=5)
    >>> x, mask = torch.randn(2, 80, 100), torch.ones(2, 1, 100, dtype=torch.bool)
    >>> block(x, mask).shape
    torch.Size([2, 512, 100])
    """

    def __init__(
        self, in_channels: int, out_channels: int, *, kernel_size: int = 1, dilation: int = 1
    ) -> None:
        super().__init__()
        if kernel_size % 2 != 1:
            raise ValueError(f"kernel_size must be odd to keep the frame count, got {kernel_size}")
        padding = dilation * (kernel_size - 1) // 2
        self.conv = nn.Conv1d(
            in_channels, out_channels, kernel_size, dilation=dilation, padding=padding
        )
        self.norm = MaskedBatchNorm1d(out_channels)

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        """x: (B, C_in, T), zero at padded frames; mask: (B, 1, T) bool -> (B, C_out, T)."""
        return self.norm(F.relu(self.conv(x)), mask) * mask
