"""Building blocks: masks, masked statistics, masked batch norm, pooling."""

from __future__ import annotations

import pytest
import torch

from speakerprint.models import lengths_to_mask
from speakerprint.models.layers import (
    AttentiveStatisticsPooling,
    MaskedBatchNorm1d,
    MaskedBatchNorm2d,
)
from speakerprint.models.utils import masked_mean_std


def test_lengths_to_mask():
    mask = lengths_to_mask(torch.tensor([0, 2, 4]), 4)
    expected = torch.tensor(
        [[False, False, False, False], [True, True, False, False], [True, True, True, True]]
    )
    assert mask.dtype == torch.bool and torch.equal(mask, expected)


def test_masked_mean_std_matches_the_valid_frames():
    x = torch.randn(2, 3, 10)
    mask = lengths_to_mask(torch.tensor([10, 4]), 10).unsqueeze(1)
    mean, std = masked_mean_std(x, mask)
    torch.testing.assert_close(mean[1], x[1, :, :4].mean(-1))
    torch.testing.assert_close(std[1], x[1, :, :4].std(-1, unbiased=False))
    torch.testing.assert_close(std[0], x[0].std(-1, unbiased=False))


def test_masked_mean_std_of_one_frame_is_finite():
    x = torch.randn(1, 3, 1, requires_grad=True)
    mean, std = masked_mean_std(x, torch.ones(1, 1, 1, dtype=torch.bool))
    (mean.sum() + std.sum()).backward()
    assert torch.isfinite(x.grad).all()


@pytest.mark.parametrize("momentum", [0.1, None])
def test_masked_batch_norm_equals_batch_norm_over_valid_frames(momentum):
    torch.manual_seed(0)
    lengths = [7, 3]
    x = torch.randn(2, 4, 7)
    mask = lengths_to_mask(torch.tensor(lengths), 7).unsqueeze(1)
    masked = MaskedBatchNorm1d(4, momentum=momentum)
    reference = torch.nn.BatchNorm1d(4, momentum=momentum)
    with torch.no_grad():
        masked.weight.uniform_(0.5, 1.5)
        masked.bias.uniform_(-1, 1)
    reference.load_state_dict(masked.state_dict())

    for _ in range(2):  # twice, so the momentum=None running average is exercised
        out = masked(x * mask, mask)
        valid = torch.cat([x[b, :, :n] for b, n in enumerate(lengths)], dim=-1).unsqueeze(0)
        expected = reference(valid)
    torch.testing.assert_close(out[0, :, :7], expected[0, :, :7])
    torch.testing.assert_close(out[1, :, :3], expected[0, :, 7:])
    for name in ["running_mean", "running_var", "num_batches_tracked"]:
        torch.testing.assert_close(getattr(masked, name), getattr(reference, name), msg=name)

    masked.eval()
    reference.eval()
    torch.testing.assert_close(masked(x, mask), reference(x))


@pytest.mark.parametrize("momentum", [0.1, None])
@pytest.mark.parametrize("track_running_stats", [True, False])
def test_masked_batch_norm_without_mask_is_batch_norm(momentum, track_running_stats):
    """With no mask the layer is nn.BatchNorm1d (which it re-implements for TorchScript)."""
    torch.manual_seed(0)
    kwargs = {"momentum": momentum, "track_running_stats": track_running_stats}
    masked, reference = MaskedBatchNorm1d(4, **kwargs), torch.nn.BatchNorm1d(4, **kwargs)
    with torch.no_grad():
        masked.weight.uniform_(0.5, 1.5)
        masked.bias.uniform_(-1, 1)
    reference.load_state_dict(masked.state_dict())
    x = torch.randn(3, 4, 5)
    for training in (True, True, False):
        masked.train(training)
        reference.train(training)
        assert torch.equal(masked(x), reference(x))
        assert torch.equal(masked(x[0].T), reference(x[0].T))  # (N, C) input too
    for name, value in reference.state_dict().items():
        assert torch.equal(masked.state_dict()[name], value), name


@pytest.mark.filterwarnings("ignore:`torch.jit.*` is deprecated:DeprecationWarning")
@pytest.mark.parametrize("affine", [True, False])
@pytest.mark.parametrize("track_running_stats", [True, False])
def test_masked_batch_norm_scripts(affine, track_running_stats):
    """Scripted, both layers give the eager outputs and running statistics, in both modes."""
    valid = lengths_to_mask(torch.tensor([7, 3]), 7)
    for cls, x, mask in [
        (MaskedBatchNorm1d, torch.randn(2, 4, 7), valid.unsqueeze(1)),
        (MaskedBatchNorm2d, torch.randn(2, 4, 3, 7), valid[:, None, None, :]),
    ]:
        kwargs = {"affine": affine, "track_running_stats": track_running_stats}
        eager, scripted = cls(4, **kwargs), torch.jit.script(cls(4, **kwargs))
        for training in (True, False):
            eager.train(training)
            scripted.train(training)
            for m in (mask, None):
                assert torch.equal(scripted(x, m), eager(x, m))
        for name, value in eager.state_dict().items():
            assert torch.equal(scripted.state_dict()[name], value), name


def test_global_context_attention_equals_explicit_concatenation():
    """The split-weight shortcut equals the paper's [h; mean; std] concatenation on every frame."""
    torch.manual_seed(0)
    pool = AttentiveStatisticsPooling(6, attention_channels=4, global_context=True)
    x = torch.randn(2, 6, 9)
    mask = lengths_to_mask(torch.tensor([9, 5]), 9).unsqueeze(1)
    x = x * mask
    mean, std = masked_mean_std(x, mask)
    context = torch.cat([x, mean[..., None].expand_as(x), std[..., None].expand_as(x)], dim=1)
    scores = pool.attention_out(torch.tanh(pool.attention_hidden(context)))
    expected = torch.softmax(scores.masked_fill(~mask, float("-inf")), dim=-1)
    torch.testing.assert_close(pool.attention_weights(x, mask), expected)
