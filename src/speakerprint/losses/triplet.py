"""Triplet loss on cosine similarity with in-batch mining, as in the Deep Speaker recipe.

Triplets are mined inside each batch, so a batch needs several utterances of each of several
speakers: use :class:`speakerprint.data.dataset.SpeakerBalancedBatchSampler`
(``data.sampler=speaker_balanced``).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from speakerprint.errors import ConfigError
from speakerprint.losses.base import LossOutput, SpeakerLoss

MINING_NAMES = ("batch_hard", "semi_hard")

# Fill values outside the cosine range [-1, 1], so masked entries never win a max or a min.
_BELOW = -3.0
_ABOVE = 3.0


class TripletLoss(SpeakerLoss):
    """``relu(s_an - s_ap + margin)`` over triplets mined in the batch, ``s`` the cosine similarity.

    Embeddings are L2-normalised and compared by cosine similarity, as Deep Speaker trains them.
    Mining:

    - ``"batch_hard"`` (Hermans, Beyer & Leibe 2017): one triplet per anchor, with its least
      similar positive and its most similar negative. The loss is the mean over anchors that have
      at least one positive and one negative in the batch.
    - ``"semi_hard"`` (Schroff et al. 2015, FaceNet): one triplet per anchor-positive pair, with
      the most similar negative that is still less similar than the positive (``s_an < s_ap``).
      Where no such negative exists the pair takes the anchor's most similar negative (the
      batch-hard choice): every negative then beats the positive, so the pair is wrongly ordered
      whichever is taken, and the most similar one is the violation the accuracy below counts.
      (TF-Addons takes the least similar negative instead, which is gentler early in training.)
      The loss is the mean over valid anchor-positive pairs (anchor and positive
      distinct, same label, the anchor has a negative), counting pairs whose loss is zero.

    ``forward(emb (B, D), labels (B,) int64)`` returns a :class:`LossOutput` whose ``logits`` is
    the (B, B) fp32 cosine-similarity matrix and whose ``accuracy`` is the fraction of valid
    anchor-positive pairs where the positive is more similar to the anchor than every negative in
    the batch (1.0 only for a perfectly separated batch). Everything runs in fp32, autocast or not.
    Memory is O(B²).

    >>> loss_fn = TripletLoss(margin=0.1, mining="semi_hard")
    >>> out = loss_fn(torch.randn(8, 192), torch.tensor([0, 0, 1, 1, 2, 2, 3, 3]))
    >>> out.loss.shape, out.logits.shape
    (torch.Size([]), torch.Size([8, 8]))
    """

    def __init__(self, margin: float = 0.1, mining: str = "batch_hard") -> None:
        super().__init__()
        if mining not in MINING_NAMES:
            raise ConfigError(
                f"unknown triplet mining {mining!r}; valid mining: {', '.join(MINING_NAMES)}"
            )
        self.set_margin(margin)
        self.mining = mining

    def set_margin(self, value: float) -> None:
        """Change the margin (on cosine similarity, finite and >= 0); for margin schedules."""
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"triplet margin must be a number, got {value!r}")
        if not (math.isfinite(value) and value >= 0):
            raise ConfigError(f"triplet margin must be finite and >= 0, got {value!r}")
        self.margin = float(value)

    def extra_repr(self) -> str:
        return f"margin={self.margin}, mining={self.mining!r}"

    def forward(self, emb: Tensor, labels: Tensor) -> LossOutput:
        """emb: (B, D); labels: (B,) int64 speaker labels."""
        if emb.dim() != 2 or labels.shape != emb.shape[:1]:
            raise ValueError(
                f"expected emb (B, D) and labels (B,), got {tuple(emb.shape)} and "
                f"{tuple(labels.shape)}"
            )
        batch_size = emb.shape[0]
        with torch.autocast(device_type=emb.device.type, enabled=False):
            unit = F.normalize(emb.float(), dim=-1)
            sim = unit @ unit.T  # (B, B) cosine similarities, row = anchor
            same = labels[:, None] == labels[None, :]
            not_self = ~torch.eye(batch_size, dtype=torch.bool, device=emb.device)
            positive = same & not_self  # (B, B)
            negative = ~same  # (B, B)
            anchors = positive.any(dim=1) & negative.any(dim=1)  # (B,)
            if not bool(anchors.any()):
                raise ValueError(
                    f"triplet loss found no anchor with both a positive and a negative among "
                    f"{batch_size} items of {labels.unique().numel()} speaker(s): it needs a "
                    f"speaker-balanced batch (data.sampler=speaker_balanced) with at least two "
                    f"speakers and two utterances of each"
                )
            pairs = positive & anchors[:, None]  # (B, B) valid anchor-positive pairs
            neg_sim = sim.masked_fill(~negative, _BELOW)  # (B, B)
            hardest_neg = neg_sim.amax(dim=1)  # (B,)

            if self.mining == "batch_hard":
                hardest_pos = sim.masked_fill(~positive, _ABOVE).amin(dim=1)  # (B,)
                loss = F.relu(hardest_neg - hardest_pos + self.margin)[anchors].mean()
            else:
                # Per anchor row, negatives sorted ascending (masked entries first); for each
                # positive, the last negative strictly below s_ap is the semi-hard one.
                sorted_neg, _ = neg_sim.sort(dim=1)  # (B, B)
                below = torch.searchsorted(sorted_neg.detach(), sim.detach(), side="left") - 1
                semi = sorted_neg.gather(1, below.clamp(min=0))  # (B, B), per (anchor, positive)
                has_semi = (below >= 0) & (semi > _BELOW)
                chosen_neg = torch.where(has_semi, semi, hardest_neg[:, None])  # (B, B)
                loss = F.relu(chosen_neg - sim + self.margin)[pairs].mean()

        with torch.no_grad():
            accuracy = (sim > hardest_neg[:, None])[pairs].float().mean()
        return LossOutput(loss=loss, logits=sim, accuracy=accuracy)
