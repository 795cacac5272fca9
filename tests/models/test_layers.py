"""Building blocks: masks, masked statistics, masked batch norm, pooling."""

from __future__ import annotations

import pytest
import torch

from speakerprint.models import create_model, lengths_to_mask
from speakerprint.models.layers import (
    AttentiveStatisticsPooling,
    MaskedBatchNorm1d,
    MaskedBatchNorm2d,
)
from speakerprint.models.layers.conv import reflect_pad
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


@pytest.mark.parametrize("hidden_norm", [False, True])
def test_global_context_attention_equals_explicit_concatenation(hidden_norm):
    """The split-weight shortcut equals the paper's [h; mean; std] concatenation on every frame,
    with f = tanh (WeSpeaker) and f = tanh(BN(ReLU(.))) (SpeechBrain, NeMo)."""
    torch.manual_seed(0)
    pool = AttentiveStatisticsPooling(
        6, attention_channels=4, global_context=True, hidden_norm=hidden_norm
    )
    if hidden_norm:  # running statistics far from (0, 1), so that forgetting the BN shows
        pool.attention_norm.running_mean.uniform_(-1.0, 1.0)
        pool.attention_norm.running_var.uniform_(0.2, 3.0)
        pool.attention_norm.weight.data.uniform_(0.5, 2.0)
    pool.eval()
    x = torch.randn(2, 6, 9)
    mask = lengths_to_mask(torch.tensor([9, 5]), 9).unsqueeze(1)
    x = x * mask
    mean, std = masked_mean_std(x, mask)
    context = torch.cat([x, mean[..., None].expand_as(x), std[..., None].expand_as(x)], dim=1)
    hidden = pool.attention_hidden(context)
    if hidden_norm:
        bn = pool.attention_norm
        hidden = torch.nn.functional.batch_norm(
            torch.relu(hidden), bn.running_mean, bn.running_var, bn.weight, bn.bias, eps=bn.eps
        )
    scores = pool.attention_out(torch.tanh(hidden))
    expected = torch.softmax(scores.masked_fill(~mask, float("-inf")), dim=-1)
    torch.testing.assert_close(pool.attention_weights(x, mask), expected)


def test_reflect_pad_mirrors_each_row_at_its_own_end():
    torch.manual_seed(0)
    x = torch.randn(3, 2, 10)
    lengths = torch.tensor([10, 7, 4])
    mask = lengths_to_mask(lengths, 10).unsqueeze(1)
    padded = reflect_pad(x * mask, mask, 3)
    assert padded.shape == (3, 2, 16)
    for row, length in enumerate(lengths.tolist()):
        alone = torch.nn.functional.pad(x[row : row + 1, :, :length], (3, 3), mode="reflect")
        assert torch.equal(padded[row, :, : length + 6], alone[0])


def test_reflect_pad_mirrors_rows_too_short_for_one_reflection_again_and_again():
    x = torch.tensor([[[1.0, 2.0, 3.0, 0.0]]])  # three valid frames, padding 4: F.pad refuses
    mask = lengths_to_mask(torch.tensor([3]), 4).unsqueeze(1)
    padded = reflect_pad(x, mask, 4)
    assert padded[0, 0, :11].tolist() == [1, 2, 3, 2, 1, 2, 3, 2, 1, 2, 3]
    one = reflect_pad(
        torch.tensor([[[5.0, 0.0]]]), lengths_to_mask(torch.tensor([1]), 2)[:, None], 2
    )
    assert one[0, 0, :5].tolist() == [5.0] * 5


@pytest.mark.parametrize("padding_mode", ["zeros", "reflect"])
def test_ecapa_embeddings_do_not_depend_on_batch_padding(padding_mode):
    torch.manual_seed(0)
    model = create_model(
        "ecapa_tdnn", channels=16, mfa_channels=48, embed_dim=8, padding_mode=padding_mode
    ).eval()
    feats = torch.randn(2, 40, 80)
    lengths = torch.tensor([40, 23])
    batch = model(feats, lengths)
    alone = model(feats[1:, :23], None)
    torch.testing.assert_close(batch[1:], alone, rtol=1e-5, atol=1e-5)
    if padding_mode == "reflect":  # and reflection is not zero padding
        zeros = create_model("ecapa_tdnn", channels=16, mfa_channels=48, embed_dim=8).eval()
        zeros.load_state_dict(model.state_dict())
        assert not torch.allclose(zeros(feats[1:, :23]), alone, atol=1e-4)
