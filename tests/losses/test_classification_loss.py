"""ClassificationLoss, LossOutput and build_loss."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from speakerprint.errors import ConfigError
from speakerprint.losses import (
    LOSS_NAMES,
    AdditiveAngularMargin,
    AdditiveMargin,
    ClassificationLoss,
    CosineClassifier,
    LinearClassifier,
    LossOutput,
    build_loss,
)


def _identity_head() -> CosineClassifier:
    head = CosineClassifier(3, 3)
    with torch.no_grad():
        head.weight.copy_(torch.eye(3))
    return head


def test_accuracy_on_a_hand_made_case():
    emb = torch.tensor(
        [
            [1.0, 0.0, 0.0],  # class 0, label 0: right
            [0.0, 1.0, 0.0],  # class 1, label 2: wrong
            [0.0, 0.1, 1.0],  # class 2, label 2: right
            [1.0, 0.9, 0.0],  # class 0 by a little, label 0: right without the margin
        ]
    )
    labels = torch.tensor([0, 2, 2, 0])
    out = ClassificationLoss(_identity_head(), AdditiveAngularMargin(margin=0.5))(emb, labels)
    assert isinstance(out, LossOutput)
    # With the margin, row 3's target logit falls below class 1's; accuracy ignores the margin.
    assert out.logits[3].argmax() == 1
    assert out.accuracy.item() == pytest.approx(0.75)
    assert out.accuracy.shape == () and out.loss.shape == ()


def test_loss_is_cross_entropy_of_the_margin_logits():
    torch.manual_seed(0)
    loss_fn = ClassificationLoss(CosineClassifier(8, 5), AdditiveMargin(margin=0.2, scale=30.0))
    emb, labels = torch.randn(6, 8), torch.tensor([0, 1, 2, 3, 4, 0])
    out = loss_fn(emb, labels)
    cosine = loss_fn.head(emb)
    expected = F.cross_entropy(30.0 * (cosine - 0.2 * F.one_hot(labels, 5)), labels)
    torch.testing.assert_close(out.loss, expected)


def test_softmax_loss_uses_plain_logits():
    torch.manual_seed(0)
    head = LinearClassifier(8, 5)
    loss_fn = ClassificationLoss(head)
    emb, labels = torch.randn(6, 8), torch.tensor([0, 1, 2, 3, 4, 0])
    out = loss_fn(emb, labels)
    torch.testing.assert_close(out.logits, head(emb))
    torch.testing.assert_close(out.loss, F.cross_entropy(head(emb), labels))
    expected_accuracy = (head(emb).argmax(-1) == labels).float().mean()
    assert out.accuracy == expected_accuracy


@pytest.mark.parametrize(
    "name, head_type, margin_type",
    [
        ("aam", CosineClassifier, AdditiveAngularMargin),
        ("am", CosineClassifier, AdditiveMargin),
        ("softmax", LinearClassifier, type(None)),
    ],
)
def test_build_loss(name, head_type, margin_type):
    loss_fn = build_loss(name, embed_dim=16, num_classes=7, margin=0.3, scale=32.0)
    assert isinstance(loss_fn.head, head_type)
    assert isinstance(loss_fn.margin, margin_type)
    if loss_fn.margin is not None:
        assert loss_fn.margin.margin == 0.3 and loss_fn.margin.scale == 32.0
    out = loss_fn(torch.randn(4, 16), torch.tensor([0, 1, 2, 6]))
    assert out.logits.shape == (4, 7)
    out.loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in loss_fn.parameters())


def test_build_loss_names_are_listed():
    assert set(LOSS_NAMES) == {"aam", "am", "softmax", "triplet"}
    with pytest.raises(ConfigError) as info:
        build_loss("arcface", embed_dim=16, num_classes=7)
    for name in LOSS_NAMES:
        assert name in str(info.value)


@pytest.mark.parametrize("kwargs", [{"embed_dim": 0}, {"num_classes": 2.0}])
def test_build_loss_rejects_bad_sizes(kwargs):
    with pytest.raises(ConfigError):
        build_loss("aam", **{"embed_dim": 16, "num_classes": 7, **kwargs})


@pytest.mark.parametrize("name", LOSS_NAMES)
def test_every_loss_takes_a_scheduled_margin(name):
    """A margin schedule calls ``set_margin`` on whichever loss trains, without knowing which."""
    torch.manual_seed(0)
    loss_fn = build_loss(name, embed_dim=8, num_classes=4, margin=0.3)
    emb, labels = torch.randn(8, 8), torch.tensor([0, 0, 1, 1, 2, 2, 3, 3])
    before = loss_fn(emb, labels).loss
    loss_fn.set_margin(0.0)
    after = loss_fn(emb, labels).loss
    if name == "softmax":  # no margin: nothing changes
        assert torch.equal(before, after)
        return
    margin = loss_fn.margin if name == "triplet" else loss_fn.margin.margin
    assert margin == 0.0
    assert after < before  # a smaller margin is an easier target
    with pytest.raises(ConfigError):
        loss_fn.set_margin(-1.0)
