"""Building blocks of the encoders. Every frame-level layer takes ``(x (B, C, T), mask (B, 1, T))``;
the 2-D ones in ``conv2d`` take ``(x (B, C, F, T), mask (B, 1, 1, T))``."""

from speakerprint.models.layers.conv import ConvReluBn
from speakerprint.models.layers.conv2d import (
    BasicBlock2d,
    Bottleneck2d,
    ConvBn2d,
    MaskedBatchNorm2d,
)
from speakerprint.models.layers.norm import MaskedBatchNorm1d
from speakerprint.models.layers.pooling import AttentiveStatisticsPooling
from speakerprint.models.layers.res2net import Res2Conv1d, SERes2Block
from speakerprint.models.layers.se import SqueezeExcitation1d
from speakerprint.models.layers.separable import SeparableConvBn

__all__ = [
    "AttentiveStatisticsPooling",
    "BasicBlock2d",
    "Bottleneck2d",
    "ConvBn2d",
    "ConvReluBn",
    "MaskedBatchNorm1d",
    "MaskedBatchNorm2d",
    "Res2Conv1d",
    "SERes2Block",
    "SeparableConvBn",
    "SqueezeExcitation1d",
]
