"""Learning-rate and margin schedules as pure functions of the step.

Being functions of the step alone, they need no state of their own to resume exactly.
"""

from __future__ import annotations

import math

from speakerprint.errors import ConfigError
from speakerprint.train.config import LossConfig, OptimConfig, ScheduleConfig


def learning_rate(
    step: int, *, optim: OptimConfig, schedule: ScheduleConfig, max_steps: int
) -> float:
    """Linear warm-up from ~0 to ``optim.lr`` over ``warmup_steps``, then the named schedule.

    - ``cosine``: from ``lr`` down to ``min_lr`` at ``max_steps``.
    - ``cyclic``: triangles between ``min_lr`` and ``lr`` of ``cycle_steps`` each (the cyclical
      schedule of the ECAPA-TDNN paper), starting at ``min_lr``.
    - ``constant``: ``lr``.
    - ``exponential``: geometric decay from ``lr`` to ``min_lr`` at ``max_steps`` (WeSpeaker's
      ExponentialDecrease).
    """
    base, low = optim.lr, schedule.min_lr
    if schedule.warmup_steps > 0 and step < schedule.warmup_steps:
        return base * (step + 1) / schedule.warmup_steps
    t = step - schedule.warmup_steps
    if schedule.name == "constant":
        return base
    if schedule.name == "cosine":
        span = max(max_steps - schedule.warmup_steps, 1)
        progress = min(t / span, 1.0)
        return low + 0.5 * (base - low) * (1.0 + math.cos(math.pi * progress))
    if schedule.name == "exponential":
        if not 0 < low <= base:
            raise ConfigError(
                f"schedule.name=exponential needs 0 < schedule.min_lr <= optim.lr, got "
                f"min_lr={low} and lr={base}"
            )
        span = max(max_steps - schedule.warmup_steps, 1)
        progress = min(t / span, 1.0)
        return base * (low / base) ** progress
    if schedule.name == "cyclic":
        half = max(schedule.cycle_steps // 2, 1)
        phase = (t % (2 * half)) / half  # 0..2
        return low + (base - low) * (phase if phase <= 1.0 else 2.0 - phase)
    raise ValueError(f"unknown schedule {schedule.name!r}")  # pragma: no cover (validated config)


def margin(step: int, *, loss: LossConfig) -> float:
    """The loss margin at ``step``: linear warm-up from 0 when ``margin_warmup_steps`` > 0."""
    if loss.margin_warmup_steps > 0 and step < loss.margin_warmup_steps:
        return loss.margin * step / loss.margin_warmup_steps
    return loss.margin
