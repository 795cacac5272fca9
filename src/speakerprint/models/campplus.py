"""CAM++ (Wang, Zheng, Chen, Cheng and Chen, Interspeech 2023, arXiv:2303.00332).

A 2-D convolutional front module over (frequency, time), then a densely connected TDNN whose layers
gate their output with context-aware masking (CAM), then statistics pooling. With the published
sizes (H = ``head_channels`` = 32, C0 = ``tdnn_channels`` = 128, growth g = 32)::

    feats (B, T, F) -> (B, 1, F, T)
    FCM: Conv2d 3x3 + BN + ReLU, 2 stages of residual blocks (frequency stride 2 in each stage's
         first block), Conv2d 3x3 with frequency stride 2 + BN + ReLU -> (B, H, F/8, T)
    reshape                                                        -> (B, H F/8, T)
    TDNN: Conv1d k=5, time stride 2 + BN + ReLU                    -> (B, C0, T/2)
    3 x (D-TDNN block of 12, 24, 16 layers, dilation 1, 2, 2;  each layer adds g channels,
         then a transit layer BN + ReLU + Conv1d k=1 halving the channels)   -> (B, 512, T/2)
    BN + ReLU, mean and unbiased std over time                    -> (B, 1024)
    Linear (no bias) + BN without affine                          -> (B, D)

A D-TDNN layer is BN + ReLU + Conv1d k=1 (to ``bottleneck_scale`` g channels) + BN + ReLU, then
CAM: a dilated Conv1d k=3 to g channels, multiplied frame by frame by a sigmoid gate computed from
the layer input's context, the utterance mean plus the mean of the ``segment_frames``-frame segment
the frame lies in (two 1x1 convs with ReLU between). Its output is concatenated to its input.

Padding: the time stride of the TDNN keeps output frame t iff ``t < ceil(lengths / 2)``; every
convolution with a time kernel reads zeros at padded frames (as at the end of a lone utterance);
the utterance mean, the segment means and the statistics skip padded frames. Segments start at
frame 0, so they fall on the same frames whether an utterance is alone or padded in a batch, and
the last one, cut short by the utterance's end, averages only its valid frames -- which is what
3D-Speaker's ``avg_pool1d(ceil_mode=True)`` does on a lone utterance. So in eval mode padding never
changes an embedding, and a lone utterance gives 3D-Speaker's embedding exactly. The one
deviation: the pooled std is ``sqrt(var + 1e-7)`` (3D-Speaker: ``sqrt(var)``, NaN on one frame).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from speakerprint.errors import ConfigError
from speakerprint.models.base import EncoderModule
from speakerprint.models.layers import MaskedBatchNorm1d, MaskedBatchNorm2d
from speakerprint.models.registry import register_model
from speakerprint.models.utils import check_int, masked_mean, masked_mean_std

__all__ = ["CamPlusPlus"]

# The head halves the frequency axis three times: once per stage and once in its last conv.
_HEAD_FREQ_REDUCTION = 8


class FreqConvBn2d(nn.Module):
    """Conv2d 3x3 or 1x1 (no bias) with stride on the frequency axis only, then masked BatchNorm.

    The time axis keeps its length, so a (B, 1, 1, T) mask holds before and after.
    """

    def __init__(
        self, in_channels: int, out_channels: int, *, kernel_size: int, freq_stride: int = 1
    ) -> None:
        super().__init__()
        self.conv = nn.Conv2d(
            in_channels,
            out_channels,
            kernel_size,
            stride=(freq_stride, 1),
            padding=kernel_size // 2,
            bias=False,
        )
        self.norm = MaskedBatchNorm2d(out_channels)

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        """x: (B, C_in, F, T); mask: (B, 1, 1, T) -> (B, C_out, F / stride, T), not zeroed."""
        return self.norm(self.conv(x * mask), mask)


class FreqResBlock2d(nn.Module):
    """ResNet basic block striding frequency only; 1x1 shortcut when the shape changes."""

    def __init__(self, in_channels: int, out_channels: int, *, freq_stride: int) -> None:
        super().__init__()
        self.conv1 = FreqConvBn2d(in_channels, out_channels, kernel_size=3, freq_stride=freq_stride)
        self.conv2 = FreqConvBn2d(out_channels, out_channels, kernel_size=3)
        self.shortcut: FreqConvBn2d | None = None
        if freq_stride != 1 or in_channels != out_channels:
            self.shortcut = FreqConvBn2d(
                in_channels, out_channels, kernel_size=1, freq_stride=freq_stride
            )

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        """x: (B, C_in, F, T); mask: (B, 1, 1, T) -> (B, C_out, F / stride, T)."""
        y = self.conv2(F.relu(self.conv1(x, mask)), mask)
        shortcut = self.shortcut
        residual = x if shortcut is None else shortcut(x, mask)
        return F.relu(y + residual)


class FcmHead(nn.Module):
    """CAM++'s front module: 2-D residual convolutions over (frequency, time), time kept.

    Frequency resolution is traded for channels so the TDNN sees local time-frequency patterns a
    1-D convolution over the mel bins alone would miss.
    """

    def __init__(self, *, channels: int, blocks: Sequence[int]) -> None:
        super().__init__()
        self.stem = FreqConvBn2d(1, channels, kernel_size=3)
        self.stages = nn.ModuleList(
            nn.ModuleList(
                FreqResBlock2d(channels, channels, freq_stride=2 if i == 0 else 1)
                for i in range(num_blocks)
            )
            for num_blocks in blocks
        )
        self.out = FreqConvBn2d(channels, channels, kernel_size=3, freq_stride=2)

    def forward(self, feats: Tensor, mask: Tensor) -> Tensor:
        """feats: (B, F, T); mask: (B, 1, T) -> (B, channels * F / 8, T), not zeroed."""
        mask2d = mask.unsqueeze(1)  # (B, 1, 1, T)
        x = F.relu(self.stem(feats.unsqueeze(1), mask2d))  # (B, H, F, T)
        for stage in self.stages:
            for block in stage:
                x = block(x, mask2d)
        x = F.relu(self.out(x, mask2d))  # (B, H, F / 8, T)
        return x.flatten(1, 2)


def segment_means(x: Tensor, mask: Tensor, segment_frames: int) -> Tensor:
    """Each frame's mean over the valid frames of its ``segment_frames``-long segment.

    Segments start at frame 0; the last one of an utterance ends at its last valid frame.

    Args:
        x: (B, C, T).
        mask: (B, 1, T) bool, True at valid frames.

    Returns:
        (B, C, T); at padded frames, the mean of their segment's valid frames (or 0).
    """
    batch, channels, frames = x.shape
    num_segments = (frames + segment_frames - 1) // segment_frames
    pad = num_segments * segment_frames - frames
    weight = mask.to(x.dtype)
    sums = F.pad(x * weight, [0, pad]).reshape(batch, channels, num_segments, segment_frames)
    counts = F.pad(weight, [0, pad]).reshape(batch, 1, num_segments, segment_frames)
    means = sums.sum(dim=-1) / counts.sum(dim=-1).clamp(min=1.0)  # (B, C, S)
    means = means.unsqueeze(-1).expand(batch, channels, num_segments, segment_frames)
    return means.reshape(batch, channels, num_segments * segment_frames)[..., :frames]


class ContextAwareMasking(nn.Module):
    """A dilated Conv1d whose output is gated by the utterance- and segment-level context.

    The gate ``sigmoid(W2 relu(W1 (mean + segment mean)))`` lets each output channel be turned
    down where the context says it carries noise rather than the speaker.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        *,
        kernel_size: int,
        dilation: int,
        reduction: int,
        segment_frames: int,
    ) -> None:
        super().__init__()
        self.segment_frames = segment_frames
        self.local = nn.Conv1d(
            in_channels,
            out_channels,
            kernel_size,
            dilation=dilation,
            padding=dilation * (kernel_size - 1) // 2,
            bias=False,
        )
        self.context_squeeze = nn.Conv1d(in_channels, in_channels // reduction, 1)
        self.context_excite = nn.Conv1d(in_channels // reduction, out_channels, 1)

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        """x: (B, C_in, T); mask: (B, 1, T) -> (B, C_out, T), not zeroed at padded frames."""
        x = x * mask
        context = masked_mean(x, mask).unsqueeze(-1) + segment_means(
            x, mask, self.segment_frames
        )  # (B, C_in, T)
        gate = torch.sigmoid(self.context_excite(F.relu(self.context_squeeze(context))))
        return self.local(x) * gate


class DenseTdnnLayer(nn.Module):
    """BN-ReLU-Conv1x1 bottleneck, BN-ReLU, then context-aware masking: ``growth`` new channels."""

    def __init__(
        self,
        in_channels: int,
        *,
        growth: int,
        bottleneck: int,
        kernel_size: int,
        dilation: int,
        reduction: int,
        segment_frames: int,
    ) -> None:
        super().__init__()
        self.norm_in = MaskedBatchNorm1d(in_channels)
        self.bottleneck = nn.Conv1d(in_channels, bottleneck, 1, bias=False)
        self.norm_mid = MaskedBatchNorm1d(bottleneck)
        self.cam = ContextAwareMasking(
            bottleneck,
            growth,
            kernel_size=kernel_size,
            dilation=dilation,
            reduction=reduction,
            segment_frames=segment_frames,
        )

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        """x: (B, C, T); mask: (B, 1, T) -> (B, growth, T)."""
        h = self.bottleneck(F.relu(self.norm_in(x, mask)))
        return self.cam(F.relu(self.norm_mid(h, mask)), mask)


class TransitLayer(nn.Module):
    """BN + ReLU + Conv1d k=1 (no bias): shrinks the channels a dense block has grown."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.norm = MaskedBatchNorm1d(in_channels)
        self.conv = nn.Conv1d(in_channels, out_channels, 1, bias=False)

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        """x: (B, C_in, T); mask: (B, 1, T) -> (B, C_out, T)."""
        return self.conv(F.relu(self.norm(x, mask)))


class DenseTdnnBlock(nn.Module):
    """Densely connected D-TDNN layers (each one's output is appended to the channels), then a
    transit layer that halves the grown channels."""

    def __init__(
        self,
        in_channels: int,
        *,
        num_layers: int,
        growth: int,
        bottleneck: int,
        kernel_size: int,
        dilation: int,
        reduction: int,
        segment_frames: int,
    ) -> None:
        super().__init__()
        self.layers = nn.ModuleList(
            DenseTdnnLayer(
                in_channels + i * growth,
                growth=growth,
                bottleneck=bottleneck,
                kernel_size=kernel_size,
                dilation=dilation,
                reduction=reduction,
                segment_frames=segment_frames,
            )
            for i in range(num_layers)
        )
        grown = in_channels + num_layers * growth
        self.out_channels = grown // 2
        self.transit = TransitLayer(grown, self.out_channels)

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        """x: (B, C, T); mask: (B, 1, T) -> (B, (C + num_layers * growth) / 2, T)."""
        for layer in self.layers:
            x = torch.cat([x, layer(x, mask)], dim=1)
        return self.transit(x, mask)


class CamPlusPlus(EncoderModule):
    """CAM++ speaker encoder: (B, T, feat_dim) fbank frames -> (B, embed_dim) embeddings.

    Args:
        feat_dim: F, mel bins per frame; a multiple of 8 (the head halves it three times).
        embed_dim: D, size of the embedding.
        head_channels: H, channels of the 2-D front module.
        head_blocks: residual blocks in each of the front module's stages.
        tdnn_channels: C0, output channels of the strided TDNN layer.
        growth_rate: g, channels each D-TDNN layer adds.
        bottleneck_scale: a D-TDNN layer's bottleneck has ``bottleneck_scale * g`` channels.
        block_layers: D-TDNN layers in each dense block.
        block_dilations: the dilation of the CAM convolutions in each dense block.
        kernel_size: the CAM convolutions' kernel (odd).
        cam_reduction: the CAM gate's hidden layer has ``bottleneck / cam_reduction`` channels.
        segment_frames: frames per CAM segment (after the TDNN's stride 2: 100 = 2 s).

    >>> model = CamPlusPlus(
    ...     tdnn_channels=16, growth_rate=8, bottleneck_scale=2, block_layers=[2, 2], embed_dim=32
    ... ).eval()
    >>> feats, lengths = torch.randn(2, 200, 80), torch.tensor([200, 150])
    >>> model(feats, lengths).shape
    torch.Size([2, 32])
    """

    family: ClassVar[str] = "campplus"

    def __init__(
        self,
        *,
        feat_dim: int = 80,
        embed_dim: int = 512,
        head_channels: int = 32,
        head_blocks: Sequence[int] = (2, 2),
        tdnn_channels: int = 128,
        growth_rate: int = 32,
        bottleneck_scale: int = 4,
        block_layers: Sequence[int] = (12, 24, 16),
        block_dilations: Sequence[int] | None = None,
        kernel_size: int = 3,
        cam_reduction: int = 2,
        segment_frames: int = 100,
    ) -> None:
        super().__init__()
        for name, value in [
            ("feat_dim", feat_dim),
            ("embed_dim", embed_dim),
            ("head_channels", head_channels),
            ("tdnn_channels", tdnn_channels),
            ("growth_rate", growth_rate),
            ("bottleneck_scale", bottleneck_scale),
            ("kernel_size", kernel_size),
            ("cam_reduction", cam_reduction),
            ("segment_frames", segment_frames),
        ]:
            check_int(name, value)
        if feat_dim % _HEAD_FREQ_REDUCTION != 0:
            raise ConfigError(f"feat_dim must be a multiple of 8, got {feat_dim}")
        if kernel_size % 2 != 1:
            raise ConfigError(f"kernel_size must be odd to keep the frame count, got {kernel_size}")
        head_blocks = _int_list("head_blocks", head_blocks)
        block_layers = _int_list("block_layers", block_layers)
        if block_dilations is None:  # 3D-Speaker's: 1 for the first block, 2 after
            block_dilations = [1] + [2] * (len(block_layers) - 1)
        block_dilations = _int_list("block_dilations", block_dilations)
        if len(block_dilations) != len(block_layers):
            raise ConfigError(
                f"block_dilations ({block_dilations}) needs one entry per dense block "
                f"({len(block_layers)})"
            )
        bottleneck = bottleneck_scale * growth_rate
        if bottleneck % cam_reduction != 0:
            raise ConfigError(
                f"the bottleneck (bottleneck_scale * growth_rate = {bottleneck}) must be "
                f"divisible by cam_reduction ({cam_reduction})"
            )

        self.feat_dim = feat_dim
        self.embed_dim = embed_dim
        # Zero-padded convolutions keep (or halve, rounding up) the length and the std is
        # clamped, so one frame runs.
        self.min_frames = 1
        self._hparams = {
            "feat_dim": feat_dim,
            "embed_dim": embed_dim,
            "head_channels": head_channels,
            "head_blocks": head_blocks,
            "tdnn_channels": tdnn_channels,
            "growth_rate": growth_rate,
            "bottleneck_scale": bottleneck_scale,
            "block_layers": block_layers,
            "block_dilations": block_dilations,
            "kernel_size": kernel_size,
            "cam_reduction": cam_reduction,
            "segment_frames": segment_frames,
        }

        self.head = FcmHead(channels=head_channels, blocks=head_blocks)
        self.tdnn = nn.Conv1d(
            head_channels * (feat_dim // _HEAD_FREQ_REDUCTION),
            tdnn_channels,
            5,
            stride=2,
            padding=2,
            bias=False,
        )
        self.tdnn_norm = MaskedBatchNorm1d(tdnn_channels)
        blocks = []
        channels = tdnn_channels
        for num_layers, dilation in zip(block_layers, block_dilations):
            blocks.append(
                DenseTdnnBlock(
                    channels,
                    num_layers=num_layers,
                    growth=growth_rate,
                    bottleneck=bottleneck,
                    kernel_size=kernel_size,
                    dilation=dilation,
                    reduction=cam_reduction,
                    segment_frames=segment_frames,
                )
            )
            channels = blocks[-1].out_channels
        self.blocks = nn.ModuleList(blocks)
        self.out_norm = MaskedBatchNorm1d(channels)
        self.embedding = nn.Linear(2 * channels, embed_dim, bias=False)
        self.embedding_norm = nn.BatchNorm1d(embed_dim, affine=False)

    def forward(self, feats: Tensor, lengths: Tensor | None = None) -> Tensor:
        """feats: (B, T, F); lengths: (B,) valid frames, None for all -> embeddings (B, D)."""
        mask = self.input_mask(feats, lengths)
        x = self.head(feats.transpose(1, 2) * mask, mask)  # (B, H F / 8, T)
        x = self.tdnn(x * mask)  # (B, C0, ceil(T / 2))
        mask = mask[..., ::2]
        x = F.relu(self.tdnn_norm(x, mask))
        for block in self.blocks:
            x = block(x, mask)
        x = F.relu(self.out_norm(x, mask))
        mean, std = masked_mean_std(x, mask, 1e-7, True)  # 3D-Speaker: no eps
        return self.embedding_norm(self.embedding(torch.cat([mean, std], dim=1)))


def _int_list(name: str, values: Sequence[int]) -> list[int]:
    if isinstance(values, (str, bytes)) or not isinstance(values, Sequence) or not values:
        raise ConfigError(f"{name} must be a non-empty list of ints, got {values!r}")
    return [check_int(f"{name}[]", v) for v in values]


@register_model
def campplus(
    *,
    feat_dim: int = 80,
    embed_dim: int = 512,
    head_channels: int = 32,
    head_blocks: Sequence[int] = (2, 2),
    tdnn_channels: int = 128,
    growth_rate: int = 32,
    bottleneck_scale: int = 4,
    block_layers: Sequence[int] = (12, 24, 16),
    block_dilations: Sequence[int] | None = None,
    kernel_size: int = 3,
    cam_reduction: int = 2,
    segment_frames: int = 100,
) -> CamPlusPlus:
    """CAM++ with every argument open; the family that saved models are rebuilt from."""
    return CamPlusPlus(
        feat_dim=feat_dim,
        embed_dim=embed_dim,
        head_channels=head_channels,
        head_blocks=head_blocks,
        tdnn_channels=tdnn_channels,
        growth_rate=growth_rate,
        bottleneck_scale=bottleneck_scale,
        block_layers=block_layers,
        block_dilations=block_dilations,
        kernel_size=kernel_size,
        cam_reduction=cam_reduction,
        segment_frames=segment_frames,
    )


@register_model
def campplus_base(*, feat_dim: int = 80, embed_dim: int = 512) -> CamPlusPlus:
    """The published CAM++ ("CAM++ Base" in 3D-Speaker's tables): 7.18M parameters at D = 512
    (``campplus_voxceleb.bin``), 6.85M at D = 192 (``campplus_cn_common.bin``, 200k speakers)."""
    return CamPlusPlus(feat_dim=feat_dim, embed_dim=embed_dim)
