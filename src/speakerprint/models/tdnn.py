"""The x-vector TDNN (Snyder, Garcia-Romero, Sell, Povey and Khudanpur, ICASSP 2018).

Layer by layer (paper, table 1), with C = ``channels`` and S = ``stats_channels``::

    feats (B, T, F) -> (B, F, T)
    frame1: context [t-2, t+2]    Conv1d k=5        + ReLU + BN -> (B, C, T)
    frame2: context {t-2, t, t+2} Conv1d k=3, dil 2 + ReLU + BN -> (B, C, T)
    frame3: context {t-3, t, t+3} Conv1d k=3, dil 3 + ReLU + BN -> (B, C, T)
    frame4: context {t}           Conv1d k=1        + ReLU + BN -> (B, C, T)
    frame5: context {t}           Conv1d k=1        + ReLU + BN -> (B, S, T)
    statistics pooling, mean and std over valid frames           -> (B, 2S)
    segment6 affine                                              -> (B, D)   the x-vector

The embedding is segment6's affine output, before its ReLU and BN, as in the paper. Segment7
(ReLU, BN, 512 x 512 affine, ReLU, BN) and the softmax exist only to train the network; here a
classifier head over the embedding (``speakerprint.losses``) takes their place, so they are not
built. ``feat_dim`` defaults to the paper's 24 filterbanks; WeSpeaker-style 80-bin features work
with ``feat_dim=80``.

Unlike Kaldi, whose convolutions are unpadded (15 frames at least), every frame layer zero-pads to
keep the length, so one frame runs (SpeechBrain's x-vector does the same). Padded frames are zero
before every layer and the statistics and BN batch statistics skip them, so padding never changes
an embedding. The standard deviation is the population one, clamped before the square root.

SpeechBrain's ``speechbrain.lobes.models.Xvector.Xvector`` (``spkrec-xvect-voxceleb``) has the same
layers and widths with three differences of layout, each an argument here (``xvector_speechbrain``
sets all three):

=================== ============================ =============================================
argument            paper (default)              SpeechBrain
=================== ============================ =============================================
``negative_slope``  0 (ReLU)                     0.01 (``torch.nn.LeakyReLU``)
``padding_mode``    ``zeros``                    ``reflect`` (its ``Conv1d`` default)
``pooling_std``     ``population``:              ``unbiased``: ``sqrt(sum / (n - 1)) + 1e-5``
                    ``sqrt(max(sum / n, 1e-7))``
=================== ============================ =============================================

Where ``unbiased`` differs from SpeechBrain, on purpose: one frame gives ``sqrt(0) + 1e-5`` (n - 1
taken as 1) where ``torch.std`` gives NaN; the variance is floored at 1e-12 before the square root
so that a constant channel has a finite gradient (a change of at most 1e-6 in that channel); and
SpeechBrain's ``StatisticsPooling`` adds uniform-ish noise in [1e-5, 9e-5] to the pooled mean on
every call, in eval mode too, which is left out (its effect on an embedding is below 1e-4 relative,
and a deterministic embedding is worth more than reproducing noise). SpeechBrain reflects at the
ends of the padded batch tensor, speakerprint at each utterance's own ends: the same for one
utterance, and independent of padding here.
"""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import Tensor, nn

from speakerprint.errors import ConfigError
from speakerprint.models.base import EncoderModule
from speakerprint.models.layers import ConvReluBn
from speakerprint.models.registry import register_model
from speakerprint.models.utils import check_int, masked_mean, masked_mean_std

# (kernel size, dilation) of frame layers 1-5: the contexts of the paper's table 1.
FRAME_CONTEXTS = ((5, 1), (3, 2), (3, 3), (1, 1), (1, 1))
POOLING_STDS = ("population", "unbiased")


class XVectorTdnn(EncoderModule):
    """x-vector TDNN: (B, T, feat_dim) filterbank frames -> (B, embed_dim) x-vectors.

    Args:
        feat_dim: F, input features per frame.
        channels: C, channels of frame layers 1-4.
        stats_channels: S, channels of frame layer 5, the pooled frame features.
        embed_dim: D, size of the x-vector (segment6).
        negative_slope: slope of the activation below 0 (0: ReLU; SpeechBrain's LeakyReLU 0.01).
        padding_mode: ``zeros`` or ``reflect`` (each utterance mirrored at its own ends).
        pooling_std: ``population`` or ``unbiased`` (SpeechBrain's; see the module docstring).

    >>> model = XVectorTdnn(channels=64, stats_channels=128, embed_dim=32).eval()
    >>> feats, lengths = torch.randn(2, 200, 24), torch.tensor([200, 150])
    >>> model(feats, lengths).shape
    torch.Size([2, 32])
    """

    family: ClassVar[str] = "xvector"

    def __init__(
        self,
        *,
        feat_dim: int = 24,
        channels: int = 512,
        stats_channels: int = 1500,
        embed_dim: int = 512,
        negative_slope: float = 0.0,
        padding_mode: str = "zeros",
        pooling_std: str = "population",
    ) -> None:
        super().__init__()
        for name, value in [
            ("feat_dim", feat_dim),
            ("channels", channels),
            ("stats_channels", stats_channels),
            ("embed_dim", embed_dim),
        ]:
            check_int(name, value)
        if isinstance(negative_slope, bool) or not isinstance(negative_slope, (int, float)):
            raise ConfigError(f"negative_slope must be a number, got {negative_slope!r}")
        if not 0.0 <= negative_slope < 1.0:
            raise ConfigError(f"negative_slope must be in [0, 1), got {negative_slope}")
        if padding_mode not in ("zeros", "reflect"):
            raise ConfigError(f"padding_mode must be 'zeros' or 'reflect', got {padding_mode!r}")
        if pooling_std not in POOLING_STDS:
            raise ConfigError(f"pooling_std must be one of {POOLING_STDS}, got {pooling_std!r}")
        self.unbiased_std = pooling_std == "unbiased"
        self.feat_dim = feat_dim
        self.embed_dim = embed_dim
        self.min_frames = 1
        self._hparams = {
            "feat_dim": feat_dim,
            "channels": channels,
            "stats_channels": stats_channels,
            "embed_dim": embed_dim,
        }
        # Layout arguments are recorded only when they differ from the paper's, so the bundles
        # saved before they existed keep their config, and with it their fingerprint.
        layout = {
            "negative_slope": float(negative_slope),
            "padding_mode": padding_mode,
            "pooling_std": pooling_std,
        }
        defaults = {"negative_slope": 0.0, "padding_mode": "zeros", "pooling_std": "population"}
        self._hparams.update({k: v for k, v in layout.items() if v != defaults[k]})
        widths = [feat_dim] + [channels] * (len(FRAME_CONTEXTS) - 1) + [stats_channels]
        self.frame_layers = nn.ModuleList(
            ConvReluBn(
                c_in,
                c_out,
                kernel_size=kernel,
                dilation=dilation,
                padding_mode=padding_mode,
                negative_slope=float(negative_slope),
            )
            for c_in, c_out, (kernel, dilation) in zip(widths[:-1], widths[1:], FRAME_CONTEXTS)
        )
        self.embedding = nn.Linear(2 * stats_channels, embed_dim)

    def forward(self, feats: Tensor, lengths: Tensor | None = None) -> Tensor:
        """feats: (B, T, F); lengths: (B,) valid frames, None for all -> x-vectors (B, D)."""
        mask = self.input_mask(feats, lengths)
        x = feats.transpose(1, 2) * mask  # (B, F, T)
        for layer in self.frame_layers:
            x = layer(x, mask)  # (B, C, T), last (B, S, T)
        if self.unbiased_std:
            mean = masked_mean(x, mask)  # (B, S)
            squares = ((x - mean.unsqueeze(-1)).square() * mask).sum(dim=-1)
            count = mask.sum(dim=-1).to(x.dtype)  # (B, 1)
            variance = squares / (count - 1).clamp(min=1)
            # + 1e-5 after the square root, as SpeechBrain's StatisticsPooling adds it.
            std = variance.clamp(min=1e-12).sqrt() + 1e-5
        else:
            mean, std = masked_mean_std(x, mask)
        return self.embedding(torch.cat([mean, std], dim=1))


@register_model
def xvector(
    *,
    feat_dim: int = 24,
    channels: int = 512,
    stats_channels: int = 1500,
    embed_dim: int = 512,
    negative_slope: float = 0.0,
    padding_mode: str = "zeros",
    pooling_std: str = "population",
) -> XVectorTdnn:
    """The x-vector TDNN of Snyder et al. 2018 (4,211,604 parameters with 24 features)."""
    return XVectorTdnn(
        feat_dim=feat_dim,
        channels=channels,
        stats_channels=stats_channels,
        embed_dim=embed_dim,
        negative_slope=negative_slope,
        padding_mode=padding_mode,
        pooling_std=pooling_std,
    )


@register_model
def xvector_speechbrain(*, feat_dim: int = 24, embed_dim: int = 512) -> XVectorTdnn:
    """SpeechBrain's x-vector (``spkrec-xvect-voxceleb``): LeakyReLU, reflect padding, unbiased
    std + 1e-5; 4,211,604 parameters with 24 features, as SpeechBrain's ``Xvector`` counts."""
    return XVectorTdnn(
        feat_dim=feat_dim,
        embed_dim=embed_dim,
        negative_slope=0.01,
        padding_mode="reflect",
        pooling_std="unbiased",
    )
