"""Deep Speaker ResCNN (Li, Ma, Jiang, Li, Zhang, Liu, Cao, Kannan and Zhu, 2017, arXiv:1705.02304).

Layer by layer (paper, table 1), with the default ``channels`` (64, 128, 256, 512)::

    feats (B, T, 64), each frame normalised to zero mean, unit variance over its 64 bins
    -> (B, 1, 64, T)
    4 stages, each: Conv2d 5x5 stride 2 + BN + clipped ReLU,      -> (B, 64, 32, T/2) ... (B, 512, 4, T/16)
                    3 residual blocks (two 3x3 conv + BN, clipped ReLU)
    flatten channels x freq, mean over valid time steps             -> (B, 2048)
    affine                                                          -> (B, 512)
    L2 normalisation                                                -> the embedding, norm 1

The clipped ReLU is ``min(max(x, 0), 20)``. Divisions round up (zero "same" padding). With these
defaults the model has 24,165,568 parameters (24,151,616 weights, 13,440 BN parameters, 512 affine
biases), the paper's 24M for ResCNN.

The paper feeds normalised fbank but does not say over what; here each frame is normalised over its
bins inside the model, as the widely used reproduction philipperemy/deep-speaker does, so any fbank
module works without a separate normalisation step, and padding cannot change it.

``deep_speaker_small`` (98,040 parameters) keeps the layer types but uses channels (8, 16, 32), two
residual blocks a stage and a 128-d embedding, for VCTK-sized corpora (about 100 speakers). Four
stages at 16 base channels cannot be that small: their last 5x5 conv (64 -> 128) alone has 205k
weights.

Padded time steps are zeroed before every convolution, the downsampled lengths are exact
(``ceil(lengths / 2)`` per stage), and BN batch statistics and the temporal mean skip padded steps,
so padding never changes an embedding.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

import torch.nn.functional as F
from torch import Tensor, nn

from speakerprint.errors import ConfigError
from speakerprint.models.base import EncoderModule
from speakerprint.models.layers import BasicBlock2d, ConvBn2d
from speakerprint.models.registry import register_model
from speakerprint.models.utils import check_int, masked_mean

CLIP = 20.0  # the clipped ReLU's ceiling


def _clipped_relu() -> nn.Module:
    return nn.Hardtanh(0.0, CLIP)


class DeepSpeakerResCnn(EncoderModule):
    """Deep Speaker ResCNN: (B, T, feat_dim) fbank frames -> (B, embed_dim) unit-norm embeddings.

    Args:
        feat_dim: F, input features per frame.
        channels: one stage per entry (a 5x5 stride-2 conv to that many channels, then blocks).
        blocks_per_stage: residual blocks after each strided conv.
        embed_dim: D, size of the embedding.
        eps: added to the per-frame variance before the square root.

    >>> import torch
    >>> model = DeepSpeakerResCnn(channels=[8, 16], blocks_per_stage=1, embed_dim=32).eval()
    >>> feats, lengths = torch.randn(2, 200, 64), torch.tensor([200, 150])
    >>> model(feats, lengths).shape
    torch.Size([2, 32])
    """

    family: ClassVar[str] = "deep_speaker"

    def __init__(
        self,
        *,
        feat_dim: int = 64,
        channels: Sequence[int] = (64, 128, 256, 512),
        blocks_per_stage: int = 3,
        embed_dim: int = 512,
        eps: float = 1e-5,
    ) -> None:
        super().__init__()
        check_int("feat_dim", feat_dim)
        check_int("blocks_per_stage", blocks_per_stage, minimum=0)
        check_int("embed_dim", embed_dim)
        if isinstance(channels, (str, bytes)) or not isinstance(channels, Sequence):
            raise ConfigError(f"channels must be a list of ints, got {channels!r}")
        if len(channels) == 0:
            raise ConfigError("channels must name at least one stage")
        channels = tuple(check_int("channels[]", c) for c in channels)
        if isinstance(eps, bool) or not isinstance(eps, (int, float)) or eps <= 0:
            raise ConfigError(f"eps must be a positive float, got {eps!r}")

        self.feat_dim = feat_dim
        self.embed_dim = embed_dim
        # Zero-padded stride-2 convs map T >= 1 steps to ceil(T / 2) >= 1: one frame runs.
        self.min_frames = 1
        self.eps = float(eps)
        self.clip = CLIP  # an attribute, as TorchScript cannot read module-level globals
        self._hparams = {
            "feat_dim": feat_dim,
            "channels": list(channels),
            "blocks_per_stage": blocks_per_stage,
            "embed_dim": embed_dim,
            "eps": float(eps),
        }

        self.downsamples = nn.ModuleList()
        self.stages = nn.ModuleList()
        in_channels, freq = 1, feat_dim
        for out_channels in channels:
            self.downsamples.append(ConvBn2d(in_channels, out_channels, kernel_size=5, stride=2))
            self.stages.append(
                nn.ModuleList(
                    BasicBlock2d(out_channels, out_channels, activation=_clipped_relu())
                    for _ in range(blocks_per_stage)
                )
            )
            in_channels, freq = out_channels, -(-freq // 2)
        self.pooled_dim = in_channels * freq
        self.embedding = nn.Linear(self.pooled_dim, embed_dim)

    def forward(self, feats: Tensor, lengths: Tensor | None = None) -> Tensor:
        """feats: (B, T, F); lengths: (B,) valid frames, None for all -> embeddings (B, D), norm 1."""
        mask = self.input_mask(feats, lengths).unsqueeze(1)  # (B, 1, 1, T)
        var, mean = _var_mean_over_bins(feats)
        x = ((feats - mean) * (var + self.eps).rsqrt()).transpose(1, 2).unsqueeze(1)  # (B,1,F,T)
        for downsample, stage in zip(self.downsamples, self.stages):
            x, mask = downsample(x, mask)
            x = F.hardtanh(x, 0.0, self.clip) * mask
            for block in stage:
                x, mask = block(x, mask)  # (B, C, F', T')
        pooled = masked_mean(x.flatten(1, 2), mask.squeeze(1))  # (B, C F')
        return F.normalize(self.embedding(pooled), dim=1)


def _var_mean_over_bins(feats: Tensor) -> tuple[Tensor, Tensor]:
    """(B, T, F) -> population variance and mean over F, each (B, T, 1)."""
    mean = feats.mean(dim=-1, keepdim=True)
    return (feats - mean).square().mean(dim=-1, keepdim=True), mean


@register_model
def deep_speaker(
    *,
    feat_dim: int = 64,
    channels: Sequence[int] = (64, 128, 256, 512),
    blocks_per_stage: int = 3,
    embed_dim: int = 512,
    eps: float = 1e-5,
) -> DeepSpeakerResCnn:
    """Deep Speaker ResCNN with every argument open (the paper's model by default)."""
    return DeepSpeakerResCnn(
        feat_dim=feat_dim,
        channels=channels,
        blocks_per_stage=blocks_per_stage,
        embed_dim=embed_dim,
        eps=eps,
    )


@register_model
def deep_speaker_rescnn(*, feat_dim: int = 64, embed_dim: int = 512) -> DeepSpeakerResCnn:
    """The paper's ResCNN: channels 64-512, 3 residual blocks a stage, 24,165,568 parameters."""
    return DeepSpeakerResCnn(feat_dim=feat_dim, embed_dim=embed_dim)


@register_model
def deep_speaker_small(*, feat_dim: int = 64, embed_dim: int = 128) -> DeepSpeakerResCnn:
    """Channels 8, 16, 32, 2 residual blocks a stage: 98,040 parameters, for ~100 speakers."""
    return DeepSpeakerResCnn(
        feat_dim=feat_dim, embed_dim=embed_dim, channels=(8, 16, 32), blocks_per_stage=2
    )
