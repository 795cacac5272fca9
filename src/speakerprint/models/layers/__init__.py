"""Building blocks of the encoders. Every frame-level layer takes ``(x (B, C, T), mask (B, 1, T))``."""

from speakerprint.models.layers.conv import ConvReluBn
from speakerprint.models.layers.norm import MaskedBatchNorm1d
from speakerprint.models.layers.pooling import AttentiveStatisticsPooling
from speakerprint.models.layers.res2net import Res2Conv1d, SERes2Block
from speakerprint.models.layers.se import SqueezeExcitation1d

__all__ = [
    "AttentiveStatisticsPooling",
    "ConvReluBn",
    "MaskedBatchNorm1d",
    "Res2Conv1d",
    "SERes2Block",
    "SqueezeExcitation1d",
]
