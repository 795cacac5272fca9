"""Classifier heads: embeddings in, one score per training speaker out."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from speakerprint.utils.precision import upcast


class CosineClassifier(nn.Module):
    """Cosine similarity between the embedding and one weight vector per class.

    Computed in fp32 with autocast off (a bf16 cosine has about 3 significant digits, which a
    margin of 0.2 times a scale of 30 magnifies), clamped to [-1, 1] for the ``acos``/``sqrt`` of
    the margins that follow.

    >>> head = CosineClassifier(192, 1000)
    >>> head(torch.randn(8, 192)).shape
    torch.Size([8, 1000])
    """

    def __init__(self, embed_dim: int, num_classes: int) -> None:
        super().__init__()
        self.embed_dim = embed_dim
        self.num_classes = num_classes
        self.weight = nn.Parameter(torch.empty(num_classes, embed_dim))
        nn.init.xavier_uniform_(self.weight)

    def forward(self, emb: Tensor) -> Tensor:
        """emb: (B, D) -> cosine (B, num_classes), fp32, in [-1, 1]."""
        with torch.autocast(device_type=emb.device.type, enabled=False):
            emb = F.normalize(upcast(emb), dim=-1)
            weight = F.normalize(upcast(self.weight), dim=-1)
            return F.linear(emb, weight).clamp(-1.0, 1.0)


class LinearClassifier(nn.Module):
    """Affine logits ``emb W^T + b`` for plain softmax cross-entropy.

    >>> head = LinearClassifier(192, 1000)
    >>> head(torch.randn(8, 192)).shape
    torch.Size([8, 1000])
    """

    def __init__(self, embed_dim: int, num_classes: int) -> None:
        super().__init__()
        self.embed_dim = embed_dim
        self.num_classes = num_classes
        self.linear = nn.Linear(embed_dim, num_classes)

    def forward(self, emb: Tensor) -> Tensor:
        """emb: (B, D) -> logits (B, num_classes)."""
        return self.linear(emb)
