"""LSTM d-vector (Wan, Wang, Papir and Lopez Moreno, ICASSP 2018, "Generalized end-to-end loss").

The GE2E text-independent model: 40-dim log-mel frames into 3 LSTM layers of 768 cells, each with
a projection to 256 (LSTMP); the d-vector is the L2-normalised output of the last layer **at the
last valid frame** of each utterance (paper, section 2.1), not a mean over frames::

    feats (B, T, 40) -> LSTMP x 3 (768 cells, 256 projection) -> h at frame lengths[b] - 1 -> L2 norm

The batch is packed with ``lengths`` (``pack_padded_sequence``), so padded frames never enter the
recurrence and padding never changes an embedding, in training mode as in eval mode. The paper
(and the TitaNet comparisons that use it as a baseline) embed long utterances as the mean of
d-vectors over sliding windows; windowing belongs to the caller (the inference layer), this module
embeds one window.
"""

from __future__ import annotations

from typing import ClassVar

import torch.nn.functional as F
from torch import Tensor, nn

from speakerprint.errors import ConfigError
from speakerprint.models.base import EncoderModule
from speakerprint.models.registry import register_model
from speakerprint.models.utils import check_int


class LstmDvector(EncoderModule):
    """LSTM d-vector encoder: (B, T, feat_dim) log-mel frames -> (B, embed_dim) unit vectors.

    Args:
        feat_dim: F, input features per frame.
        hidden_size: LSTM cells per layer.
        num_layers: stacked LSTM layers.
        embed_dim: D, the projection size of every layer, hence the embedding size.

    >>> import torch
    >>> model = LstmDvector(hidden_size=64, embed_dim=32).eval()
    >>> feats, lengths = torch.randn(2, 200, 40), torch.tensor([200, 150])
    >>> emb = model(feats, lengths)
    >>> emb.shape, torch.allclose(emb.norm(dim=1), torch.ones(2))
    (torch.Size([2, 32]), True)
    """

    family: ClassVar[str] = "lstm_dvector"

    def __init__(
        self,
        *,
        feat_dim: int = 40,
        hidden_size: int = 768,
        num_layers: int = 3,
        embed_dim: int = 256,
    ) -> None:
        super().__init__()
        for name, value in [
            ("feat_dim", feat_dim),
            ("hidden_size", hidden_size),
            ("num_layers", num_layers),
            ("embed_dim", embed_dim),
        ]:
            check_int(name, value)
        if embed_dim >= hidden_size:
            raise ConfigError(
                f"embed_dim (the LSTM projection, {embed_dim}) must be < hidden_size ({hidden_size})"
            )
        self.feat_dim = feat_dim
        self.embed_dim = embed_dim
        self.min_frames = 1
        self._hparams = {
            "feat_dim": feat_dim,
            "hidden_size": hidden_size,
            "num_layers": num_layers,
            "embed_dim": embed_dim,
        }
        self.lstm = nn.LSTM(
            feat_dim, hidden_size, num_layers=num_layers, proj_size=embed_dim, batch_first=True
        )

    def forward(self, feats: Tensor, lengths: Tensor | None = None) -> Tensor:
        """feats: (B, T, F); lengths: (B,) valid frames, None for all -> d-vectors (B, D), norm 1."""
        mask = self.input_mask(feats, lengths)  # checks the shapes
        # The same packed path with and without lengths, so both give bit-identical results.
        frames = mask.sum(dim=(1, 2)).cpu()  # (B,)
        packed = nn.utils.rnn.pack_padded_sequence(
            feats, frames, batch_first=True, enforce_sorted=False
        )
        _, (last_output, _) = self.lstm(packed)  # (num_layers, B, D) at each row's last frame
        return F.normalize(last_output[-1], dim=1)


@register_model
def lstm_dvector(
    *,
    feat_dim: int = 40,
    hidden_size: int = 768,
    num_layers: int = 3,
    embed_dim: int = 256,
) -> LstmDvector:
    """The GE2E LSTM d-vector: 3 x LSTMP(768 cells, 256 projection), 4,663,296 parameters."""
    return LstmDvector(
        feat_dim=feat_dim, hidden_size=hidden_size, num_layers=num_layers, embed_dim=embed_dim
    )
