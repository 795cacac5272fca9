"""ERes2Net and ERes2NetV2: Res2Net-style 2-D ResNets with attentional feature fusion (3D-Speaker).

ERes2Net (Chen et al., Interspeech 2023) is a ResNet over the (freq, time) fbank map whose
bottleneck blocks split their channels into ``scale`` groups of ``width`` channels, convolved one
after another, each group adding in the previous one's output (Res2Net). Two fusions are added:

* local feature fusion (LFF): in the blocks of stage 3 onwards the previous group enters through
  attentional feature fusion (AFF) instead of a plain sum;
* global feature fusion (GFF): the output of each stage from ``global_fusion_from`` on is
  downsampled (3x3 conv, stride 2) and AFF-fused into the next stage's output; the last fusion is
  pooled. ERes2Net fuses from stage 1 (1+2, then +3, then +4); ERes2NetV2 (Chen et al.,
  Interspeech 2024) only stage 3 into stage 4, with narrower and more groups.

AFF of two maps x, y of C channels: ``a = 1 + tanh(BN(conv(SiLU(BN(conv([x; y]))))))`` with 1x1
convs through ``C / 4`` channels, and the output ``x * a + y * (2 - a)``.

Layer by layer, with c = ``base_channels``, e = ``expansion`` and the default blocks [3, 4, 6, 3]::

    feats (B, T, F) -> (B, 1, F, T)
    Conv2d 3x3 -> c, BN, ReLU                             -> (B, c, F, T)
    stage 1: 3 blocks, out e*c,  stride 1                 -> (B, e c, F, T)
    stage 2: 4 blocks, out 2e*c, stride 2 (first block)   -> (B, 2e c, F/2, T/2)
    stage 3: 6 blocks with LFF, out 4e*c, stride 2        -> (B, 4e c, F/4, T/4)
    stage 4: 3 blocks with LFF, out 8e*c, stride 2        -> (B, 8e c, F/8, T/8)
    GFF chain from stage ``global_fusion_from``           -> (B, 8e c, F/8, T/8)
    flatten channels x freq, mean and std over time       -> (B, 2 * 8e c * F/8)
    Linear                                                -> (B, D)

A block of ``planes`` p has ``width = floor(p * base_width / 64)``: a 1x1 conv (the block's stride)
to ``scale * width`` channels, the Res2Net groups (3x3 convs), a 1x1 conv to ``e * p`` channels and
the residual (a strided 1x1 conv when the shape changes). Activations inside blocks are the clipped
ReLU ``min(max(x, 0), 20)``, the stem's is a plain ReLU. The std is 3D-Speaker's TSTP one,
``sqrt(unbiased var + 1e-8)``.

Padded time steps are zeroed before every convolution wider than one step; strided layers keep
``ceil(lengths / 2)`` steps (see :mod:`speakerprint.models.layers.conv2d`); BatchNorm statistics and
the pooling skip padded steps. So padding never changes an embedding.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from speakerprint.errors import ConfigError
from speakerprint.models.base import EncoderModule
from speakerprint.models.layers import ConvBn2d, MaskedBatchNorm2d
from speakerprint.models.layers.conv2d import add_residual
from speakerprint.models.registry import register_model
from speakerprint.models.utils import check_int, masked_mean_std


def _clipped_relu(x: Tensor) -> Tensor:
    """The activation of 3D-Speaker's ResNet blocks: a Hardtanh from 0 to 20. In place when no
    gradient is recorded: every caller hands it a fresh tensor that nothing else holds."""
    if torch.is_grad_enabled():
        return torch.clamp(x, 0.0, 20.0)
    return x.clamp_(0.0, 20.0)


class AttentionalFusion2d(nn.Module):
    """Attentional feature fusion (Dai et al. 2021, local attention only) of two (B, C, F, T) maps.

    The weights ``a`` in (0, 2) come from a 1x1-conv bottleneck of ``channels // reduction``
    channels over the concatenated maps; the output ``x * a + y * (2 - a)`` is pointwise, so padded
    steps leak into nothing but BatchNorm statistics, which are masked.

    >>> fuse = AttentionalFusion2d(16)
    >>> x, y, mask = torch.randn(2, 16, 5, 7), torch.randn(2, 16, 5, 7), torch.ones(2, 1, 1, 7) > 0
    >>> fuse(x, y, mask).shape
    torch.Size([2, 16, 5, 7])
    """

    def __init__(self, channels: int, *, reduction: int = 4) -> None:
        super().__init__()
        hidden = channels // reduction
        if hidden < 1:
            raise ConfigError(
                f"attentional fusion of {channels} channels needs at least {reduction}"
            )
        self.hidden = nn.Conv2d(2 * channels, hidden, kernel_size=1)
        self.hidden_norm = MaskedBatchNorm2d(hidden)
        self.out = nn.Conv2d(hidden, channels, kernel_size=1)
        self.out_norm = MaskedBatchNorm2d(channels)

    def forward(self, x: Tensor, y: Tensor, mask: Tensor, padded: bool = True) -> Tensor:
        """x, y: (B, C, F, T); mask: (B, 1, 1, T) -> (B, C, F, T). ``padded=False``: the mask is
        all True, and the norms need none."""
        norm_mask = mask if padded else None
        hidden = F.silu(self.hidden_norm(self.hidden(torch.cat([x, y], dim=1)), norm_mask))
        weight = 1.0 + torch.tanh(self.out_norm(self.out(hidden), norm_mask))
        return x * weight + y * (2.0 - weight)


class Res2Group(nn.Module):
    """One group of a Res2Net split: combine with the previous group, then 3x3 conv, BN, clip.

    The first group has nothing to combine with; later ones add the previous group's output or,
    with ``fuse``, merge it by attentional fusion (ERes2Net's local feature fusion).
    """

    def __init__(self, width: int, *, fuse: bool) -> None:
        super().__init__()
        self.fuse = AttentionalFusion2d(width) if fuse else None
        self.conv = ConvBn2d(width, width, kernel_size=3)

    def forward(
        self, part: Tensor, previous: Tensor | None, mask: Tensor, padded: bool = True
    ) -> Tensor:
        """part, previous: (B, width, F, T); mask: (B, 1, 1, T) -> (B, width, F, T)."""
        x = part
        if previous is not None:
            fuse = self.fuse
            x = previous + part if fuse is None else fuse(previous, part, mask, padded)
        return _clipped_relu(self.conv(x, mask, padded)[0])


class ERes2NetBlock(nn.Module):
    """Res2Net bottleneck: 1x1 conv (stride), ``scale`` chained 3x3 groups, 1x1 conv, residual.

    >>> block = ERes2NetBlock(8, 16, stride=2, base_width=32, scale=2, expansion=2, fuse=True)
    >>> x, mask = torch.randn(2, 8, 20, 9), torch.ones(2, 1, 1, 9, dtype=torch.bool)
    >>> block(x, mask)[0].shape
    torch.Size([2, 32, 10, 5])
    """

    def __init__(
        self,
        in_channels: int,
        planes: int,
        *,
        stride: int,
        base_width: int,
        scale: int,
        expansion: int,
        fuse: bool,
    ) -> None:
        super().__init__()
        self.width = planes * base_width // 64
        if self.width < 1:
            raise ConfigError(
                f"base_width {base_width} gives no channel per group for a block of {planes} planes"
            )
        out_channels = expansion * planes
        self.conv_in = ConvBn2d(in_channels, self.width * scale, kernel_size=1, stride=stride)
        self.groups = nn.ModuleList(
            [Res2Group(self.width, fuse=fuse and i > 0) for i in range(scale)]
        )
        self.conv_out = ConvBn2d(self.width * scale, out_channels, kernel_size=1)
        self.shortcut = None
        if stride != 1 or in_channels != out_channels:
            self.shortcut = ConvBn2d(in_channels, out_channels, kernel_size=1, stride=stride)

    def forward(self, x: Tensor, mask: Tensor, padded: bool = True) -> tuple[Tensor, Tensor]:
        """x: (B, C_in, F, T); mask: (B, 1, 1, T) -> (B, e p, F', T') zero when padded, mask.

        ``padded=False``: no step is padded, nothing needs zeroing (see ``ConvBn2d``)."""
        y, out_mask = self.conv_in(x, mask, padded)
        parts = torch.split(_clipped_relu(y), self.width, dim=1)  # scale x (B, width, F', T')
        outputs: list[Tensor] = []
        previous: Tensor | None = None
        for i, group in enumerate(self.groups):
            previous = group(parts[i], previous, out_mask, padded)
            outputs.append(previous)
        y, _ = self.conv_out(torch.cat(outputs, dim=1), out_mask, padded)
        shortcut = self.shortcut
        residual = x if shortcut is None else shortcut(x, mask, padded)[0]
        y = _clipped_relu(add_residual(y, residual))
        return (y * out_mask if padded else y), out_mask


class GlobalFusion(nn.Module):
    """One step of global feature fusion: the chain so far, downsampled 2x, fused into a stage.

    The 3x3 stride-2 conv brings the previous (B, C_in, F, T) chain value to the stage's
    (B, C_out, ceil(F/2), ceil(T/2)) map; attentional fusion merges the two, the stage's map first.
    """

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.downsample = nn.Conv2d(
            in_channels, out_channels, kernel_size=3, stride=2, padding=1, bias=False
        )
        self.fuse = AttentionalFusion2d(out_channels)

    def forward(
        self, stage: Tensor, chain: Tensor, chain_mask: Tensor, mask: Tensor, padded: bool = True
    ) -> Tensor:
        """stage: (B, C_out, F', T'); chain: (B, C_in, F, T) and its mask (B, 1, 1, T); mask:
        (B, 1, 1, T') -> (B, C_out, F', T')."""
        if padded:
            chain = chain * chain_mask
        return self.fuse(stage, self.downsample(chain), mask, padded)


class ERes2Net(EncoderModule):
    """ERes2Net / ERes2NetV2 speaker encoder: (B, T, feat_dim) fbank -> (B, embed_dim) embeddings.

    Args:
        feat_dim: F, input features per frame.
        base_channels: c, the stem's channels; stage i has blocks of ``c * 2 ** (i - 1)`` planes.
        blocks: blocks per stage; stages after the first halve freq and time.
        embed_dim: D, size of the embedding.
        base_width: a block of p planes has groups of ``floor(p * base_width / 64)`` channels.
        scale: Res2Net groups per block.
        expansion: a block's output has ``expansion * p`` channels.
        local_fusion_from: first stage (1-based) whose blocks merge groups by AFF.
        global_fusion_from: first stage whose output enters the global fusion chain; 1 for
            ERes2Net, ``len(blocks) - 1`` for ERes2NetV2, ``len(blocks)`` for none.

    >>> model = ERes2Net(base_channels=4, blocks=[1, 1, 1, 1], embed_dim=16).eval()
    >>> feats, lengths = torch.randn(2, 30, 80), torch.tensor([30, 17])
    >>> model(feats, lengths).shape
    torch.Size([2, 16])
    """

    family: ClassVar[str] = "eres2net"

    def __init__(
        self,
        *,
        feat_dim: int = 80,
        base_channels: int = 32,
        blocks: Sequence[int] = (3, 4, 6, 3),
        embed_dim: int = 192,
        base_width: int = 32,
        scale: int = 2,
        expansion: int = 2,
        local_fusion_from: int = 3,
        global_fusion_from: int = 1,
    ) -> None:
        super().__init__()
        for name, value in [
            ("feat_dim", feat_dim),
            ("base_channels", base_channels),
            ("embed_dim", embed_dim),
            ("base_width", base_width),
            ("scale", scale),
            ("expansion", expansion),
            ("local_fusion_from", local_fusion_from),
            ("global_fusion_from", global_fusion_from),
        ]:
            check_int(name, value)
        if isinstance(blocks, (str, bytes)) or not isinstance(blocks, Sequence):
            raise ConfigError(f"blocks must be a list of ints, got {blocks!r}")
        if len(blocks) == 0:
            raise ConfigError("blocks must name at least one stage")
        blocks = tuple(check_int("blocks[]", n) for n in blocks)
        if global_fusion_from > len(blocks):
            raise ConfigError(
                f"global_fusion_from must be a stage (1..{len(blocks)}), got {global_fusion_from}"
            )

        self.feat_dim = feat_dim
        self.embed_dim = embed_dim
        # Zero-padded strided convs map T >= 1 steps to ceil(T / 2) >= 1: one frame runs.
        self.min_frames = 1
        self._hparams = {
            "feat_dim": feat_dim,
            "base_channels": base_channels,
            "blocks": list(blocks),
            "embed_dim": embed_dim,
            "base_width": base_width,
            "scale": scale,
            "expansion": expansion,
            "local_fusion_from": local_fusion_from,
            "global_fusion_from": global_fusion_from,
        }
        self.global_fusion_from = global_fusion_from

        self.stem = ConvBn2d(1, base_channels, kernel_size=3)
        stages = []
        stage_channels = []
        in_channels, freq = base_channels, feat_dim
        for i, num_blocks in enumerate(blocks):
            planes, stride = base_channels * 2**i, 1 if i == 0 else 2
            stage = []
            for j in range(num_blocks):
                block = ERes2NetBlock(
                    in_channels,
                    planes,
                    stride=stride if j == 0 else 1,
                    base_width=base_width,
                    scale=scale,
                    expansion=expansion,
                    fuse=i + 1 >= local_fusion_from,
                )
                stage.append(block)
                in_channels = expansion * planes
            stages.append(nn.ModuleList(stage))
            stage_channels.append(in_channels)
            freq = -(-freq // stride)
        self.stages = nn.ModuleList(stages)
        # Global fusion: the chain value after stage k, downsampled, fused into stage k + 1's output.
        self.fusions = nn.ModuleList(
            [
                GlobalFusion(stage_channels[k], stage_channels[k + 1])
                for k in range(global_fusion_from - 1, len(blocks) - 1)
            ]
        )
        self.stats_dim = 2 * in_channels * freq
        self.embedding = nn.Linear(self.stats_dim, embed_dim)

    def forward(self, feats: Tensor, lengths: Tensor | None = None) -> Tensor:
        """feats: (B, T, F); lengths: (B,) valid frames, None for all -> embeddings (B, D)."""
        mask = self.input_mask(feats, lengths).unsqueeze(1)  # (B, 1, 1, T)
        # Without padding the blocks skip their masking; a traced export always keeps it.
        padded = torch.jit.is_tracing() or not bool(mask.all())
        x = feats.transpose(1, 2).unsqueeze(1)  # (B, 1, F, T)
        x, mask = self.stem(x, mask, padded)
        x = F.relu(x)
        if padded:
            x = x * mask
        outputs: list[Tensor] = []
        masks: list[Tensor] = []
        for stage in self.stages:
            for block in stage:
                x, mask = block(x, mask, padded)  # (B, C', F', T')
            outputs.append(x)
            masks.append(mask)
        # The chain starts at stage global_fusion_from and ends at the last stage's output.
        first = self.global_fusion_from - 1
        fused = outputs[first]
        for k, fusion in enumerate(self.fusions):
            fused = fusion(
                outputs[first + k + 1], fused, masks[first + k], masks[first + k + 1], padded
            )
        fused_mask = masks[-1]
        # mean, std: 2 x (B, C' F')
        # 3D-Speaker's TSTP: sqrt(unbiased var + 1e-8).
        mean, std = masked_mean_std(fused.flatten(1, 2), fused_mask.squeeze(1), 1e-8, True)
        return self.embedding(torch.cat([mean, std], dim=1))


@register_model
def eres2net(
    *,
    feat_dim: int = 80,
    base_channels: int = 32,
    blocks: Sequence[int] = (3, 4, 6, 3),
    embed_dim: int = 192,
    base_width: int = 32,
    scale: int = 2,
    expansion: int = 2,
    local_fusion_from: int = 3,
    global_fusion_from: int = 1,
) -> ERes2Net:
    """ERes2Net with every argument open (ERes2Net-base by default); saved models rebuild from it."""
    return ERes2Net(
        feat_dim=feat_dim,
        base_channels=base_channels,
        blocks=blocks,
        embed_dim=embed_dim,
        base_width=base_width,
        scale=scale,
        expansion=expansion,
        local_fusion_from=local_fusion_from,
        global_fusion_from=global_fusion_from,
    )


@register_model
def eres2net_base(*, feat_dim: int = 80, embed_dim: int = 192) -> ERes2Net:
    """c = 32, groups 2 x p/2, e = 2, fusion from stage 1: 3D-Speaker's VoxCeleb ERes2Net (6.61M)."""
    return ERes2Net(feat_dim=feat_dim, embed_dim=embed_dim, base_channels=32)


@register_model
def eres2net_large(*, feat_dim: int = 80, embed_dim: int = 512) -> ERes2Net:
    """c = 64, otherwise ERes2Net-base: 3D-Speaker's ERes2Net-large, 512-d as its 3D-Speaker-dataset
    model (29.0M); with ``embed_dim=192`` the 22.46M of its VoxCeleb and CN-Celeb tables."""
    return ERes2Net(feat_dim=feat_dim, embed_dim=embed_dim, base_channels=64)


@register_model
def eres2net_huge(*, feat_dim: int = 80, embed_dim: int = 192) -> ERes2Net:
    """c = 64, groups 3 x floor(24 p / 64), e = 4: 3D-Speaker's ERes2Net_huge (200k speakers)."""
    return ERes2Net(
        feat_dim=feat_dim,
        embed_dim=embed_dim,
        base_channels=64,
        base_width=24,
        scale=3,
        expansion=4,
    )


@register_model
def eres2netv2(*, feat_dim: int = 80, embed_dim: int = 192) -> ERes2Net:
    """c = 64, groups 2 x floor(26 p / 64), e = 2, fusion of stage 3 into 4 only: ERes2NetV2."""
    return ERes2Net(
        feat_dim=feat_dim,
        embed_dim=embed_dim,
        base_channels=64,
        base_width=26,
        scale=2,
        expansion=2,
        global_fusion_from=3,
    )


@register_model
def eres2netv2_w24s4ep4(*, feat_dim: int = 80, embed_dim: int = 192) -> ERes2Net:
    """ERes2NetV2 with groups 4 x floor(24 p / 64) and e = 4 (3D-Speaker's w24s4ep4, 200k)."""
    return ERes2Net(
        feat_dim=feat_dim,
        embed_dim=embed_dim,
        base_channels=64,
        base_width=24,
        scale=4,
        expansion=4,
        global_fusion_from=3,
    )
