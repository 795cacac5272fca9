"""TitaNet (Koluguri, Park and Ginsburg, ICASSP 2022, arXiv:2110.04410).

Layer by layer, with C = ``channels``, E = ``epilog_channels``, every conv depthwise-separable
(depthwise Conv1d + pointwise Conv1d + BN, no biases)::

    feats (B, T, 80) -> (B, 80, T)
    prolog: separable conv k=3 -> C, SE, ReLU                        -> (B, C, T)
    3 mega blocks, kernels 7, 11, 15, each:                           -> (B, C, T)
        sub-blocks 1 .. R-1: separable conv, ReLU, dropout
        sub-block R:         separable conv, SE
        + residual (1x1 conv + BN of the block input), ReLU, dropout
    epilog: separable conv k=1 -> E, SE, ReLU                        -> (B, E, T)
    attentive statistics pooling, global context, 128 channels       -> (B, 2E)
    BN, Linear                                                        -> (B, 192)

Details the paper leaves out follow NVIDIA NeMo's ``titanet-large.yaml`` / ``titanet-small.yaml``
(``ConvASREncoder`` of ``JasperBlock``s and ``SpeakerDecoder`` with ``pool_mode: attention``):

* SE with global context (``se_context_size: -1``), reduction 8, once per block: on the prolog, on
  the last sub-block of each mega block (before the residual sum) and on the epilog. SE on every
  sub-block would add 6 C^2 / 4 weights (1.6M for L) and miss the paper's counts.
* E = 3072 for M and L, 1536 for S. With the 192 x 16,681 AAM head the paper trains with
  (3,202,752 weights), E = 1536 gives S 6.48M (paper 6.4M; E = 3072 would give 10.0M), and
  E = 3072 gives M 13.43M and L 25.33M (paper 13.4M, 25.3M).
* The embedding is ``Linear(BN(pooled))`` as in NeMo's decoder, with no BN after it.
* Dropout: NeMo trains with 0.1 in the mega blocks; here it is an argument, 0 by default.

* The attention's hidden 1x1 conv is followed by ReLU + BN before the tanh, as in NeMo's
  ``AttentivePoolLayer`` (``attention_norm``).

By default three small differences from NeMo remain: the squeeze-and-excitation linears carry
biases (NeMo's have none; a few thousand parameters, counted in the tests), the block BatchNorms
use eps 1e-5 (NeMo's ``JasperBlock`` 1e-3), and the pooling clamps variances at 1e-7 (NeMo's
``AttentivePoolLayer`` at 1e-10). ``se_bias=False, norm_eps=1e-3, pooling_eps=1e-10`` give NeMo's
layout exactly, as ``speakerprint.convert.nemo`` builds it for converted ``.nemo`` checkpoints.

Padded frames are zeroed before every convolution; the SE means, BN batch statistics, the pooling
statistics and the attention softmax skip them, so padding never changes an embedding, in training
mode as in eval mode (up to rounding of the batch statistics).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

import torch.nn.functional as F
from torch import Tensor, nn

from speakerprint.errors import ConfigError
from speakerprint.models.base import EncoderModule
from speakerprint.models.layers import (
    AttentiveStatisticsPooling,
    MaskedBatchNorm1d,
    SeparableConvBn,
    SqueezeExcitation1d,
)
from speakerprint.models.registry import register_model
from speakerprint.models.utils import check_int


class TitaNetBlock(nn.Module):
    """``repeat`` separable sub-blocks, SE on the last, optional 1x1 conv + BN residual, ReLU.

    >>> import torch
    >>> block = TitaNetBlock(256, 256, kernel_size=7, repeat=3, se_reduction=8, residual=True)
    >>> x, mask = torch.randn(2, 256, 50), torch.ones(2, 1, 50, dtype=torch.bool)
    >>> block(x, mask).shape
    torch.Size([2, 256, 50])
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        *,
        kernel_size: int,
        repeat: int,
        se_reduction: int,
        residual: bool,
        dropout: float = 0.0,
        se_bias: bool = True,
        norm_eps: float = 1e-5,
    ) -> None:
        super().__init__()
        self.convs = nn.ModuleList(
            SeparableConvBn(
                in_channels if i == 0 else out_channels,
                out_channels,
                kernel_size=kernel_size,
                eps=norm_eps,
            )
            for i in range(repeat)
        )
        self.se = SqueezeExcitation1d(
            out_channels, bottleneck=out_channels // se_reduction, bias=se_bias
        )
        self.residual_conv = None
        self.residual_norm = None
        if residual:
            self.residual_conv = nn.Conv1d(in_channels, out_channels, kernel_size=1, bias=False)
            self.residual_norm = MaskedBatchNorm1d(out_channels, eps=norm_eps)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        """x: (B, C_in, T); mask: (B, 1, T) bool -> (B, C_out, T), zero at padded frames."""
        y = x
        last = len(self.convs) - 1
        for i, conv in enumerate(self.convs):  # not convs[:-1]: TorchScript cannot call its items
            y = conv(y, mask)
            if i < last:
                y = self.dropout(F.relu(y))
        y = self.se(y, mask)
        if self.residual_conv is not None:
            y = y + self.residual_norm(self.residual_conv(x * mask), mask)
        return self.dropout(F.relu(y)) * mask


class TitaNet(EncoderModule):
    """TitaNet speaker encoder: (B, T, feat_dim) fbank frames -> (B, embed_dim) embeddings.

    Args:
        feat_dim: F, input features per frame.
        channels: C, channels of the prolog and the mega blocks (256 S, 512 M, 1024 L).
        epilog_channels: E, channels of the epilog, the pooled frame features.
        embed_dim: D, size of the embedding.
        kernel_sizes: one mega block per entry, with that (odd) kernel size.
        repeat: separable sub-blocks per mega block.
        prolog_kernel_size: kernel of the prolog's separable conv.
        se_reduction: C / bottleneck of the squeeze-and-excitation layers.
        attention_channels: bottleneck of the attentive pooling.
        attention_norm: ReLU + BatchNorm between the attention's hidden conv and its tanh (NeMo).
        dropout: after each ReLU inside the prolog, mega blocks and epilog.
        se_bias: biases in the squeeze-and-excitation linears (NeMo: none).
        norm_eps: eps of the BatchNorms of the prolog, mega blocks and epilog (NeMo: 1e-3).
        pooling_eps: clamp of the pooling variances before their square roots (NeMo: 1e-10).

    >>> import torch
    >>> model = TitaNet(channels=64, epilog_channels=192, embed_dim=32).eval()
    >>> feats, lengths = torch.randn(2, 200, 80), torch.tensor([200, 150])
    >>> model(feats, lengths).shape
    torch.Size([2, 32])
    """

    family: ClassVar[str] = "titanet"

    def __init__(
        self,
        *,
        feat_dim: int = 80,
        channels: int = 1024,
        epilog_channels: int = 3072,
        embed_dim: int = 192,
        kernel_sizes: Sequence[int] = (7, 11, 15),
        repeat: int = 3,
        prolog_kernel_size: int = 3,
        se_reduction: int = 8,
        attention_channels: int = 128,
        dropout: float = 0.0,
        attention_norm: bool = True,
        se_bias: bool = True,
        norm_eps: float = 1e-5,
        pooling_eps: float = 1e-7,
    ) -> None:
        super().__init__()
        for name, value in [
            ("feat_dim", feat_dim),
            ("channels", channels),
            ("epilog_channels", epilog_channels),
            ("embed_dim", embed_dim),
            ("repeat", repeat),
            ("prolog_kernel_size", prolog_kernel_size),
            ("se_reduction", se_reduction),
            ("attention_channels", attention_channels),
        ]:
            check_int(name, value)
        if isinstance(kernel_sizes, (str, bytes)) or not isinstance(kernel_sizes, Sequence):
            raise ConfigError(f"kernel_sizes must be a list of ints, got {kernel_sizes!r}")
        if len(kernel_sizes) == 0:
            raise ConfigError("kernel_sizes must name at least one mega block")
        kernel_sizes = tuple(check_int("kernel_sizes[]", k) for k in kernel_sizes)
        for name, kernel in [("prolog_kernel_size", prolog_kernel_size)] + [
            ("kernel_sizes[]", k) for k in kernel_sizes
        ]:
            if kernel % 2 != 1:
                raise ConfigError(f"{name} must be odd to keep the frame count, got {kernel}")
        for name, width in [("channels", channels), ("epilog_channels", epilog_channels)]:
            if width < se_reduction:
                raise ConfigError(f"{name} ({width}) must be >= se_reduction ({se_reduction})")
        for name, flag in [("attention_norm", attention_norm), ("se_bias", se_bias)]:
            if not isinstance(flag, bool):
                raise ConfigError(f"{name} must be a bool, got {flag!r}")
        for name, eps in [("norm_eps", norm_eps), ("pooling_eps", pooling_eps)]:
            if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not 0.0 < eps < 1.0:
                raise ConfigError(f"{name} must be a float in (0, 1), got {eps!r}")
        if isinstance(dropout, bool) or not isinstance(dropout, (int, float)):
            raise ConfigError(f"dropout must be a float, got {dropout!r}")
        if not 0.0 <= dropout < 1.0:
            raise ConfigError(f"dropout must be in [0, 1), got {dropout}")

        self.feat_dim = feat_dim
        self.embed_dim = embed_dim
        # Every conv keeps the length with zero padding and the std is clamped: one frame runs.
        self.min_frames = 1
        self._hparams = {
            "feat_dim": feat_dim,
            "channels": channels,
            "epilog_channels": epilog_channels,
            "embed_dim": embed_dim,
            "kernel_sizes": list(kernel_sizes),
            "repeat": repeat,
            "prolog_kernel_size": prolog_kernel_size,
            "se_reduction": se_reduction,
            "attention_channels": attention_channels,
            "dropout": float(dropout),
            "attention_norm": attention_norm,
            "se_bias": se_bias,
            "norm_eps": float(norm_eps),
            "pooling_eps": float(pooling_eps),
        }

        def block(c_in: int, c_out: int, kernel: int, repeats: int, residual: bool):
            return TitaNetBlock(
                c_in,
                c_out,
                kernel_size=kernel,
                repeat=repeats,
                se_reduction=se_reduction,
                residual=residual,
                dropout=dropout,
                se_bias=se_bias,
                norm_eps=norm_eps,
            )

        self.prolog = block(feat_dim, channels, prolog_kernel_size, 1, False)
        self.mega_blocks = nn.ModuleList(
            block(channels, channels, k, repeat, True) for k in kernel_sizes
        )
        self.epilog = block(channels, epilog_channels, 1, 1, False)
        self.pool = AttentiveStatisticsPooling(
            epilog_channels,
            attention_channels=attention_channels,
            global_context=True,
            hidden_norm=attention_norm,
            eps=pooling_eps,
        )
        self.pool_norm = nn.BatchNorm1d(self.pool.out_dim)
        self.embedding = nn.Linear(self.pool.out_dim, embed_dim)

    def _frame_features(self, feats: Tensor, lengths: Tensor | None) -> tuple[Tensor, Tensor]:
        """-> epilog output (B, E, T), zero at padded frames, and the (B, 1, T) mask."""
        mask = self.input_mask(feats, lengths)
        x = self.prolog(feats.transpose(1, 2), mask)  # (B, C, T)
        for mega_block in self.mega_blocks:
            x = mega_block(x, mask)
        return self.epilog(x, mask), mask  # (B, E, T)

    def forward(self, feats: Tensor, lengths: Tensor | None = None) -> Tensor:
        """feats: (B, T, F); lengths: (B,) valid frames, None for all -> embeddings (B, D)."""
        x, mask = self._frame_features(feats, lengths)
        return self.embedding(self.pool_norm(self.pool(x, mask)))  # (B, 2E) -> (B, D)

    def attention_weights(self, feats: Tensor, lengths: Tensor | None = None) -> Tensor:
        """The pooling attention alpha (B, E, T): per channel, sums to 1 over valid frames, 0 after."""
        x, mask = self._frame_features(feats, lengths)
        return self.pool.attention_weights(x, mask)


@register_model
def titanet(
    *,
    feat_dim: int = 80,
    channels: int = 1024,
    epilog_channels: int = 3072,
    embed_dim: int = 192,
    kernel_sizes: Sequence[int] = (7, 11, 15),
    repeat: int = 3,
    prolog_kernel_size: int = 3,
    se_reduction: int = 8,
    attention_channels: int = 128,
    dropout: float = 0.0,
    attention_norm: bool = True,
    se_bias: bool = True,
    norm_eps: float = 1e-5,
    pooling_eps: float = 1e-7,
) -> TitaNet:
    """TitaNet with every argument open (TitaNet-L by default); saved models rebuild from it."""
    return TitaNet(
        feat_dim=feat_dim,
        channels=channels,
        epilog_channels=epilog_channels,
        embed_dim=embed_dim,
        kernel_sizes=kernel_sizes,
        repeat=repeat,
        prolog_kernel_size=prolog_kernel_size,
        se_reduction=se_reduction,
        attention_channels=attention_channels,
        dropout=dropout,
        attention_norm=attention_norm,
        se_bias=se_bias,
        norm_eps=norm_eps,
        pooling_eps=pooling_eps,
    )


@register_model
def titanet_s(*, feat_dim: int = 80, embed_dim: int = 192, dropout: float = 0.0) -> TitaNet:
    """C = 256, E = 1536: 3,278,192 parameters; 6.48M with a 16,681-speaker head (paper 6.4M)."""
    return TitaNet(
        feat_dim=feat_dim, embed_dim=embed_dim, dropout=dropout, channels=256, epilog_channels=1536
    )


@register_model
def titanet_m(*, feat_dim: int = 80, embed_dim: int = 192, dropout: float = 0.0) -> TitaNet:
    """C = 512, E = 3072: 10,225,840 parameters; 13.43M with a 16,681-speaker head (paper 13.4M)."""
    return TitaNet(
        feat_dim=feat_dim, embed_dim=embed_dim, dropout=dropout, channels=512, epilog_channels=3072
    )


@register_model
def titanet_l(*, feat_dim: int = 80, embed_dim: int = 192, dropout: float = 0.0) -> TitaNet:
    """C = 1024, E = 3072: 22,130,352 parameters; 25.33M with a 16,681-speaker head (paper 25.3M)."""
    return TitaNet(
        feat_dim=feat_dim,
        embed_dim=embed_dim,
        dropout=dropout,
        channels=1024,
        epilog_channels=3072,
    )
