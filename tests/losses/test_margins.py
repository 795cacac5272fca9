"""Cosine heads and margins: bounded cosines, exact margin-free limits, finite gradients, fp32."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from speakerprint.errors import ConfigError
from speakerprint.losses import (
    AdditiveAngularMargin,
    AdditiveMargin,
    ClassificationLoss,
    CosineClassifier,
)

MARGINS = [
    pytest.param(lambda m: AdditiveAngularMargin(margin=m), id="aam"),
    pytest.param(lambda m: AdditiveAngularMargin(margin=m, easy_margin=True), id="aam-easy"),
    pytest.param(lambda m: AdditiveMargin(margin=m), id="am"),
]


def _cosines(
    batch: int = 16, classes: int = 10, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    cosine = torch.rand(batch, classes, generator=generator) * 2 - 1
    cosine[0, :3] = torch.tensor([1.0, -1.0, 0.0])
    labels = torch.randint(classes, (batch,), generator=generator)
    labels[:3] = torch.tensor([0, 1, 2])  # targets exactly at cos = 1, -1 and 0
    return cosine, labels


@pytest.mark.parametrize(
    "emb_scale, weight_scale", [(1.0, 1.0), (1e15, 1.0), (1e-15, 1e15), (0.0, 1.0), (1.0, 0.0)]
)
def test_cosine_is_bounded(emb_scale, weight_scale):
    torch.manual_seed(0)
    head = CosineClassifier(8, 5)
    with torch.no_grad():
        head.weight.mul_(weight_scale)
        head.weight[1] = head.weight[0]  # an embedding equal to a weight gives cos = 1 (rounded)
    emb = torch.cat([head.weight[:2].detach(), -head.weight[:1].detach(), torch.randn(5, 8)])
    cosine = head(emb * emb_scale)
    assert cosine.dtype == torch.float32 and torch.isfinite(cosine).all()
    assert cosine.abs().max() <= 1.0


def test_aam_with_zero_margin_is_normalised_softmax_exactly():
    torch.manual_seed(0)
    head = CosineClassifier(8, 10)
    emb, labels = torch.randn(6, 8), torch.tensor([0, 1, 2, 3, 4, 5])
    cosine = head(emb)
    logits = AdditiveAngularMargin(margin=0.0, scale=30.0)(cosine, labels)
    expected = 30.0 * F.linear(F.normalize(emb), F.normalize(head.weight)).clamp(-1, 1)
    assert torch.equal(logits, 30.0 * cosine)
    torch.testing.assert_close(logits, expected)
    cos, labels = _cosines()
    assert torch.equal(AdditiveAngularMargin(margin=0.0)(cos, labels), 30.0 * cos)


@pytest.mark.parametrize("make", MARGINS)
def test_margin_lowers_target_and_keeps_the_rest(make):
    cosine, labels = _cosines()
    logits = make(0.2)(cosine, labels)
    target = F.one_hot(labels, cosine.shape[1]).bool()
    assert torch.equal(logits[~target], 30.0 * cosine[~target])
    assert (logits[target] <= 30.0 * cosine[target]).all()
    assert (logits[target][3:] < 30.0 * cosine[target][3:]).any()


def test_additive_margin_values():
    cosine, labels = _cosines()
    logits = AdditiveMargin(margin=0.35, scale=10.0)(cosine, labels)
    expected = 10.0 * (cosine - 0.35 * F.one_hot(labels, cosine.shape[1]))
    torch.testing.assert_close(logits, expected)


def test_aam_values_and_fallback():
    margin, scale = 0.3, 10.0
    theta = torch.linspace(0, math.pi, 2001, dtype=torch.float64)
    cosine = theta.cos().float().unsqueeze(1)  # one class, always the target
    labels = torch.zeros(len(theta), dtype=torch.long)
    target = AdditiveAngularMargin(margin=margin, scale=scale)(cosine, labels)[:, 0] / scale

    inside = theta < math.pi - margin - 1e-3
    clamp_error = math.sin(margin) * 1e-3  # from sin^2 clamped at 1e-6, largest at theta = 0
    expected_inside = (theta[inside] + margin).cos().float()
    torch.testing.assert_close(target[inside], expected_inside, atol=clamp_error + 1e-6, rtol=0)
    beyond = theta > math.pi - margin + 1e-3
    expected = cosine[beyond, 0] - margin * math.sin(margin)
    torch.testing.assert_close(target[beyond], expected)
    assert (target.diff() <= 1e-6).all(), "the target logit must not rise as theta grows"


def test_easy_margin_only_where_cosine_is_positive():
    cosine = torch.tensor([[0.5], [-0.5]])
    labels = torch.zeros(2, dtype=torch.long)
    logits = AdditiveAngularMargin(margin=0.2, scale=1.0, easy_margin=True)(cosine, labels)
    torch.testing.assert_close(logits[0, 0], torch.tensor(math.cos(math.acos(0.5) + 0.2)))
    assert logits[1, 0] == -0.5


@pytest.mark.parametrize("make", MARGINS)
@pytest.mark.parametrize("sign", [1.0, -1.0], ids=["cos=1", "cos=-1"])
def test_gradients_finite_at_extreme_cosines(make, sign):
    torch.manual_seed(0)
    loss_fn = ClassificationLoss(CosineClassifier(8, 4), make(0.2))
    emb = (sign * loss_fn.head.weight[:3].detach().clone()).requires_grad_()
    labels = torch.tensor([0, 1, 2])
    assert (loss_fn.head(emb).diagonal() * sign >= 1 - 1e-6).all()
    out = loss_fn(emb, labels)
    out.loss.backward()
    assert torch.isfinite(out.logits).all() and torch.isfinite(out.loss)
    assert torch.isfinite(emb.grad).all()
    assert torch.isfinite(loss_fn.head.weight.grad).all()


def test_clamped_sin_at_exact_unit_cosine():
    cosine = torch.tensor([[1.0, 0.0], [-1.0, 0.0]], requires_grad=True)
    logits = AdditiveAngularMargin(margin=0.2)(cosine, torch.tensor([0, 0]))
    logits.sum().backward()
    assert torch.isfinite(logits).all() and torch.isfinite(cosine.grad).all()
    assert abs(logits[0, 0].item() - 30.0 * math.cos(0.2)) < 30.0 * math.sin(0.2) * 1e-3 + 1e-5


@pytest.mark.parametrize("make", MARGINS)
def test_fp32_under_bf16_autocast(make):
    torch.manual_seed(0)
    encoder = torch.nn.Linear(8, 8)
    loss_fn = ClassificationLoss(CosineClassifier(8, 4), make(0.2))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        emb = encoder(torch.randn(5, 8))
        assert emb.dtype == torch.bfloat16
        cosine = loss_fn.head(emb)
        out = loss_fn(emb, torch.tensor([0, 1, 2, 3, 0]))
    assert cosine.dtype == torch.float32
    assert out.logits.dtype == torch.float32 and out.loss.dtype == torch.float32
    out.loss.backward()
    assert torch.isfinite(encoder.weight.grad).all()


@pytest.mark.parametrize("make", MARGINS)
def test_set_margin_changes_the_output(make):
    cosine, labels = _cosines()
    margin = make(0.2)
    before = margin(cosine, labels)
    margin.set_margin(0.1)
    assert margin.margin == 0.1
    after = margin(cosine, labels)
    assert not torch.equal(before, after)
    torch.testing.assert_close(after, make(0.1)(cosine, labels))


@pytest.mark.parametrize("cls", [AdditiveAngularMargin, AdditiveMargin])
def test_invalid_margin_or_scale(cls):
    with pytest.raises(ConfigError):
        cls(margin=-0.1)
    with pytest.raises(ConfigError):
        cls(scale=0.0)
    with pytest.raises(ConfigError):
        cls(margin=0.2).set_margin("0.3")


def test_angular_margin_above_half_pi_is_rejected():
    with pytest.raises(ConfigError, match="pi/2"):
        AdditiveAngularMargin(margin=2.0)
