"""The optimiser, its learning-rate schedule and the fp16 grad scaler, as the config names them.

The schedule is a pure function of the step (:mod:`speakerprint.train.schedule`), applied to
the optimiser's parameter groups before each step: a resumed run needs no scheduler state.

>>> model = torch.nn.Linear(3, 2)
>>> opt = build_optimizer(model.parameters(), OptimConfig(name="sgd", lr=0.1))
>>> type(opt).__name__
'SGD'
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch

from speakerprint.train.config import OptimConfig, ScheduleConfig
from speakerprint.train.schedule import learning_rate

__all__ = ["OPTIMIZERS", "apply_learning_rate", "build_grad_scaler", "build_optimizer"]

Params = Iterable[torch.nn.Parameter]

# optim.name -> the optimiser over those parameters, as that config sets it.
OPTIMIZERS: dict[str, Callable[[Params, OptimConfig], torch.optim.Optimizer]] = {
    "adam": lambda params, o: torch.optim.Adam(params, lr=o.lr, weight_decay=o.weight_decay),
    "adamw": lambda params, o: torch.optim.AdamW(params, lr=o.lr, weight_decay=o.weight_decay),
    "sgd": lambda params, o: torch.optim.SGD(
        params, lr=o.lr, momentum=o.momentum, weight_decay=o.weight_decay, nesterov=True
    ),
}


def build_optimizer(params: Params, optim: OptimConfig) -> torch.optim.Optimizer:
    """The optimiser ``optim.name`` over ``params`` (its lr is reset at every step)."""
    return OPTIMIZERS[optim.name](params, optim)


def build_grad_scaler(
    amp_dtype: torch.dtype | None, device: torch.device
) -> torch.amp.GradScaler | None:
    """A grad scaler for fp16 autocast only; bf16 and fp32 need none."""
    return torch.amp.GradScaler(device.type) if amp_dtype == torch.float16 else None


def apply_learning_rate(
    optimizer: torch.optim.Optimizer,
    step: int,
    *,
    optim: OptimConfig,
    schedule: ScheduleConfig,
    max_steps: int,
) -> float:
    """Set every parameter group's learning rate to the schedule's value at ``step``; return it."""
    lr = learning_rate(step, optim=optim, schedule=schedule, max_steps=max_steps)
    for group in optimizer.param_groups:
        group["lr"] = lr
    return lr
