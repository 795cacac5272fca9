"""The one contract every speaker encoder follows."""

from __future__ import annotations

import copy
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from speakerprint.models.utils import lengths_to_mask


class EncoderModule(nn.Module):
    """Base class of speaker encoders: fbank frames in, one embedding per utterance out.

    ``forward(feats, lengths)`` maps ``feats`` (B, T, F) and ``lengths`` (B,) valid frames of each
    row (None: all T frames are valid) to embeddings (B, embed_dim), always a single tensor.
    Frames at and beyond ``lengths[b]`` must not change the embedding of row ``b``.
    Frame-level outputs (attention weights, frame features) come from separate methods.

    Subclasses set in ``__init__``:
        feat_dim: F, the number of input features per frame.
        embed_dim: D, the size of the embedding.
        min_frames: the shortest input (and the smallest valid ``lengths`` entry) that works.
        _hparams: the constructor's keyword arguments, JSON-serialisable, such that
            ``create_model(model.family, **model.hparams)`` rebuilds the same architecture.
    and as a class attribute ``family``, the registry name of the generic factory.
    """

    family: ClassVar[str]
    feat_dim: int
    embed_dim: int
    min_frames: int
    _hparams: dict[str, Any]

    # TorchScript compiles properties and attributes it is not told to skip; these are Python-only.
    __jit_unused_properties__: ClassVar[list[str]] = ["hparams"]
    __jit_ignored_attributes__: ClassVar[list[str]] = ["_hparams"]

    @property
    def hparams(self) -> dict[str, Any]:
        """Constructor keyword arguments (a copy: editing it does not change the model)."""
        return copy.deepcopy(self._hparams)

    def forward(self, feats: Tensor, lengths: Tensor | None = None) -> Tensor:
        raise NotImplementedError

    def input_mask(self, feats: Tensor, lengths: Tensor | None) -> Tensor:
        """Check the input shapes and return the (B, 1, T) bool mask of valid frames.

        Only shapes are checked, never tensor values, so that the check costs no device sync and
        traces for export. ``lengths`` entries must lie in ``[min_frames, T]``. Under TorchScript
        the errors are ``torch.jit.Error`` with the same messages.
        """
        if feats.dim() != 3:
            raise ValueError(
                f"feats must be (batch, frames, {self.feat_dim}), got {_shape_str(feats)}"
            )
        batch, frames, feat_dim = feats.shape
        if feat_dim != self.feat_dim:
            raise ValueError(
                f"feats has {feat_dim} features per frame, the model takes {self.feat_dim}"
            )
        if frames < self.min_frames:
            raise ValueError(
                f"feats has {frames} frames, the model needs at least {self.min_frames}"
            )
        if lengths is None:
            return torch.ones(batch, 1, frames, dtype=torch.bool, device=feats.device)
        if lengths.dim() != 1 or lengths.shape[0] != batch:
            raise ValueError(f"lengths must be ({batch},), got {_shape_str(lengths)}")
        return lengths_to_mask(lengths.to(feats.device), frames).unsqueeze(1)


def _shape_str(x: Tensor) -> str:
    """``str(tuple(x.shape))``, written so that TorchScript compiles it: ``(3,)``, ``(2, 8, 80)``."""
    sizes = [str(size) for size in x.shape]
    if len(sizes) == 1:
        return "(" + sizes[0] + ",)"
    return "(" + ", ".join(sizes) + ")"
