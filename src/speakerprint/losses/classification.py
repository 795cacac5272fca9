"""Classification losses for speaker-embedding training: a head, an optional margin, cross-entropy."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from speakerprint.errors import ConfigError
from speakerprint.losses.base import LossOutput, SpeakerLoss
from speakerprint.losses.heads import CosineClassifier, LinearClassifier
from speakerprint.losses.margins import AdditiveAngularMargin, AdditiveMargin
from speakerprint.losses.triplet import TripletLoss
from speakerprint.utils.precision import upcast

__all__ = ["LOSS_NAMES", "ClassificationLoss", "LossOutput", "build_loss"]


class ClassificationLoss(SpeakerLoss):
    """Cross-entropy over ``margin(head(emb), labels)``, or over ``head(emb)`` without a margin.

    The head holds the class weights (saved with the training checkpoint, dropped from the
    inference bundle); the margin holds no parameters and can be rescheduled with ``set_margin``.
    The output's ``accuracy`` is the fraction of rows whose margin-free head output has its argmax
    at the label; ``logits`` are (B, C) after the margin, fp32.

    >>> loss_fn = ClassificationLoss(CosineClassifier(192, 10), AdditiveAngularMargin())
    >>> out = loss_fn(torch.randn(4, 192), torch.tensor([0, 1, 2, 3]))
    >>> out.loss.shape, out.logits.shape
    (torch.Size([]), torch.Size([4, 10]))
    """

    def __init__(self, head: nn.Module, margin: nn.Module | None = None) -> None:
        super().__init__()
        self.head = head
        self.margin = margin

    def forward(self, emb: Tensor, labels: Tensor) -> LossOutput:
        """emb: (B, D); labels: (B,) int64 class indices."""
        scores = self.head(emb)  # (B, C) cosines or logits
        if self.margin is None:
            logits = upcast(scores)
        else:
            logits = self.margin(scores, labels)
        with torch.autocast(device_type=logits.device.type, enabled=False):
            loss = F.cross_entropy(logits, labels)
        with torch.no_grad():
            accuracy = (scores.argmax(dim=-1) == labels).float().mean()
        return LossOutput(loss=loss, logits=logits, accuracy=accuracy)

    def set_margin(self, value: float) -> None:
        """Change the margin's margin (see its ``set_margin``); without a margin, nothing to do."""
        if self.margin is not None:
            self.margin.set_margin(value)


LOSS_NAMES = ("aam", "am", "softmax", "triplet")


def build_loss(
    name: str,
    *,
    embed_dim: int,
    num_classes: int,
    margin: float = 0.2,
    scale: float = 30.0,
    mining: str = "batch_hard",
) -> ClassificationLoss | TripletLoss:
    """Build a named training loss; each is called as ``loss_fn(emb, labels) -> LossOutput``.

    ``"aam"``: cosine head + additive angular margin (ArcFace); ``"am"``: cosine head + additive
    margin (CosFace); ``"softmax"``: linear head and plain cross-entropy, where ``margin`` and
    ``scale`` do not apply and are ignored; ``"triplet"``: :class:`TripletLoss` with ``margin``
    (on cosine similarity) and ``mining``, no parameters and no head, so ``num_classes`` and
    ``scale`` are unused. ``mining`` applies to ``"triplet"`` only.

    >>> loss_fn = build_loss("aam", embed_dim=192, num_classes=5994, margin=0.2, scale=32.0)
    """
    for arg, value in (("embed_dim", embed_dim), ("num_classes", num_classes)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(f"{arg} must be a positive int, got {value!r}")
    if name == "aam":
        head = CosineClassifier(embed_dim, num_classes)
        return ClassificationLoss(head, AdditiveAngularMargin(margin=margin, scale=scale))
    if name == "am":
        head = CosineClassifier(embed_dim, num_classes)
        return ClassificationLoss(head, AdditiveMargin(margin=margin, scale=scale))
    if name == "softmax":
        return ClassificationLoss(LinearClassifier(embed_dim, num_classes))
    if name == "triplet":
        return TripletLoss(margin=margin, mining=mining)
    raise ConfigError(f"unknown loss {name!r}; valid losses: {', '.join(LOSS_NAMES)}")
