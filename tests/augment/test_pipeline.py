"""The pipeline: built from the config, no-op when off, deterministic, float32 on CPU; the
``augment:`` section of the experiment config."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from speakerprint.augment import AugmentConfig, build_augmentation, build_codec
from speakerprint.errors import ConfigError
from speakerprint.features import Fbank
from speakerprint.train.config import ExperimentConfig, load_config, save_config
from tests.augment.conftest import SAMPLE_RATE, padded_batch


def full_config(musan_root, rirs_root) -> AugmentConfig:
    return AugmentConfig(
        noise_dir=str(musan_root),
        noise_prob=0.7,
        rir_dir=str(rirs_root),
        reverb_prob=0.5,
        speed_perturb=True,
        specaugment_prob=0.8,
    )


def test_everything_off_returns_the_inputs_themselves():
    aug = build_augmentation(AugmentConfig(), SAMPLE_RATE, num_speakers=7)
    assert not aug.enabled and aug.num_classes == 7 and repr(aug) == "Augmentation(off)"
    wav, lengths, labels = torch.randn(2, 100), torch.tensor([100, 50]), torch.tensor([0, 1])
    out = aug.waveform(wav, lengths, labels)
    assert out[0] is wav and out[1] is lengths and out[2] is labels


def test_full_pipeline_on_cpu_float32(musan_root, rirs_root):
    aug = build_augmentation(full_config(musan_root, rirs_root), SAMPLE_RATE, num_speakers=10)
    assert aug.num_classes == 30
    wav, lengths = padded_batch(np.random.default_rng(0), [16000, 16000, 12000, 6000] * 4, 16000)
    labels = torch.arange(16) % 10

    def run(seed):
        g = torch.Generator().manual_seed(seed)
        w, n, y = aug.waveform(wav, lengths, labels, g)
        feats, frames = Fbank().eval()(w, n)
        return w, n, y, aug.features(feats, frames, g), frames

    a, b, c = run(0), run(0), run(1)
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert not torch.equal(a[0], c[0])
    w, n, y, feats, frames = a
    assert w.dtype == torch.float32 and feats.dtype == torch.float32 and w.shape == wav.shape
    assert torch.isfinite(w).all() and torch.isfinite(feats).all()
    assert torch.all(n <= wav.shape[1]) and torch.all(y < 30) and torch.equal(y % 10, labels)
    for row in range(16):
        assert torch.all(w[row, int(n[row]) :] == 0)
        assert torch.all(feats[row, int(frames[row]) :] == 0)


def test_speed_perturbation_needs_the_number_of_speakers():
    with pytest.raises(ConfigError, match="num_speakers"):
        build_augmentation(AugmentConfig(speed_perturb=True), SAMPLE_RATE)


def test_a_generator_on_another_device_is_refused():
    aug = build_augmentation(AugmentConfig(specaugment_prob=1.0), SAMPLE_RATE)

    class FakeCuda:
        device = torch.device("cuda")

    with pytest.raises(ValueError, match="CPU torch.Generator"):
        aug.features(torch.zeros(1, 10, 4), torch.tensor([10]), FakeCuda())


def test_config_section_round_trips_through_yaml(tmp_path, musan_root):
    cfg = load_config(
        None,
        [
            f"augment.noise_dir={musan_root}",
            "augment.noise_prob=0.6",
            "augment.babble_snr_db_min=10",
            "augment.speed_perturb=true",
            "augment.codec=opus",
        ],
    )
    assert cfg.augment.babble_snr_db_min == 10.0 and cfg.augment.speed_perturb is True
    save_config(cfg, tmp_path / "c.yaml")
    assert load_config(tmp_path / "c.yaml") == cfg
    assert ExperimentConfig().augment == AugmentConfig()  # off unless set


@pytest.mark.parametrize(
    "override, message",
    [
        ("augment.noise_prob=0.5", "noise_dir"),
        ("augment.reverb_prob=0.5", "rir_dir or simulate_rooms"),
        ("augment.noise_prob=1.5", "noise_prob must be in"),
        ("augment.music_snr_db_min=20", "music_snr_db_min <= music_snr_db_max"),
        ("augment.codec=mp3", "augment.codec"),
        ("augment.codecs=[opus, fax]", r"augment.codecs\[1\]"),
        ("augment.codecs=opus", "augment.codecs: expected a list"),
        ("augment.codecs=[mulaw, opus, mulaw]", "codecs lists mulaw more than once"),
        ("augment.speed=1.1", "unknown config key"),
    ],
)
def test_bad_augment_settings_are_config_errors(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(None, [override])


def test_codecs_list_round_trips_and_is_built(tmp_path):
    cfg = load_config(
        None, ["augment.codec_prob=0.5", "augment.codecs=[opus, telephone, mulaw, alaw, mp3]"]
    )
    assert cfg.augment.codecs == ["opus", "telephone", "mulaw", "alaw", "mp3"]
    save_config(cfg, tmp_path / "c.yaml")
    assert load_config(tmp_path / "c.yaml") == cfg
    assert build_codec(cfg.augment, 16000).codecs == ("opus", "telephone", "mulaw", "alaw", "mp3")
    with pytest.raises(ConfigError, match="codecs or codec, not both"):
        load_config(None, ["augment.codec=aac", "augment.codecs=[opus]"])
