"""ECAPA-TDNN (Desplanques, Thienpondt and Demuynck, Interspeech 2020, arXiv:2005.07143).

Layer by layer, with C = ``channels`` and M = ``mfa_channels``::

    feats (B, T, F) -> (B, F, T)
    Conv1d k=5 + ReLU + BN                      -> (B, C, T)
    SE-Res2Block, dilation 2, 3, 4 (k=3, scale 8) -> 3 x (B, C, T)
    concat of the three block outputs, Conv1d k=1 + ReLU + BN -> (B, M, T)   multi-layer aggregation
    attentive statistics pooling, global context  -> (B, 2M)
    BN, Linear, BN                                -> (B, D)

The paper leaves some details to its implementations, and the public ones differ; each difference
is an argument, so that SpeechBrain's and WeSpeaker's checkpoints load exactly
(``speakerprint.convert``). The defaults are SpeechBrain's except for the last BN and the padding:

=================== ============================ ======================== =====================
argument            default                      SpeechBrain              WeSpeaker
=================== ============================ ======================== =====================
``mfa_norm``        BN after the MFA conv + ReLU yes                      no
``attention_norm``  ReLU + BN before the tanh    yes                      no
``embedding_norm``  BN after the Linear (paper)  no                       ``emb_bn`` (off)
``padding_mode``    ``zeros``                    ``reflect``              ``zeros``
``context_std_...`` population std (False)       population               unbiased (True)
=================== ============================ ======================== =====================

Without the two normalisations the attention can saturate into uniform weights
(docs/understanding.md shows it in a model trained that way).

Two details follow WeSpeaker rather than the paper's text:

* Block i + 1 takes the output of block i. The paper (section 3.4) instead feeds each block the sum
  of all earlier block outputs and the first conv's output; WeSpeaker and SpeechBrain do not, and
  their reported results and parameter counts are the ones this model reproduces.
* M stays 1536 when C = 1024 (WeSpeaker's ``ECAPA_TDNN_GLOB_c1024``, 14.66M parameters). The
  20.8M model that SpeechBrain and 3D-Speaker call C = 1024 also widens M to 3072:
  ``ecapa_tdnn_c1024_mfa3072``.

Padded frames are zero before every convolution, and the SE means, the pooling statistics and the
attention softmax skip them, so in eval mode padding never changes an embedding.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from speakerprint.errors import ConfigError
from speakerprint.models.base import EncoderModule
from speakerprint.models.layers import (
    AttentiveStatisticsPooling,
    ConvReluBn,
    MaskedBatchNorm1d,
    SERes2Block,
)
from speakerprint.models.registry import register_model
from speakerprint.models.utils import check_int


class EcapaTdnn(EncoderModule):
    """ECAPA-TDNN speaker encoder: (B, T, feat_dim) fbank frames -> (B, embed_dim) embeddings.

    Args:
        feat_dim: F, input features per frame.
        channels: C, channels of the first conv and of the SE-Res2Blocks.
        mfa_channels: M, channels after multi-layer feature aggregation.
        embed_dim: D, size of the embedding.
        res2_scale: number of Res2Net channel groups; must divide ``channels``.
        se_channels: bottleneck of the squeeze-and-excitation layers.
        attention_channels: bottleneck of the attentive pooling.
        dilations: one SE-Res2Block per entry, with that dilation.
        global_context: append the utterance mean and std to each frame in the attention.
        mfa_norm: BatchNorm after the multi-layer aggregation conv and its ReLU.
        attention_norm: ReLU + BatchNorm between the attention's hidden conv and its tanh.
        embedding_norm: BatchNorm after the final Linear.
        padding_mode: ``zeros`` or ``reflect`` (each utterance mirrored at its own ends).
        context_std_unbiased: the attention's global-context std from the unbiased variance
            (WeSpeaker) instead of the population one.

    >>> model = EcapaTdnn(channels=64, mfa_channels=192, embed_dim=32).eval()
    >>> feats, lengths = torch.randn(2, 200, 80), torch.tensor([200, 150])
    >>> model(feats, lengths).shape
    torch.Size([2, 32])
    """

    family: ClassVar[str] = "ecapa_tdnn"

    def __init__(
        self,
        *,
        feat_dim: int = 80,
        channels: int = 512,
        mfa_channels: int = 1536,
        embed_dim: int = 192,
        res2_scale: int = 8,
        se_channels: int = 128,
        attention_channels: int = 128,
        dilations: Sequence[int] = (2, 3, 4),
        global_context: bool = True,
        mfa_norm: bool = True,
        attention_norm: bool = True,
        embedding_norm: bool = True,
        padding_mode: str = "zeros",
        context_std_unbiased: bool = False,
    ) -> None:
        super().__init__()
        for name, value in [
            ("feat_dim", feat_dim),
            ("channels", channels),
            ("mfa_channels", mfa_channels),
            ("embed_dim", embed_dim),
            ("res2_scale", res2_scale),
            ("se_channels", se_channels),
            ("attention_channels", attention_channels),
        ]:
            check_int(name, value)
        if channels % res2_scale != 0:
            raise ConfigError(
                f"channels ({channels}) must be divisible by res2_scale ({res2_scale})"
            )
        if isinstance(dilations, (str, bytes)) or not isinstance(dilations, Sequence):
            raise ConfigError(f"dilations must be a list of ints, got {dilations!r}")
        if len(dilations) == 0:
            raise ConfigError("dilations must name at least one SE-Res2Block")
        dilations = tuple(check_int("dilations[]", d) for d in dilations)
        for name, flag in [
            ("global_context", global_context),
            ("mfa_norm", mfa_norm),
            ("attention_norm", attention_norm),
            ("embedding_norm", embedding_norm),
            ("context_std_unbiased", context_std_unbiased),
        ]:
            if not isinstance(flag, bool):
                raise ConfigError(f"{name} must be a bool, got {flag!r}")
        if padding_mode not in ("zeros", "reflect"):
            raise ConfigError(f"padding_mode must be 'zeros' or 'reflect', got {padding_mode!r}")

        self.feat_dim = feat_dim
        self.embed_dim = embed_dim
        # Every conv is zero-padded to keep the length and the statistics need one frame (the
        # std is clamped), so one frame is enough to run; it is not enough to say much.
        self.min_frames = 1
        self._hparams = {
            "feat_dim": feat_dim,
            "channels": channels,
            "mfa_channels": mfa_channels,
            "embed_dim": embed_dim,
            "res2_scale": res2_scale,
            "se_channels": se_channels,
            "attention_channels": attention_channels,
            "dilations": list(dilations),
            "global_context": global_context,
            "mfa_norm": mfa_norm,
            "attention_norm": attention_norm,
            "embedding_norm": embedding_norm,
            "padding_mode": padding_mode,
            "context_std_unbiased": context_std_unbiased,
        }

        self.stem = ConvReluBn(feat_dim, channels, kernel_size=5, padding_mode=padding_mode)
        self.blocks = nn.ModuleList(
            SERes2Block(
                channels,
                kernel_size=3,
                dilation=d,
                scale=res2_scale,
                se_channels=se_channels,
                padding_mode=padding_mode,
            )
            for d in dilations
        )
        self.aggregate = nn.Conv1d(channels * len(dilations), mfa_channels, kernel_size=1)
        self.aggregate_norm = MaskedBatchNorm1d(mfa_channels) if mfa_norm else None
        self.pool = AttentiveStatisticsPooling(
            mfa_channels,
            attention_channels=attention_channels,
            global_context=global_context,
            hidden_norm=attention_norm,
            context_unbiased=context_std_unbiased,
        )
        self.pool_norm = nn.BatchNorm1d(self.pool.out_dim)
        self.embedding = nn.Linear(self.pool.out_dim, embed_dim)
        self.embedding_norm = nn.BatchNorm1d(embed_dim) if embedding_norm else nn.Identity()

    def _frame_features(self, feats: Tensor, lengths: Tensor | None) -> tuple[Tensor, Tensor]:
        """-> aggregated frame features (B, M, T), zero at padded frames, and the (B, 1, T) mask."""
        mask = self.input_mask(feats, lengths)
        x = feats.transpose(1, 2) * mask  # (B, F, T)
        x = self.stem(x, mask)  # (B, C, T)
        block_outputs = []
        for block in self.blocks:
            x = block(x, mask)
            block_outputs.append(x)
        x = F.relu(self.aggregate(torch.cat(block_outputs, dim=1)))  # (B, M, T)
        norm = self.aggregate_norm
        if norm is not None:
            x = norm(x, mask)
        return x * mask, mask

    def forward(self, feats: Tensor, lengths: Tensor | None = None) -> Tensor:
        """feats: (B, T, F); lengths: (B,) valid frames, None for all -> embeddings (B, D)."""
        x, mask = self._frame_features(feats, lengths)
        stats = self.pool(x, mask)  # (B, 2M)
        return self.embedding_norm(self.embedding(self.pool_norm(stats)))

    def attention_weights(self, feats: Tensor, lengths: Tensor | None = None) -> Tensor:
        """The pooling attention alpha (B, M, T): per channel, sums to 1 over valid frames, 0 after."""
        x, mask = self._frame_features(feats, lengths)
        return self.pool.attention_weights(x, mask)


@register_model
def ecapa_tdnn(
    *,
    feat_dim: int = 80,
    channels: int = 512,
    mfa_channels: int = 1536,
    embed_dim: int = 192,
    res2_scale: int = 8,
    se_channels: int = 128,
    attention_channels: int = 128,
    dilations: Sequence[int] = (2, 3, 4),
    global_context: bool = True,
    mfa_norm: bool = True,
    attention_norm: bool = True,
    embedding_norm: bool = True,
    padding_mode: str = "zeros",
    context_std_unbiased: bool = False,
) -> EcapaTdnn:
    """ECAPA-TDNN with every argument open; the family that saved models are rebuilt from."""
    return EcapaTdnn(
        feat_dim=feat_dim,
        channels=channels,
        mfa_channels=mfa_channels,
        embed_dim=embed_dim,
        res2_scale=res2_scale,
        se_channels=se_channels,
        attention_channels=attention_channels,
        dilations=dilations,
        global_context=global_context,
        mfa_norm=mfa_norm,
        attention_norm=attention_norm,
        embedding_norm=embedding_norm,
        padding_mode=padding_mode,
        context_std_unbiased=context_std_unbiased,
    )


@register_model
def ecapa_tdnn_c512(*, feat_dim: int = 80, embed_dim: int = 192) -> EcapaTdnn:
    """C = 512, M = 1536: 6.19M parameters (WeSpeaker ECAPA_TDNN_GLOB_c512)."""
    return EcapaTdnn(feat_dim=feat_dim, embed_dim=embed_dim, channels=512, mfa_channels=1536)


@register_model
def ecapa_tdnn_c1024(*, feat_dim: int = 80, embed_dim: int = 192) -> EcapaTdnn:
    """C = 1024, M = 1536: 14.66M parameters (WeSpeaker ECAPA_TDNN_GLOB_c1024)."""
    return EcapaTdnn(feat_dim=feat_dim, embed_dim=embed_dim, channels=1024, mfa_channels=1536)


@register_model
def ecapa_tdnn_c1024_mfa3072(*, feat_dim: int = 80, embed_dim: int = 192) -> EcapaTdnn:
    """C = 1024, M = 3072: 20.77M parameters, the model SpeechBrain and 3D-Speaker call C = 1024."""
    return EcapaTdnn(feat_dim=feat_dim, embed_dim=embed_dim, channels=1024, mfa_channels=3072)
