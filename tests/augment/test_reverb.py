"""Reverberation: the RIRS_NOISES layout, RIR preparation, FFT convolution, simulated rooms."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch

from speakerprint.augment import (
    AugmentConfig,
    AugmentDataError,
    RirBank,
    build_augmentation,
    find_rirs,
    reverberate,
    simulate_rirs,
)
from speakerprint.augment import reverb as reverb_module
from speakerprint.augment.reverb import prepare_rir
from tests.augment.conftest import SAMPLE_RATE, decaying_rir, padded_batch


def test_find_rirs_takes_rirs_and_leaves_noises(rirs_root):
    for folder in (rirs_root, rirs_root.parent):
        names = [p.name for p in find_rirs(folder)]
        assert names == [  # sorted by path: real_rirs..., simulated_rirs/mediumroom, smallroom
            "RVB2014_type1_rir_largeroom1_near_angla.wav",
            "Room002-00001.wav",
            "Room001-00001.wav",
        ]


def test_a_folder_without_rirs_is_an_error_naming_it(tmp_path):
    (tmp_path / "simulated_rirs").mkdir()
    with pytest.raises(AugmentDataError, match=str(tmp_path)):
        find_rirs(tmp_path)


def test_prepare_rir_starts_at_the_peak_with_unit_energy():
    rir = decaying_rir(np.random.default_rng(0), 40, 2000)
    rir[:40] = 0.01  # something before the direct path, as measured RIRs have
    out = prepare_rir(rir, max_samples=1000)
    assert out.shape == (1000,) and out.dtype == np.float32
    assert int(np.argmax(np.abs(out))) == 0
    assert np.sum(out.astype(np.float64) ** 2) == pytest.approx(1.0, abs=1e-6)
    assert prepare_rir(np.zeros(10), 10) is None


def test_bank_reads_channel_0_of_a_multichannel_rir(rirs_root):
    bank = RirBank.from_folder(rirs_root, SAMPLE_RATE, max_s=0.1)
    assert bank.rirs.shape == (3, 1600)
    real = bank.rirs[0]  # channel 1's direct path, 40 samples later, must not be in it
    assert float(real[0]) == pytest.approx(float(real.abs().max()))
    assert float(real[40].abs()) < 0.1 * float(real[0])
    assert torch.allclose(bank.rirs.double().square().sum(1), torch.ones(3, dtype=torch.float64))


def test_a_delta_rir_is_the_identity_and_padding_stays_zero():
    wav, lengths = padded_batch(np.random.default_rng(0), [16000, 7000], 16000)
    wav[1, 7000:] = 1.0  # garbage in the padding must not leak into the valid part
    delta = torch.zeros(2, 500)
    delta[:, 0] = 1.0
    out = reverberate(wav, lengths, delta)
    assert torch.allclose(out[0], wav[0], atol=1e-5)
    assert torch.allclose(out[1, :7000], wav[1, :7000], atol=1e-5)
    assert torch.all(out[1, 7000:] == 0)


def test_reverberate_matches_numpy_convolution():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((2, 3000)).astype(np.float32)
    h = np.stack([prepare_rir(decaying_rir(rng, d, 900), 800) for d in (0, 25)])
    out = reverberate(torch.from_numpy(x), torch.tensor([3000, 3000]), torch.from_numpy(h))
    for b in range(2):
        expected = np.convolve(x[b].astype(np.float64), h[b].astype(np.float64))[:3000]
        np.testing.assert_allclose(out[b].numpy(), expected, atol=1e-4)


def test_a_real_ish_rir_keeps_the_speech_aligned():
    rng = np.random.default_rng(2)
    rir = torch.from_numpy(prepare_rir(decaying_rir(rng, 120, 8000), 8000))[None]
    dry = torch.from_numpy(rng.standard_normal(16000).astype(np.float32))[None]
    wet = reverberate(dry, torch.tensor([16000]), rir)[0].double()
    lags = range(-300, 301)
    correlation = [
        float(torch.dot(dry[0, 400:15000].double(), wet[400 + k : 15000 + k])) for k in lags
    ]
    assert lags[int(np.argmax(correlation))] == 0


def test_reverb_in_the_pipeline_keeps_shape_dtype_and_padding(rirs_root):
    aug = build_augmentation(AugmentConfig(rir_dir=str(rirs_root), reverb_prob=1.0), SAMPLE_RATE)
    wav, lengths = padded_batch(np.random.default_rng(3), [16000, 9000, 3000], 16000)
    out, out_lengths, _ = aug.waveform(wav, lengths, torch.zeros(3), torch.Generator())
    assert out.dtype == torch.float32 and out.shape == wav.shape
    assert torch.equal(out_lengths, lengths)
    assert torch.all(out[1, 9000:] == 0) and torch.all(out[2, 3000:] == 0)
    assert not torch.allclose(out[0], wav[0], atol=1e-3)


def test_simulated_rooms_are_cached_by_settings(tmp_path, monkeypatch):
    calls = []

    def fake_rooms(num_rooms, sample_rate, rt60_s, seed):
        calls.append((num_rooms, rt60_s, seed))
        rng = np.random.default_rng(seed)
        return [decaying_rir(rng, 50, 2000) for _ in range(num_rooms)]

    monkeypatch.setattr(reverb_module, "_simulate_rooms", fake_rooms)
    first = simulate_rirs(3, SAMPLE_RATE, max_s=0.1, seed=5, cache_dir=tmp_path)
    again = simulate_rirs(3, SAMPLE_RATE, max_s=0.1, seed=5, cache_dir=tmp_path)
    assert len(calls) == 1  # the second call read the cache
    assert all(np.array_equal(a, b) for a, b in zip(first, again))
    assert all(len(r) == 1600 and int(np.argmax(np.abs(r))) == 0 for r in first)
    simulate_rirs(3, SAMPLE_RATE, max_s=0.1, seed=6, cache_dir=tmp_path)
    assert len(calls) == 2 and len(list(tmp_path.glob("rooms_*.npz"))) == 2


def test_pyroomacoustics_rooms(tmp_path):
    pytest.importorskip("pyroomacoustics")
    rirs = simulate_rirs(2, 8000, rt60_s=(0.15, 0.2), max_s=0.3, seed=0, cache_dir=tmp_path)
    assert len(rirs) == 2
    for rir in rirs:
        assert len(rir) <= 2400 and int(np.argmax(np.abs(rir))) == 0
        assert np.sum(rir.astype(np.float64) ** 2) == pytest.approx(1.0, abs=1e-5)
        assert np.sum(rir[1:].astype(np.float64) ** 2) > 0.01  # it has reflections


def test_pipeline_simulates_rooms_when_no_folder_is_given(tmp_path, monkeypatch):
    seen = []

    def fake_rooms(num_rooms, sample_rate, rt60_s, seed):
        seen.append((num_rooms, sample_rate, rt60_s, seed))
        return [decaying_rir(np.random.default_rng(i), 10, 800) for i in range(num_rooms)]

    monkeypatch.setattr(reverb_module, "_simulate_rooms", fake_rooms)
    config = AugmentConfig(
        reverb_prob=1.0,
        simulate_rooms=4,
        rt60_s_min=0.3,
        rt60_s_max=0.5,
        rir_cache_dir=str(tmp_path),
    )
    aug = build_augmentation(config, SAMPLE_RATE)
    assert seen == [(4, SAMPLE_RATE, (0.3, 0.5), 0)]
    assert aug.reverb.bank.rirs.shape == (4, 790)  # cut to start at the peak, sample 10
    assert len(list(tmp_path.glob("rooms_*.npz"))) == 1


def test_without_pyroomacoustics_the_error_names_the_extra(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "pyroomacoustics", None)  # makes the import fail
    with pytest.raises(ImportError, match=r"speakerprint\[sim\]"):
        simulate_rirs(1, SAMPLE_RATE, cache_dir=tmp_path)
