"""What every training loss shares: its output, and ``set_margin`` for margin schedules."""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor, nn


@dataclass
class LossOutput:
    """loss: scalar; logits: fp32, (B, C) after the margin for a classification loss, the (B, B)
    cosine-similarity matrix for a triplet loss; accuracy: scalar in [0, 1], no grad (each loss
    says what it counts)."""

    loss: Tensor
    logits: Tensor
    accuracy: Tensor


class SpeakerLoss(nn.Module):
    """A training loss: ``loss_fn(emb (B, D), labels (B,) int64) -> LossOutput``.

    ``set_margin`` lets a margin schedule (``loss.margin_warmup_steps``) change the margin of any
    loss without knowing which loss it is; a loss without a margin ignores it.
    """

    def forward(self, emb: Tensor, labels: Tensor) -> LossOutput:  # pragma: no cover - abstract
        raise NotImplementedError

    def set_margin(self, value: float) -> None:
        """Change the margin used from the next step on; a loss without a margin ignores it."""
