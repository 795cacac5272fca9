"""Batch normalisation whose training statistics ignore padded frames."""

from __future__ import annotations

import torch
from torch import Tensor, nn


class MaskedBatchNorm1d(nn.BatchNorm1d):
    """``nn.BatchNorm1d`` over (B, C, T) that takes batch statistics from valid frames only.

    With plain BatchNorm1d the zeros of padded frames enter the batch mean and variance during
    training, so the running statistics (and hence every later embedding) depend on how a batch was
    padded. Same parameters and buffers as ``nn.BatchNorm1d``: state dicts are interchangeable.
    When running statistics are used (eval mode) the mask changes nothing.

    >>> bn = MaskedBatchNorm1d(4)
    >>> x, mask = torch.randn(2, 4, 10), torch.ones(2, 1, 10, dtype=torch.bool)
    >>> bn(x, mask).shape
    torch.Size([2, 4, 10])
    """

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        """x: (B, C, T); mask: (B, 1, T) bool, True at valid frames, or None (all valid)."""
        use_batch_stats = self.training or not self.track_running_stats
        if mask is None or not use_batch_stats:
            return super().forward(x)

        # Statistics in fp32 whatever the autocast dtype: sums over B*T frames lose bits in bf16.
        x32 = x.float()
        weight = mask.to(torch.float32)  # (B, 1, T)
        count = weight.sum()
        mean = (x32 * weight).sum(dim=(0, 2)) / count  # (C,)
        centred = x32 - mean[:, None]
        var = (centred.square() * weight).sum(dim=(0, 2)) / count  # biased, as BatchNorm normalises

        if self.training and self.track_running_stats:
            self._update_running_stats(mean.detach(), var.detach(), count.detach())

        y = centred * torch.rsqrt(var[:, None] + self.eps)
        if self.affine:
            y = y * self.weight[:, None] + self.bias[:, None]
        return y.to(x.dtype)

    @torch.no_grad()
    def _update_running_stats(self, mean: Tensor, var: Tensor, count: Tensor) -> None:
        self.num_batches_tracked.add_(1)
        if self.momentum is None:  # cumulative moving average, as in nn.BatchNorm1d
            momentum = 1.0 / float(self.num_batches_tracked)
        else:
            momentum = self.momentum
        unbiased_var = var * count / (count - 1).clamp(min=1)
        self.running_mean.lerp_(mean, momentum)
        self.running_var.lerp_(unbiased_var, momentum)
