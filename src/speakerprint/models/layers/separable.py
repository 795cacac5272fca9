"""Depthwise-separable 1-D convolution with batch norm (QuartzNet / TitaNet sub-block core)."""

from __future__ import annotations

from torch import Tensor, nn

from speakerprint.models.layers.norm import MaskedBatchNorm1d


class SeparableConvBn(nn.Module):
    """Depthwise Conv1d, pointwise (1x1) Conv1d, BatchNorm; zero "same" padding, no conv biases.

    The input is zeroed at padded frames first, so a frame near the end of a short utterance sees
    the same zeros alone or padded in a batch. The output is not zeroed (the BatchNorm shift makes
    padded frames non-zero); the caller masks where it matters. No activation: TitaNet puts the
    squeeze-and-excitation and the residual sum between the norm and the ReLU of a block's last
    sub-block. ``eps`` is the BatchNorm's (NeMo's ``JasperBlock`` uses 1e-3).

    >>> import torch
    >>> conv = SeparableConvBn(80, 256, kernel_size=3)
    >>> x, mask = torch.randn(2, 80, 100), torch.ones(2, 1, 100, dtype=torch.bool)
    >>> conv(x, mask).shape
    torch.Size([2, 256, 100])
    """

    def __init__(
        self, in_channels: int, out_channels: int, *, kernel_size: int, eps: float = 1e-5
    ) -> None:
        super().__init__()
        if kernel_size % 2 != 1:
            raise ValueError(f"kernel_size must be odd to keep the frame count, got {kernel_size}")
        self.depthwise = nn.Conv1d(
            in_channels,
            in_channels,
            kernel_size,
            padding=kernel_size // 2,
            groups=in_channels,
            bias=False,
        )
        self.pointwise = nn.Conv1d(in_channels, out_channels, kernel_size=1, bias=False)
        self.norm = MaskedBatchNorm1d(out_channels, eps=eps)

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        """x: (B, C_in, T); mask: (B, 1, T) bool -> (B, C_out, T), not zeroed at padded frames."""
        return self.norm(self.pointwise(self.depthwise(x * mask)), mask)
