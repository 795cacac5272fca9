"""The optimiser named by the config, its learning rate per step, and the fp16-only scaler."""

from typing import get_args, get_type_hints

import pytest
import torch

from speakerprint.train.config import OptimConfig, ScheduleConfig
from speakerprint.train.optim import (
    OPTIMIZERS,
    apply_learning_rate,
    build_grad_scaler,
    build_optimizer,
)
from speakerprint.train.schedule import learning_rate


def test_every_configurable_name_has_an_optimiser():
    assert set(OPTIMIZERS) == set(get_args(get_type_hints(OptimConfig)["name"]))


@pytest.mark.parametrize(
    "name, cls",
    [("adam", torch.optim.Adam), ("adamw", torch.optim.AdamW), ("sgd", torch.optim.SGD)],
)
def test_the_optimiser_takes_the_configured_settings(name, cls):
    model = torch.nn.Linear(3, 2)
    cfg = OptimConfig(name=name, lr=0.5, weight_decay=0.25, momentum=0.75)
    opt = build_optimizer(model.parameters(), cfg)
    assert type(opt) is cls
    (group,) = opt.param_groups
    assert (group["lr"], group["weight_decay"]) == (0.5, 0.25)
    assert group["params"] == list(model.parameters())
    if name == "sgd":
        assert (group["momentum"], group["nesterov"]) == (0.75, True)


def test_the_step_learning_rate_reaches_every_parameter_group():
    a, b = torch.nn.Linear(3, 2), torch.nn.Linear(2, 2)
    opt = torch.optim.Adam([{"params": a.parameters()}, {"params": b.parameters()}], lr=9.0)
    optim, schedule = OptimConfig(lr=0.1), ScheduleConfig(name="cosine", warmup_steps=4)
    for step in (0, 3, 4, 50, 100):
        lr = apply_learning_rate(opt, step, optim=optim, schedule=schedule, max_steps=100)
        assert lr == learning_rate(step, optim=optim, schedule=schedule, max_steps=100)
        assert [g["lr"] for g in opt.param_groups] == [lr, lr]
    assert lr == schedule.min_lr


def test_a_grad_scaler_only_for_fp16():
    cpu = torch.device("cpu")
    assert build_grad_scaler(None, cpu) is None
    assert build_grad_scaler(torch.bfloat16, cpu) is None
    assert isinstance(build_grad_scaler(torch.float16, cpu), torch.amp.GradScaler)
