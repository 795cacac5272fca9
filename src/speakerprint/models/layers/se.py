"""Squeeze-and-excitation over time for 1-D feature maps."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from speakerprint.models.utils import masked_mean


class SqueezeExcitation1d(nn.Module):
    """Rescale each channel by a gate computed from its mean over the valid frames.

    ``gate = sigmoid(W2 relu(W1 mean_t(x) + b1) + b2)``, both linear layers with bias (Hu et al.
    2018; Desplanques et al. 2020, eq. 1-2); with ``bias=False`` without ``b1`` and ``b2``, as in
    NeMo's ``SqueezeExcite``. The mean skips padded frames, so padding does not change the gate.

    >>> se = SqueezeExcitation1d(512, bottleneck=128)
    >>> x, mask = torch.randn(2, 512, 50), torch.ones(2, 1, 50, dtype=torch.bool)
    >>> se(x, mask).shape
    torch.Size([2, 512, 50])
    """

    def __init__(self, channels: int, *, bottleneck: int, bias: bool = True) -> None:
        super().__init__()
        self.squeeze = nn.Linear(channels, bottleneck, bias=bias)
        self.excite = nn.Linear(bottleneck, channels, bias=bias)

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        """x: (B, C, T); mask: (B, 1, T) bool -> (B, C, T), zero where x is."""
        context = masked_mean(x, mask)  # (B, C)
        gate = torch.sigmoid(self.excite(F.relu(self.squeeze(context))))
        return x * gate.unsqueeze(-1)
