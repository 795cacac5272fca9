import pytest

from speakerprint.train.config import LossConfig, OptimConfig, ScheduleConfig
from speakerprint.train.schedule import learning_rate, margin


def lr(step, **kw):
    return learning_rate(
        step, optim=OptimConfig(lr=1e-3), schedule=ScheduleConfig(**kw), max_steps=100
    )


def test_warmup_rises_linearly_to_the_peak():
    values = [lr(s, name="constant", warmup_steps=10) for s in range(12)]
    assert values[0] == pytest.approx(1e-4)
    assert values[9] == pytest.approx(1e-3)
    assert all(a < b for a, b in zip(values[:9], values[1:10]))
    assert values[11] == 1e-3


def test_cosine_ends_at_min_lr_and_decreases():
    values = [lr(s, name="cosine", min_lr=1e-5) for s in range(101)]
    assert values[0] == pytest.approx(1e-3)
    assert values[100] == pytest.approx(1e-5)
    assert all(a >= b for a, b in zip(values, values[1:]))


def test_cyclic_is_a_triangle():
    values = [lr(s, name="cyclic", min_lr=1e-5, cycle_steps=20) for s in range(41)]
    assert values[0] == pytest.approx(1e-5)
    assert values[10] == pytest.approx(1e-3)
    assert values[20] == pytest.approx(1e-5)
    assert values[30] == pytest.approx(1e-3)


def test_margin_warmup():
    cfg = LossConfig(margin=0.2, margin_warmup_steps=10)
    assert margin(0, loss=cfg) == 0.0
    assert margin(5, loss=cfg) == pytest.approx(0.1)
    assert margin(10, loss=cfg) == 0.2
    assert margin(3, loss=LossConfig(margin=0.3)) == 0.3


def test_exponential_decays_by_a_constant_factor_to_min_lr():
    values = [lr(s, name="exponential", min_lr=1e-5) for s in range(101)]
    assert values[0] == pytest.approx(1e-3)
    assert values[100] == pytest.approx(1e-5)
    ratios = [b / a for a, b in zip(values, values[1:])]
    assert ratios == pytest.approx([ratios[0]] * 100)
    assert ratios[0] == pytest.approx(0.01 ** (1 / 100))


def test_exponential_needs_a_positive_floor():
    from speakerprint.errors import ConfigError

    with pytest.raises(ConfigError, match="min_lr"):
        lr(50, name="exponential", min_lr=0.0)
