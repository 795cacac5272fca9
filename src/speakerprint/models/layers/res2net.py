"""Res2Net-style multi-scale convolution and the SE-Res2Block of ECAPA-TDNN."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from speakerprint.models.layers.conv import ConvReluBn
from speakerprint.models.layers.se import SqueezeExcitation1d


class Res2Conv1d(nn.Module):
    """Split the channels into ``scale`` groups and convolve them hierarchically (Gao et al. 2019).

    Group 0 is convolved; group i > 0 is convolved after adding the output of group i - 1, which
    widens the receptive field group by group; the last group passes through unchanged. With
    ``scale`` = 1 it is a single ConvReluBn over all channels.

    >>> res2 = Res2Conv1d(512, kernel_size=3, dilation=2, scale=8)
    >>> x, mask = torch.randn(2, 512, 50), torch.ones(2, 1, 50, dtype=torch.bool)
    >>> res2(x, mask).shape
    torch.Size([2, 512, 50])
    """

    def __init__(
        self,
        channels: int,
        *,
        kernel_size: int,
        dilation: int,
        scale: int,
        padding_mode: str = "zeros",
    ) -> None:
        super().__init__()
        if channels % scale != 0:
            raise ValueError(f"channels ({channels}) must be divisible by scale ({scale})")
        self.width = channels // scale
        self.scale = scale
        num_convs = max(scale - 1, 1)
        self.convs = nn.ModuleList(
            ConvReluBn(
                self.width,
                self.width,
                kernel_size=kernel_size,
                dilation=dilation,
                padding_mode=padding_mode,
            )
            for _ in range(num_convs)
        )

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        """x: (B, C, T); mask: (B, 1, T) bool -> (B, C, T)."""
        if self.scale == 1:
            return self.convs[0](x, mask)
        groups = torch.split(x, self.width, dim=1)  # scale x (B, C / scale, T)
        outputs = []
        y = groups[0]
        for i, conv in enumerate(self.convs):
            y = conv(y if i == 0 else y + groups[i], mask)
            outputs.append(y)
        outputs.append(groups[-1])
        return torch.cat(outputs, dim=1)


class SERes2Block(nn.Module):
    """The SE-Res2Block of ECAPA-TDNN: 1x1 conv, dilated Res2 conv, 1x1 conv, SE, plus the input.

    Each convolution is Conv1d + ReLU + BatchNorm (paper, fig. 1); all keep ``channels``.

    >>> block = SERes2Block(512, kernel_size=3, dilation=2, scale=8, se_channels=128)
    >>> x, mask = torch.randn(2, 512, 50), torch.ones(2, 1, 50, dtype=torch.bool)
    >>> block(x, mask).shape
    torch.Size([2, 512, 50])
    """

    def __init__(
        self,
        channels: int,
        *,
        kernel_size: int,
        dilation: int,
        scale: int,
        se_channels: int,
        padding_mode: str = "zeros",
    ) -> None:
        super().__init__()
        self.conv_in = ConvReluBn(channels, channels, kernel_size=1)
        self.res2 = Res2Conv1d(
            channels,
            kernel_size=kernel_size,
            dilation=dilation,
            scale=scale,
            padding_mode=padding_mode,
        )
        self.conv_out = ConvReluBn(channels, channels, kernel_size=1)
        self.se = SqueezeExcitation1d(channels, bottleneck=se_channels)

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        """x: (B, C, T), zero at padded frames; mask: (B, 1, T) bool -> (B, C, T), likewise."""
        y = self.conv_in(x, mask)
        y = self.res2(y, mask)
        y = self.conv_out(y, mask)
        return x + self.se(y, mask)
