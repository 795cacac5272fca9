"""Additive noise: the MUSAN layout, the bank, SNR over valid samples, padding, determinism."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from speakerprint.augment import (
    AdditiveNoise,
    AugmentConfig,
    AugmentDataError,
    NoiseBank,
    add_noise,
    build_augmentation,
    find_musan,
)
from tests.augment.conftest import SAMPLE_RATE, padded_batch, snr_db


def test_find_musan_reads_the_layout_from_the_folder_or_its_parent(musan_root):
    for folder in (musan_root, musan_root.parent):
        found = find_musan(folder)
        assert {k: len(v) for k, v in found.items()} == {"noise": 2, "music": 2, "speech": 4}
    assert all(p.suffix == ".wav" for files in found.values() for p in files)


def test_a_folder_without_the_layout_is_an_error_naming_it(tmp_path):
    with pytest.raises(AugmentDataError, match=str(tmp_path)):
        find_musan(tmp_path)
    with pytest.raises(AugmentDataError, match="no such folder"):
        find_musan(tmp_path / "missing")


def test_bank_keeps_one_segment_per_file_in_float16(musan_root):
    bank = NoiseBank.from_folder(musan_root, SAMPLE_RATE, segment_s=1.0, seed=0)
    assert bank.audio["noise"].dtype == torch.float16
    assert bank.audio["speech"].shape == (4, 8000)  # 0.5 s files, shorter than the segment
    assert bank.lengths["noise"].tolist() == [16000, 16000]  # 1.5 s and 1.0 s files, cut to 1 s
    subset = NoiseBank.from_folder(musan_root, SAMPLE_RATE, segment_s=1.0, max_files=2, seed=0)
    assert len(subset.files["speech"]) == 2
    assert set(subset.files["speech"]) <= set(bank.files["speech"])


@pytest.mark.parametrize("snr", [-5.0, 0.0, 7.5, 20.0])
def test_add_noise_reaches_the_snr_on_valid_samples_and_keeps_padding_zero(snr):
    rng = np.random.default_rng(0)
    lengths = [16000, 9000, 4000]
    wav, lengths_t = padded_batch(rng, lengths, 16000)
    # noise that is loud in the padding: it must count neither in the SNR nor in the output
    noise = torch.from_numpy(rng.standard_normal((3, 16000)).astype(np.float32))
    noise[:, 9000:] *= 100
    noisy = add_noise(wav, lengths_t, noise, torch.full((3,), snr))
    for b, n in enumerate(lengths):
        assert abs(snr_db(wav[b], noisy[b], n) - snr) < 0.1
        assert torch.all(noisy[b, n:] == 0)


@pytest.mark.parametrize(
    "category, weights",
    [("noise", (1, 0, 0)), ("music", (0, 1, 0)), ("babble", (0, 0, 1))],
)
def test_each_category_mixes_at_its_configured_snr(musan_root, category, weights):
    config = AugmentConfig(
        noise_dir=str(musan_root),
        noise_prob=1.0,
        noise_weight=weights[0],
        music_weight=weights[1],
        babble_weight=weights[2],
        **{f"{category}_snr_db_min": 6.0, f"{category}_snr_db_max": 6.0},
    )
    aug = build_augmentation(config, SAMPLE_RATE)
    lengths = [16000, 12000, 5000, 800]
    wav, lengths_t = padded_batch(np.random.default_rng(1), lengths, 16000)
    out, out_lengths, labels = aug.waveform(
        wav, lengths_t, torch.arange(4), torch.Generator().manual_seed(0)
    )
    assert out.dtype == torch.float32 and torch.equal(out_lengths, lengths_t)
    for b, n in enumerate(lengths):
        assert abs(snr_db(wav[b], out[b], n) - 6.0) < 0.1
        assert torch.all(out[b, n:] == 0)


def test_snrs_are_drawn_inside_each_range(musan_root):
    config = AugmentConfig(noise_dir=str(musan_root), noise_prob=1.0)
    aug = build_augmentation(config, SAMPLE_RATE)
    wav, lengths = padded_batch(np.random.default_rng(2), [16000] * 8, 16000)
    out, _, _ = aug.waveform(wav, lengths, torch.zeros(8), torch.Generator().manual_seed(3))
    snrs = [snr_db(wav[b], out[b], 16000) for b in range(8)]
    # the union of the three ranges: noise 0-15, music 5-15, babble 13-20
    assert all(-0.1 < s < 20.1 for s in snrs)
    assert len({round(s, 3) for s in snrs}) == 8  # a new SNR for every utterance


def test_probability_leaves_other_rows_untouched_and_seed_fixes_the_output(musan_root):
    config = AugmentConfig(noise_dir=str(musan_root), noise_prob=0.5)
    aug = build_augmentation(config, SAMPLE_RATE)
    wav, lengths = padded_batch(np.random.default_rng(3), [16000] * 16, 16000)
    labels = torch.arange(16)
    a, _, _ = aug.waveform(wav, lengths, labels, torch.Generator().manual_seed(7))
    b, _, _ = aug.waveform(wav, lengths, labels, torch.Generator().manual_seed(7))
    c, _, _ = aug.waveform(wav, lengths, labels, torch.Generator().manual_seed(8))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    changed = [not torch.equal(a[i], wav[i]) for i in range(16)]
    assert 0 < sum(changed) < 16


@pytest.mark.parametrize("speakers", [1, 3])
def test_babble_sums_the_configured_number_of_speech_files(speakers):
    # ten "talkers", each a pure tone a whole number of periods long, so any crop of one is a
    # tone at its frequency: the babble's spectrum shows which files were summed
    t = torch.arange(8000) / SAMPLE_RATE
    tones = torch.stack([torch.sin(2 * torch.pi * (500 + 250 * i) * t) for i in range(10)])
    bank = NoiseBank(
        audio={"speech": tones.half()},
        lengths={"speech": torch.full((10,), 8000)},
        files={"speech": []},
        sample_rate=SAMPLE_RATE,
    )
    config = AugmentConfig(
        noise_dir="unused",
        noise_prob=1.0,
        babble_speakers_min=speakers,
        babble_speakers_max=speakers,
    )
    noise_fn = AdditiveNoise(bank, config)
    wav = torch.full((32, 8000), 0.1)
    out = noise_fn(wav, torch.full((32,), 8000), torch.Generator().manual_seed(0))
    spectrum = torch.fft.rfft((out - wav).double()).abs()
    tones_per_row = (spectrum > 0.1 * spectrum.amax(dim=1, keepdim=True)).sum(dim=1)
    assert tones_per_row.tolist() == [speakers] * 32  # distinct talkers in every row
