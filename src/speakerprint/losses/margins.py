"""Margin penalties on cosine logits: ArcFace (additive angular) and CosFace (additive)."""

from __future__ import annotations

import math
from numbers import Real

import torch
from torch import Tensor, nn

from speakerprint.errors import ConfigError
from speakerprint.utils.precision import upcast


def _check_scale(scale: float) -> float:
    if isinstance(scale, bool) or not isinstance(scale, Real) or not scale > 0:
        raise ConfigError(f"scale must be a positive number, got {scale!r}")
    return float(scale)


def _replace_target(cosine: Tensor, labels: Tensor, target: Tensor) -> Tensor:
    """Copy of cosine (B, C) with column labels[b] of row b set to target[b]."""
    return cosine.scatter(1, labels.unsqueeze(1), target.unsqueeze(1))


class AdditiveAngularMargin(nn.Module):
    """ArcFace (Deng et al. 2019): ``s cos(theta + m)`` for the target class, ``s cos(theta)`` else.

    ``cos(theta + m) = cos(theta) cos(m) - sin(theta) sin(m)``, with ``sin(theta)`` taken as
    ``sqrt(clamp(1 - cos^2, min=1e-6))``: never NaN, and the gradient stays finite at
    ``|cos| = 1``, where ``sqrt`` has an infinite slope. The clamp lowers the target logit by at most
    ``s * sin(m) * 1e-3`` when the embedding sits on its class weight.

    Past ``theta + m > pi``, ``cos(theta + m)`` would rise again and reward moving away from the
    class, so the target becomes ``cos(theta) - m sin(m)`` there (the fallback of the ArcFace
    reference code, also WeSpeaker's and SpeechBrain's): decreasing in theta, and just below
    ``cos(pi) = -1`` at the switch (by ``cos(m) + m sin(m) - 1``, about ``m^2 / 2``), so the target
    logit stays monotonic in theta. ``easy_margin`` instead applies the margin only where
    ``cos(theta) > 0``.

    Output is fp32, computed with autocast off.

    >>> margin = AdditiveAngularMargin(margin=0.2, scale=30.0)
    >>> cosine, labels = torch.rand(4, 10) * 2 - 1, torch.tensor([0, 3, 3, 9])
    >>> margin(cosine, labels).shape
    torch.Size([4, 10])
    >>> margin.set_margin(0.1)  # e.g. from a margin warm-up schedule
    """

    _SIN_SQUARED_MIN = 1e-6

    def __init__(
        self, *, margin: float = 0.2, scale: float = 30.0, easy_margin: bool = False
    ) -> None:
        super().__init__()
        self.scale = _check_scale(scale)
        self.easy_margin = easy_margin
        self.set_margin(margin)

    @property
    def margin(self) -> float:
        return self._margin

    def set_margin(self, margin: float) -> None:
        """Change the margin in radians, in [0, pi/2]; for margin schedules during training."""
        if isinstance(margin, bool) or not isinstance(margin, Real):
            raise ConfigError(f"margin must be a number, got {margin!r}")
        if not 0.0 <= margin <= math.pi / 2:
            raise ConfigError(f"an angular margin must lie in [0, pi/2] radians, got {margin}")
        self._margin = float(margin)
        self._cos_m = math.cos(margin)
        self._sin_m = math.sin(margin)
        self._threshold = math.cos(math.pi - margin)  # cos(theta) above this: theta + m <= pi
        self._fallback_shift = margin * math.sin(margin)

    def forward(self, cosine: Tensor, labels: Tensor) -> Tensor:
        """cosine: (B, C) in [-1, 1]; labels: (B,) int64 class indices -> logits (B, C), fp32."""
        with torch.autocast(device_type=cosine.device.type, enabled=False):
            cosine = upcast(cosine)
            cos = cosine.gather(1, labels.unsqueeze(1)).squeeze(1)  # (B,) target cosines
            sin = (1.0 - cos.square()).clamp(min=self._SIN_SQUARED_MIN).sqrt()
            cos_plus_m = cos * self._cos_m - sin * self._sin_m
            if self.easy_margin:
                target = torch.where(cos > 0, cos_plus_m, cos)
            else:
                target = torch.where(cos > self._threshold, cos_plus_m, cos - self._fallback_shift)
            return self.scale * _replace_target(cosine, labels, target)

    def extra_repr(self) -> str:
        return f"margin={self.margin}, scale={self.scale}, easy_margin={self.easy_margin}"


class AdditiveMargin(nn.Module):
    """AM-softmax / CosFace (Wang et al. 2018): ``s (cos(theta) - m)`` for the target class.

    Output is fp32, computed with autocast off.

    >>> margin = AdditiveMargin(margin=0.2, scale=30.0)
    >>> margin(torch.zeros(2, 3), torch.tensor([0, 2]))
    tensor([[-6.,  0.,  0.],
            [ 0.,  0., -6.]])
    """

    def __init__(self, *, margin: float = 0.2, scale: float = 30.0) -> None:
        super().__init__()
        self.scale = _check_scale(scale)
        self.set_margin(margin)

    @property
    def margin(self) -> float:
        return self._margin

    def set_margin(self, margin: float) -> None:
        """Change the margin (in cosine units, >= 0); for margin schedules during training."""
        if isinstance(margin, bool) or not isinstance(margin, Real) or not margin >= 0:
            raise ConfigError(f"margin must be a number >= 0, got {margin!r}")
        self._margin = float(margin)

    def forward(self, cosine: Tensor, labels: Tensor) -> Tensor:
        """cosine: (B, C); labels: (B,) int64 class indices -> logits (B, C), fp32."""
        with torch.autocast(device_type=cosine.device.type, enabled=False):
            cosine = upcast(cosine)
            target = cosine.gather(1, labels.unsqueeze(1)).squeeze(1) - self._margin
            return self.scale * _replace_target(cosine, labels, target)

    def extra_repr(self) -> str:
        return f"margin={self.margin}, scale={self.scale}"
