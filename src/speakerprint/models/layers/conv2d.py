"""Masked 2-D convolution blocks over (freq, time) maps, for the ResNet-style encoders.

Maps are (B, C, F, T) and masks (B, 1, 1, T) bool, True at valid time steps. Every convolution
zeroes padded time steps of its input first. A block with time stride s keeps output step t iff
``t < ceil(lengths / s)``, which is ``mask[..., ::s]``: with odd kernels and ``kernel // 2`` zero
padding, a sequence of ``l`` steps alone gives exactly ``ceil(l / s)`` steps, and output step t reads
input steps ``s t - k // 2 .. s t + k // 2``, padded ones being zero as at the end of a lone sequence.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from speakerprint.models.layers.norm import MaskedBatchNorm2d, SyncMaskedBatchNorm2d

# The 2-D norms live in norm.py beside the 1-D ones; imported here for the blocks and old imports.
__all__ = ["BasicBlock2d", "Bottleneck2d", "ConvBn2d", "MaskedBatchNorm2d", "SyncMaskedBatchNorm2d"]


def add_residual(y: Tensor, residual: Tensor) -> Tensor:
    """``y + residual``, in place when no gradient is recorded (``y`` is a fresh norm output that
    nothing else holds): one pass over the map instead of an allocation and a pass."""
    if torch.is_grad_enabled():
        return y + residual
    return y.add_(residual)


class ConvBn2d(nn.Module):
    """Conv2d (no bias, "same" zero padding, equal stride on both axes), then masked BatchNorm.

    >>> import torch
    >>> conv = ConvBn2d(1, 32, kernel_size=3, stride=2)
    >>> x, mask = torch.randn(2, 1, 80, 9), torch.ones(2, 1, 1, 9, dtype=torch.bool)
    >>> y, out_mask = conv(x, mask)
    >>> y.shape, out_mask.shape
    (torch.Size([2, 32, 40, 5]), torch.Size([2, 1, 1, 5]))
    """

    def __init__(
        self, in_channels: int, out_channels: int, *, kernel_size: int, stride: int = 1
    ) -> None:
        super().__init__()
        if kernel_size % 2 != 1:
            raise ValueError(f"kernel_size must be odd, got {kernel_size}")
        self.stride = stride
        self.conv = nn.Conv2d(
            in_channels,
            out_channels,
            kernel_size,
            stride=stride,
            padding=kernel_size // 2,
            bias=False,
        )
        self.norm = MaskedBatchNorm2d(out_channels)
        # A 1x1 convolution reads one time step: garbage at padded steps stays there, and every
        # block zeroes its output, so only wider kernels need their input zeroed.
        self.zero_input = kernel_size > 1

    def forward(self, x: Tensor, mask: Tensor, padded: bool = True) -> tuple[Tensor, Tensor]:
        """x: (B, C_in, F, T); mask: (B, 1, 1, T) -> (B, C_out, F', T') and its mask (B, 1, 1, T').

        ``padded=False`` says that no step is padded (the mask is all True): nothing is zeroed
        and the norm takes no mask, which gives the same output without the masking's cost.
        The output is not zeroed at padded steps.
        """
        out_mask = mask[..., :: self.stride]
        if padded and self.zero_input:
            x = x * mask
        return self.norm(self.conv(x), out_mask if padded else None), out_mask


class BasicBlock2d(nn.Module):
    """ResNet basic block: two 3x3 ConvBn2d with ``activation`` between and after the residual sum.

    The shortcut is a 1x1 ConvBn2d when the stride or the channel count changes, else the input
    (He et al. 2016, option B). ``activation`` is ReLU for ResNet34, the clipped ReLU
    ``min(max(x, 0), 20)`` for Deep Speaker. The output is zero at padded time steps.

    >>> import torch
    >>> block = BasicBlock2d(32, 64, stride=2, activation=nn.ReLU())
    >>> x, mask = torch.randn(2, 32, 40, 9), torch.ones(2, 1, 1, 9, dtype=torch.bool)
    >>> block(x, mask)[0].shape
    torch.Size([2, 64, 20, 5])
    """

    def __init__(
        self, in_channels: int, out_channels: int, *, stride: int = 1, activation: nn.Module
    ) -> None:
        super().__init__()
        self.conv1 = ConvBn2d(in_channels, out_channels, kernel_size=3, stride=stride)
        self.conv2 = ConvBn2d(out_channels, out_channels, kernel_size=3)
        self.shortcut = None
        if stride != 1 or in_channels != out_channels:
            self.shortcut = ConvBn2d(in_channels, out_channels, kernel_size=1, stride=stride)
        self.activation = activation

    def forward(self, x: Tensor, mask: Tensor, padded: bool = True) -> tuple[Tensor, Tensor]:
        """x: (B, C_in, F, T); mask: (B, 1, 1, T) -> (B, C_out, F', T') zero when padded, mask.

        ``padded=False``: no step is padded, nothing needs zeroing (see :class:`ConvBn2d`)."""
        y, out_mask = self.conv1(x, mask, padded)
        y, _ = self.conv2(self.activation(y), out_mask, padded)
        residual = x if self.shortcut is None else self.shortcut(x, mask, padded)[0]
        y = self.activation(add_residual(y, residual))
        return (y * out_mask if padded else y), out_mask


class Bottleneck2d(nn.Module):
    """ResNet bottleneck block: 1x1 down to ``channels``, 3x3 (strided), 1x1 up to 4 ``channels``.

    ReLU after the first two convolutions and after the residual sum. The stride sits on the 3x3
    convolution (as in WeSpeaker's ResNet152/221/293 and torchvision's ResNet v1.5); the shortcut
    is a strided 1x1 ConvBn2d when the stride or the channel count changes, else the input. The
    output, ``expansion * channels`` wide, is zero at padded time steps.

    >>> import torch
    >>> block = Bottleneck2d(32, 16, stride=2)
    >>> x, mask = torch.randn(2, 32, 40, 9), torch.ones(2, 1, 1, 9, dtype=torch.bool)
    >>> block(x, mask)[0].shape
    torch.Size([2, 64, 20, 5])
    """

    expansion = 4

    def __init__(self, in_channels: int, channels: int, *, stride: int = 1) -> None:
        super().__init__()
        out_channels = self.expansion * channels
        self.conv1 = ConvBn2d(in_channels, channels, kernel_size=1)
        self.conv2 = ConvBn2d(channels, channels, kernel_size=3, stride=stride)
        self.conv3 = ConvBn2d(channels, out_channels, kernel_size=1)
        self.shortcut = None
        if stride != 1 or in_channels != out_channels:
            self.shortcut = ConvBn2d(in_channels, out_channels, kernel_size=1, stride=stride)

    def forward(self, x: Tensor, mask: Tensor, padded: bool = True) -> tuple[Tensor, Tensor]:
        """x: (B, C_in, F, T); mask: (B, 1, 1, T) -> (B, 4 C, F', T') zero when padded, mask.

        ``padded=False``: no step is padded, nothing needs zeroing (see :class:`ConvBn2d`)."""
        y, _ = self.conv1(x, mask, padded)
        # conv2 zeroes padded steps of its input itself, as the 3x3 needs.
        y, out_mask = self.conv2(torch.relu(y), mask, padded)
        y, _ = self.conv3(torch.relu(y), out_mask, padded)
        residual = x if self.shortcut is None else self.shortcut(x, mask, padded)[0]
        y = add_residual(y, residual)
        y = torch.relu_(y) if not torch.is_grad_enabled() else torch.relu(y)
        return (y * out_mask if padded else y), out_mask
