"""ResNet speaker encoders over the (freq, time) fbank map, as in WeSpeaker's ResNet34 recipe.

Layer by layer, with c = ``base_channels`` and the default ``blocks`` [3, 4, 6, 3]::

    feats (B, T, F) -> (B, 1, F, T)
    Conv2d 3x3 -> c, BN, ReLU                         -> (B, c, F, T)
    stage 1: 3 BasicBlocks, c,  stride 1              -> (B, c, F, T)
    stage 2: 4 BasicBlocks, 2c, stride 2 (first block) -> (B, 2c, F/2, T/2)
    stage 3: 6 BasicBlocks, 4c, stride 2               -> (B, 4c, F/4, T/4)
    stage 4: 3 BasicBlocks, 8c, stride 2               -> (B, 8c, F/8, T/8)
    flatten channels x freq, mean and std over time    -> (B, 2 * 8c * F/8)
    Linear                                             -> (B, D)

Divisions round up (3x3 convs with zero padding 1). With c = 32, F = 80 and D = 256 this is
WeSpeaker's ``ResNet34`` with ``two_emb_layer: false`` (its VoxCeleb config): 6,634,336 parameters,
WeSpeaker's 6.63M. The two-layer option (BN, ReLU, Linear, BN after the first Linear) is not built.
The standard deviation is the population one, clamped, so that one frame works; ``unbiased_std``
gives WeSpeaker's TSTP statistics (``sqrt(unbiased var + 1e-7)``), which its converted checkpoints
need (``speakerprint.convert.wespeaker``).

``block="bottleneck"`` builds the deep variants instead: each block is 1x1 (c_i), 3x3 (c_i,
strided), 1x1 (4 c_i) (:class:`~speakerprint.models.layers.Bottleneck2d`), so stage i ends
``4 c_i`` wide and the pooled statistics are four times larger. With c = 32 and blocks
[10, 20, 64, 3] this is WeSpeaker's ``ResNet293`` (28,626,016 parameters at D = 256, F = 80),
[6, 16, 48, 3] its ``ResNet221`` and [3, 8, 36, 3] its ``ResNet152``.

Padded time steps are zeroed before every convolution, and the downsampled lengths are exact:
``ceil(lengths / 2)`` per stride-2 stage (see :mod:`speakerprint.models.layers.conv2d`). BN batch
statistics and the pooling skip padded steps, so padding never changes an embedding.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from speakerprint.errors import ConfigError
from speakerprint.models.base import EncoderModule
from speakerprint.models.layers import BasicBlock2d, Bottleneck2d, ConvBn2d
from speakerprint.models.registry import register_model
from speakerprint.models.utils import check_int, masked_mean_std


class ResNet(EncoderModule):
    """2-D ResNet speaker encoder: (B, T, feat_dim) fbank frames -> (B, embed_dim) embeddings.

    Args:
        feat_dim: F, input features per frame.
        base_channels: c, channels of stage 1; stage i has ``c * 2 ** (i - 1)``.
        blocks: blocks per stage; stages after the first halve freq and time.
        embed_dim: D, size of the embedding.
        unbiased_std: pool the std as WeSpeaker does: variance over n - 1 frames, eps added.
        block: ``"basic"`` (two 3x3 convs, ResNet18/34) or ``"bottleneck"`` (1x1, 3x3, 1x1 with
            4x expansion, ResNet50 and deeper).

    >>> model = ResNet(base_channels=8, blocks=[1, 1, 1, 1], embed_dim=32).eval()
    >>> feats, lengths = torch.randn(2, 200, 80), torch.tensor([200, 150])
    >>> model(feats, lengths).shape
    torch.Size([2, 32])
    """

    family: ClassVar[str] = "resnet"

    def __init__(
        self,
        *,
        feat_dim: int = 80,
        base_channels: int = 32,
        blocks: Sequence[int] = (3, 4, 6, 3),
        embed_dim: int = 256,
        unbiased_std: bool = False,
        block: str = "basic",
    ) -> None:
        super().__init__()
        for name, value in [
            ("feat_dim", feat_dim),
            ("base_channels", base_channels),
            ("embed_dim", embed_dim),
        ]:
            check_int(name, value)
        if isinstance(blocks, (str, bytes)) or not isinstance(blocks, Sequence):
            raise ConfigError(f"blocks must be a list of ints, got {blocks!r}")
        if len(blocks) == 0:
            raise ConfigError("blocks must name at least one stage")
        blocks = tuple(check_int("blocks[]", n) for n in blocks)
        if not isinstance(unbiased_std, bool):
            raise ConfigError(f"unbiased_std must be a bool, got {unbiased_std!r}")
        if block not in _BLOCKS:
            raise ConfigError(f"block must be one of {sorted(_BLOCKS)}, got {block!r}")

        self.feat_dim = feat_dim
        self.embed_dim = embed_dim
        # Zero-padded strided convs map T >= 1 steps to ceil(T / 2) >= 1: one frame runs.
        self.min_frames = 1
        self._hparams = {
            "feat_dim": feat_dim,
            "base_channels": base_channels,
            "blocks": list(blocks),
            "embed_dim": embed_dim,
            "unbiased_std": unbiased_std,
        }
        if block != "basic":  # saved only when it matters, so older bundles keep their configs
            self._hparams["block"] = block
        self.unbiased_std = unbiased_std

        self.stem = ConvBn2d(1, base_channels, kernel_size=3)
        stages = []
        in_channels, freq = base_channels, feat_dim
        for i, num_blocks in enumerate(blocks):
            channels, stride = base_channels * 2**i, 1 if i == 0 else 2
            stage = []
            for j in range(num_blocks):
                stage.append(_BLOCKS[block](in_channels, channels, 1 if j else stride))
                in_channels = stage[-1].out_channels
            stages.append(nn.ModuleList(stage))
            freq = -(-freq // stride)
        self.stages = nn.ModuleList(stages)
        self.stats_dim = 2 * in_channels * freq
        self.embedding = nn.Linear(self.stats_dim, embed_dim)

    def forward(self, feats: Tensor, lengths: Tensor | None = None) -> Tensor:
        """feats: (B, T, F); lengths: (B,) valid frames, None for all -> embeddings (B, D)."""
        mask = self.input_mask(feats, lengths).unsqueeze(1)  # (B, 1, 1, T)
        # Without padding (one utterance, or equal lengths) the blocks skip their masking, a
        # tenth of the time of a deep ResNet; a traced export always keeps it, for padded batches.
        padded = torch.jit.is_tracing() or not bool(mask.all())
        x = feats.transpose(1, 2).unsqueeze(1)  # (B, 1, F, T)
        x, mask = self.stem(x, mask, padded)
        x = F.relu(x)
        if padded:
            x = x * mask
        for stage in self.stages:
            for block in stage:
                x, mask = block(x, mask, padded)  # (B, C', F', T')
        # mean, std: 2 x (B, C' F')
        mean, std = masked_mean_std(x.flatten(1, 2), mask.squeeze(1), 1e-7, self.unbiased_std)
        return self.embedding(torch.cat([mean, std], dim=1))


def _basic(in_channels: int, channels: int, stride: int) -> nn.Module:
    block = BasicBlock2d(in_channels, channels, stride=stride, activation=nn.ReLU())
    block.out_channels = channels
    return block


def _bottleneck(in_channels: int, channels: int, stride: int) -> nn.Module:
    block = Bottleneck2d(in_channels, channels, stride=stride)
    block.out_channels = Bottleneck2d.expansion * channels
    return block


_BLOCKS = {"basic": _basic, "bottleneck": _bottleneck}


@register_model
def resnet(
    *,
    feat_dim: int = 80,
    base_channels: int = 32,
    blocks: Sequence[int] = (3, 4, 6, 3),
    embed_dim: int = 256,
    unbiased_std: bool = False,
    block: str = "basic",
) -> ResNet:
    """ResNet with every argument open (ResNet34 by default); saved models rebuild from it."""
    return ResNet(
        feat_dim=feat_dim,
        base_channels=base_channels,
        blocks=blocks,
        embed_dim=embed_dim,
        unbiased_std=unbiased_std,
        block=block,
    )


@register_model
def resnet34(*, feat_dim: int = 80, embed_dim: int = 256) -> ResNet:
    """BasicBlocks [3, 4, 6, 3], c = 32: 6,634,336 parameters (WeSpeaker ResNet34, 6.63M)."""
    return ResNet(feat_dim=feat_dim, embed_dim=embed_dim, base_channels=32, blocks=(3, 4, 6, 3))


# WeSpeaker's deep ResNets (wespeaker/models/resnet.py): Bottleneck blocks, c = 32, TSTP pooling.
# Its VoxCeleb tables give ResNet221 23.79M and ResNet293 28.62M; our counts below are exact.


@register_model
def resnet152(*, feat_dim: int = 80, embed_dim: int = 256) -> ResNet:
    """Bottleneck blocks [3, 8, 36, 3], c = 32: 19,814,880 parameters (WeSpeaker ResNet152)."""
    return ResNet(feat_dim=feat_dim, embed_dim=embed_dim, blocks=(3, 8, 36, 3), block="bottleneck")


@register_model
def resnet221(*, feat_dim: int = 80, embed_dim: int = 256) -> ResNet:
    """Bottleneck blocks [6, 16, 48, 3], c = 32: 23,792,224 parameters (WeSpeaker ResNet221)."""
    return ResNet(feat_dim=feat_dim, embed_dim=embed_dim, blocks=(6, 16, 48, 3), block="bottleneck")


@register_model
def resnet293(*, feat_dim: int = 80, embed_dim: int = 256) -> ResNet:
    """Bottleneck blocks [10, 20, 64, 3], c = 32: 28,626,016 parameters (WeSpeaker ResNet293)."""
    return ResNet(
        feat_dim=feat_dim, embed_dim=embed_dim, blocks=(10, 20, 64, 3), block="bottleneck"
    )
