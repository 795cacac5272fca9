"""Attentive statistics pooling with global context (ECAPA-TDNN, section 3.3)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from speakerprint.models.layers.norm import MaskedBatchNorm1d
from speakerprint.models.utils import masked_mean_std


class AttentiveStatisticsPooling(nn.Module):
    """Channel-dependent attentive mean and standard deviation over the valid frames.

    For each channel c and frame t: ``e = V f(W [h_t; mean; std] + b) + k`` and
    ``alpha[c, t] = softmax_t(e[c, t])``, with the utterance mean and std of h appended to every frame
    when ``global_context`` is set (Desplanques et al. 2020, eq. 7-9). Padded frames get
    ``e = -inf``, so zero weight. The output is ``[sum_t alpha h_t; sqrt(sum_t alpha (h_t - mean)^2)]``.

    The global-context std is the population one clamped at ``eps`` (see
    :func:`~speakerprint.models.utils.masked_mean_std`); ``context_unbiased`` makes it WeSpeaker's
    ``sqrt(unbiased var + eps)``, which its converted checkpoints need to be exact.

    The paper leaves the non-linearity f open. With ``hidden_norm`` (the default) it is
    ReLU, BatchNorm, tanh, as in SpeechBrain's ECAPA-TDNN and NeMo's TitaNet; without it, tanh
    alone, as in WeSpeaker. The BatchNorm matters: the global-context part of ``W [h; mean; std]``
    is constant over time and, unnormalised, can grow until the tanh saturates on every frame and
    alpha is uniform (docs/understanding.md shows a model trained that way).

    >>> pool = AttentiveStatisticsPooling(1536, attention_channels=128)
    >>> x, mask = torch.randn(2, 1536, 50), torch.ones(2, 1, 50, dtype=torch.bool)
    >>> pool(x, mask).shape
    torch.Size([2, 3072])
    """

    def __init__(
        self,
        channels: int,
        *,
        attention_channels: int = 128,
        global_context: bool = True,
        hidden_norm: bool = True,
        eps: float = 1e-7,
        context_unbiased: bool = False,
    ) -> None:
        super().__init__()
        self.channels = channels
        self.global_context = global_context
        self.hidden_norm = hidden_norm
        self.eps = eps
        self.context_unbiased = context_unbiased
        in_channels = 3 * channels if global_context else channels
        self.attention_hidden = nn.Conv1d(in_channels, attention_channels, kernel_size=1)
        self.attention_norm = MaskedBatchNorm1d(attention_channels) if hidden_norm else None
        self.attention_out = nn.Conv1d(attention_channels, channels, kernel_size=1)

    @property
    def out_dim(self) -> int:
        return 2 * self.channels

    def attention_weights(self, x: Tensor, mask: Tensor) -> Tensor:
        """x: (B, C, T); mask: (B, 1, T) bool -> alpha (B, C, T), summing to 1 over valid frames."""
        weight = self.attention_hidden.weight.squeeze(-1)  # (A, C) or (A, 3C)
        hidden = F.conv1d(x, weight[:, : self.channels, None], self.attention_hidden.bias)
        if self.global_context:
            # Same result as concatenating [h_t; mean; std] on every frame, without building the
            # (B, 3C, T) tensor: the context part of W is applied once per utterance.
            mean, std = masked_mean_std(x, mask, self.eps, self.context_unbiased)
            context = F.linear(torch.cat([mean, std], dim=1), weight[:, self.channels :])
            hidden = hidden + context.unsqueeze(-1)
        norm = self.attention_norm
        if norm is not None:
            hidden = norm(F.relu(hidden), mask)
        scores = self.attention_out(torch.tanh(hidden))  # (B, C, T)
        scores = scores.masked_fill(~mask, float("-inf"))
        return torch.softmax(scores, dim=-1)

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        """x: (B, C, T); mask: (B, 1, T) bool, at least one valid frame a row -> (B, 2C)."""
        alpha = self.attention_weights(x, mask)
        mean = (alpha * x).sum(dim=-1)
        var = (alpha * (x - mean.unsqueeze(-1)).square()).sum(dim=-1)
        return torch.cat([mean, var.clamp(min=self.eps).sqrt()], dim=1)
