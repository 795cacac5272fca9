"""Codec simulation: Opus and AAC re-encoding keeps length and alignment, changes the audio."""

from __future__ import annotations

import numpy as np
import pytest

from speakerprint.augment import AugmentConfig, CodecAugment, build_codec, encode_decode
from speakerprint.errors import ConfigError
from tests.augment.conftest import SAMPLE_RATE, speechlike


@pytest.mark.parametrize("codec", ["opus", "aac"])
def test_round_trip_keeps_length_and_alignment(codec):
    wav = speechlike(np.random.default_rng(0), 1.0, 150.0)
    out = encode_decode(wav, SAMPLE_RATE, codec, 24)
    assert out.shape == wav.shape and out.dtype == np.float32
    assert not np.array_equal(out, wav)
    lags = range(-200, 201)
    middle = slice(1000, 15000)
    correlation = [np.dot(wav[middle], np.roll(out, -k)[middle]) for k in lags]
    assert lags[int(np.argmax(correlation))] == 0
    error = wav[middle] - out[middle]
    assert 10 * np.log10(np.sum(wav[middle] ** 2) / np.sum(error**2)) > 3  # lossy, not garbage


def test_lower_bitrate_loses_more():
    wav = speechlike(np.random.default_rng(1), 1.0, 120.0) + 0.02 * np.random.default_rng(
        2
    ).standard_normal(16000).astype(np.float32)

    def error(kbps):
        return float(np.sum((encode_decode(wav, SAMPLE_RATE, "aac", kbps) - wav)[1000:15000] ** 2))

    assert error(8) > error(64)


def test_augment_draws_per_utterance_and_is_deterministic():
    wav = speechlike(np.random.default_rng(3), 0.5, 200.0)
    never = CodecAugment(0.0, SAMPLE_RATE)
    assert never(wav, np.random.default_rng(0)) is wav
    always = CodecAugment(1.0, SAMPLE_RATE, codecs=("opus",))
    a = always(wav, np.random.default_rng(5))
    b = always(wav, np.random.default_rng(5))
    assert np.array_equal(a, b) and not np.array_equal(a, wav)


def test_build_codec_from_config():
    assert build_codec(AugmentConfig(), SAMPLE_RATE) is None
    codec = build_codec(AugmentConfig(codec_prob=0.3, codec="aac"), SAMPLE_RATE)
    assert codec.codecs == ("aac",) and codec.prob == 0.3
    with pytest.raises(ConfigError, match="22050 Hz"):
        build_codec(AugmentConfig(codec_prob=0.3, codec="opus"), 22050)
