"""The GE2E speaker encoder of Resemblyzer (and of SV2TTS / Real-Time-Voice-Cloning).

Jemine's implementation of the GE2E text-independent model (Wan et al., ICASSP 2018) differs from
the paper's LSTMP (:mod:`speakerprint.models.lstm`): plain LSTM layers without projection, then a
linear layer and a ReLU, so every embedding lies in the positive orthant. An utterance is not
embedded in one pass but as the mean of *partial* embeddings over fixed windows of frames, which
is part of this module's forward, so that a bundle's embedding is Resemblyzer's
``VoiceEncoder.embed_utterance``::

    feats (B, T, 40) -> windows of 160 frames every 77 frames -> (N, 160, 40)
      -> LSTM x 3 (256) -> h of the last layer at the window's last frame -> Linear(256, 256)
      -> ReLU -> L2 norm -> mean over each row's windows -> L2 norm -> (B, 256)

Window layout (Resemblyzer's ``compute_partial_slices``, in frames). The front end
(:mod:`speakerprint.features.resemblyzer`) gives ``n // hop + 1`` centred frames of an ``n``-sample
utterance and then ``tail_frames`` more, whose windows still reach its last samples; so row ``b``
has ``U = lengths[b] - tail_frames`` utterance frames. Windows of ``partial_frames`` start at
0, ``step``, 2 ``step``, ... while ``start < max(1, U - partial_frames + step + 1)``; the last one
is dropped when its start lies less than ``min_coverage * partial_frames`` frames before the
utterance's last frame ``U - 1`` (Resemblyzer's sample coverage below ``min_coverage``) and it is
not the only one. A window may run past the row's frames: those frames are zeros, the mel energies
of the zero padding Resemblyzer appends to the waveform.

Padding: frames at and beyond ``lengths[b]`` are replaced by zeros before windowing, so they never
change an embedding.
"""

from __future__ import annotations

from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from speakerprint.errors import ConfigError
from speakerprint.models.base import EncoderModule
from speakerprint.models.registry import register_model
from speakerprint.models.utils import check_int


class Ge2eLstm(EncoderModule):
    """Resemblyzer's voice encoder: (B, T, feat_dim) mel energies -> (B, embed_dim) unit vectors.

    Args:
        feat_dim: F, mel bands per frame.
        hidden_size: cells of every LSTM layer.
        num_layers: stacked LSTM layers.
        embed_dim: D, output size of the linear layer, hence of the embedding.
        partial_frames: frames per window (Resemblyzer: 160, 1.6 s).
        partial_step_frames: frames between window starts (Resemblyzer: ``round(16000 / 1.3 /
            160)`` = 77, its rate of 1.3 windows per second).
        min_coverage: the last window is kept when at least this fraction of it lies in the
            utterance; ``min_coverage * partial_frames`` must be a whole number of frames, which
            makes the rule in frames the same as Resemblyzer's in samples.
        tail_frames: frames the front end appends after the utterance's centred frames (see the
            module docstring); the window layout counts ``lengths - tail_frames`` frames.

    >>> import torch
    >>> model = Ge2eLstm(hidden_size=32, embed_dim=16, partial_frames=20, partial_step_frames=10)
    >>> emb = model.eval()(torch.rand(2, 75, 40), torch.tensor([75, 30]))
    >>> emb.shape, torch.allclose(emb.norm(dim=1), torch.ones(2)), bool((emb >= 0).all())
    (torch.Size([2, 16]), True, True)
    """

    family: ClassVar[str] = "ge2e_lstm"

    def __init__(
        self,
        *,
        feat_dim: int = 40,
        hidden_size: int = 256,
        num_layers: int = 3,
        embed_dim: int = 256,
        partial_frames: int = 160,
        partial_step_frames: int = 77,
        min_coverage: float = 0.75,
        tail_frames: int = 2,
    ) -> None:
        super().__init__()
        for name, value in [
            ("feat_dim", feat_dim),
            ("hidden_size", hidden_size),
            ("num_layers", num_layers),
            ("embed_dim", embed_dim),
            ("partial_frames", partial_frames),
            ("partial_step_frames", partial_step_frames),
        ]:
            check_int(name, value)
        check_int("tail_frames", tail_frames, minimum=0)
        if partial_step_frames > partial_frames:
            raise ConfigError(
                f"partial_step_frames ({partial_step_frames}) must be <= partial_frames "
                f"({partial_frames}), or frames between windows are never seen"
            )
        if isinstance(min_coverage, bool) or not isinstance(min_coverage, (int, float)):
            raise ConfigError(f"min_coverage must be a float, got {min_coverage!r}")
        covered = min_coverage * partial_frames
        if not 0.0 < min_coverage <= 1.0 or abs(covered - round(covered)) > 1e-9:
            raise ConfigError(
                f"min_coverage must be in (0, 1] and min_coverage * partial_frames a whole "
                f"number of frames, got {min_coverage} * {partial_frames} = {covered}"
            )
        self.feat_dim = feat_dim
        self.embed_dim = embed_dim
        self.min_frames = tail_frames + 1  # one utterance frame
        self.partial_frames = partial_frames
        self.partial_step_frames = partial_step_frames
        self.min_covered_frames = round(covered)
        self.tail_frames = tail_frames
        self._hparams = {
            "feat_dim": feat_dim,
            "hidden_size": hidden_size,
            "num_layers": num_layers,
            "embed_dim": embed_dim,
            "partial_frames": partial_frames,
            "partial_step_frames": partial_step_frames,
            "min_coverage": float(min_coverage),
            "tail_frames": tail_frames,
        }
        self.lstm = nn.LSTM(feat_dim, hidden_size, num_layers=num_layers, batch_first=True)
        self.embedding = nn.Linear(hidden_size, embed_dim)

    def num_windows(self, lengths: Tensor) -> Tensor:
        """Windows of each row, (B,) int64, from its frame count ``lengths`` (B,)."""
        step = self.partial_step_frames
        utterance_frames = lengths.long() - self.tail_frames
        starts_below = (utterance_frames - self.partial_frames + step + 1).clamp(min=1)
        count = torch.div(starts_below + step - 1, step, rounding_mode="floor")
        last_start = (count - 1) * step
        short_last = (utterance_frames - 1 - last_start) < self.min_covered_frames
        return count - ((count > 1) & short_last).long()

    def embed_windows(self, windows: Tensor) -> Tensor:
        """Partial embeddings: windows (N, partial_frames, F) -> (N, D), each of norm 1."""
        _, (hidden, _) = self.lstm(windows)  # (num_layers, N, hidden_size) at the last frame
        return F.normalize(F.relu(self.embedding(hidden[-1])), dim=1)

    def forward(self, feats: Tensor, lengths: Tensor | None = None) -> Tensor:
        """feats: (B, T, F); lengths: (B,) valid frames, None for all -> (B, D), norm 1."""
        mask = self.input_mask(feats, lengths)  # (B, 1, T); checks the shapes
        batch, frames, _ = feats.shape
        row_frames = mask.sum(dim=(1, 2))  # (B,)
        feats = feats.masked_fill(~mask.transpose(1, 2), 0.0)
        count = self.num_windows(row_frames)  # (B,)
        # Every row is cut into as many windows as the longest needs, gathered with an index
        # matrix (not unfold, whose length ONNX cannot take dynamically); windows past a row's
        # count are embedded too and left out of its mean, so padding changes no row.
        max_count = count.max()
        starts = torch.arange(max_count, device=feats.device) * self.partial_step_frames  # (W,)
        offsets = torch.arange(self.partial_frames, device=feats.device)  # (P,)
        index = starts[:, None] + offsets[None, :]  # (W, P)
        inside = index < frames  # windows reach past the last frame: zeros there
        windows = feats[:, index.clamp(max=frames - 1)] * inside[None, :, :, None]  # (B, W, P, F)
        partial = self.embed_windows(windows.flatten(0, 1)).view(batch, -1, self.embed_dim)
        valid = torch.arange(max_count, device=feats.device)[None, :] < count[:, None]  # (B, W)
        summed = (partial * valid[:, :, None].to(partial.dtype)).sum(dim=1)  # (B, D)
        mean = summed / count[:, None].to(partial.dtype)
        return F.normalize(mean, dim=1)


@register_model
def ge2e_lstm(
    *,
    feat_dim: int = 40,
    hidden_size: int = 256,
    num_layers: int = 3,
    embed_dim: int = 256,
    partial_frames: int = 160,
    partial_step_frames: int = 77,
    min_coverage: float = 0.75,
    tail_frames: int = 2,
) -> Ge2eLstm:
    """Resemblyzer's voice encoder: 3 x LSTM(256), Linear(256, 256), 1,423,616 parameters."""
    return Ge2eLstm(
        feat_dim=feat_dim,
        hidden_size=hidden_size,
        num_layers=num_layers,
        embed_dim=embed_dim,
        partial_frames=partial_frames,
        partial_step_frames=partial_step_frames,
        min_coverage=min_coverage,
        tail_frames=tail_frames,
    )
