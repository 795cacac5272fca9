"""Speed perturbation: duration and pitch change by the speed, labels become new speakers."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.signal import resample_poly

from speakerprint.augment import SPEEDS, SpeedPerturb, resample_speed
from tests.augment.conftest import SAMPLE_RATE


def peak_frequency(x: torch.Tensor) -> float:
    """Frequency of the strongest component, refined by a parabola through the peak bin."""
    x = x.double() * torch.hann_window(len(x), dtype=torch.float64)
    spectrum = torch.fft.rfft(x).abs().log()
    k = int(spectrum.argmax())
    a, b, c = (float(v) for v in spectrum[k - 1 : k + 2])
    return (k + 0.5 * (a - c) / (a - 2 * b + c)) * SAMPLE_RATE / len(x)


@pytest.mark.parametrize("speed", [1.1, 0.9])
def test_a_sine_gets_shorter_and_higher_by_the_speed(speed):
    t = torch.arange(32000, dtype=torch.float64) / SAMPLE_RATE
    sine = torch.sin(2 * torch.pi * 1000 * t).float()[None]
    out, lengths = resample_speed(sine, torch.tensor([32000]), speed)
    expected_length = int(np.ceil(32000 / speed))
    assert out.shape == (1, expected_length) and lengths.tolist() == [expected_length]
    assert peak_frequency(out[0]) == pytest.approx(1000 * speed, abs=0.5)
    # a pass-band tone keeps its amplitude (away from the edges)
    middle = out[0, 2000:-2000]
    assert float(middle.abs().max()) == pytest.approx(1.0, abs=0.01)


def test_matches_an_independent_polyphase_resampler():
    rng = np.random.default_rng(0)
    t = np.arange(16000) / SAMPLE_RATE
    x = sum(rng.uniform(0.05, 0.2) * np.sin(2 * np.pi * f * t) for f in (180, 950, 2700, 5300))
    out, _ = resample_speed(
        torch.from_numpy(x.astype(np.float32))[None], torch.tensor([16000]), 1.1
    )
    reference = resample_poly(x, up=10, down=11)
    np.testing.assert_allclose(out[0, 500:-500].numpy(), reference[500:-500], atol=2e-3)


def test_speed_one_is_the_identity():
    x = torch.randn(2, 1000)
    out, lengths = resample_speed(x, torch.tensor([1000, 600]), 1.0)
    assert torch.equal(out[0], x[0]) and torch.equal(out[1, :600], x[1, :600])
    assert lengths.tolist() == [1000, 600] and torch.all(out[1, 600:] == 0)


def test_padded_rows_get_their_own_new_lengths_and_zero_padding():
    x = torch.randn(3, 11000)
    lengths = torch.tensor([11000, 5500, 11])
    out, new_lengths = resample_speed(x, lengths, 1.1)
    assert out.shape == (3, 10000)
    assert new_lengths.tolist() == [10000, 5000, 10]
    for b, n in enumerate(new_lengths.tolist()):
        assert torch.all(out[b, n:] == 0)
    # padding garbage does not leak in: row 1 equals row 1 resampled alone, unpadded
    alone, _ = resample_speed(x[1:2, :5500], torch.tensor([5500]), 1.1)
    assert torch.allclose(out[1, :5000], alone[0], atol=1e-6)


def test_cut_to_max_samples():
    out, lengths = resample_speed(torch.randn(1, 9000), torch.tensor([9000]), 0.9, max_samples=9000)
    assert out.shape == (1, 9000) and lengths.tolist() == [9000]


def test_perturbed_utterances_become_new_speakers():
    num_speakers = 5
    perturb = SpeedPerturb(num_speakers)
    assert perturb.num_classes == 15
    wav = torch.randn(64, 11000)
    lengths = torch.full((64,), 11000)
    labels = torch.arange(64) % num_speakers
    out, out_lengths, out_labels = perturb(wav, lengths, labels, torch.Generator().manual_seed(0))
    assert out.shape == wav.shape
    k = (out_labels - labels) // num_speakers
    assert torch.equal(out_labels % num_speakers, labels)
    assert set(k.tolist()) == {0, 1, 2}
    for i in range(64):
        speed = SPEEDS[int(k[i])]
        if speed == 1.0:
            assert torch.equal(out[i], wav[i]) and out_lengths[i] == 11000
        elif speed == 1.1:
            assert out_lengths[i] == 10000 and torch.all(out[i, 10000:] == 0)
        else:  # 0.9: longer, cut at the batch width
            assert out_lengths[i] == 11000 and not torch.equal(out[i], wav[i])
    again = perturb(wav, lengths, labels, torch.Generator().manual_seed(0))
    assert all(torch.equal(a, b) for a, b in zip((out, out_lengths, out_labels), again))
