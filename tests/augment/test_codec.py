"""Channel simulation: codecs and telephone channels keep length and alignment, change the audio
the way the channel does."""

from __future__ import annotations

import numpy as np
import pytest

from speakerprint.augment import AugmentConfig, CodecAugment, build_codec, encode_decode
from speakerprint.augment.codec import CODECS, g711
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


def band_energy_db(wav, lo_hz, hi_hz, sample_rate=SAMPLE_RATE):
    spectrum = np.abs(np.fft.rfft(wav)) ** 2
    freqs = np.fft.rfftfreq(len(wav), 1 / sample_rate)
    return 10 * np.log10(spectrum[(freqs >= lo_hz) & (freqs < hi_hz)].sum())


def lag_of(wav, out, max_lag=200):
    lags = range(-max_lag, max_lag + 1)
    middle = slice(2000, len(wav) - 2000)
    correlation = [np.dot(wav[middle], np.roll(out, -k)[middle]) for k in lags]
    return lags[int(np.argmax(correlation))]


def test_telephone_keeps_only_the_telephone_band():
    noise = (0.1 * np.random.default_rng(4).standard_normal(2 * SAMPLE_RATE)).astype(np.float32)
    out = encode_decode(noise, SAMPLE_RATE, "telephone")
    assert out.shape == noise.shape and out.dtype == np.float32
    for lo, hi in ((0, 300), (3400, 8000)):
        assert band_energy_db(noise, lo, hi) - band_energy_db(out, lo, hi) > 20
    assert abs(band_energy_db(noise, 900, 1100) - band_energy_db(out, 900, 1100)) < 0.5
    assert lag_of(noise, out) == 0


# per-sample error of an 8-bit log compander: half a step of the compressed value (1/256)
# times the slope of the expander, which grows with the amplitude (mu-law: ln(1+mu)(1/mu+|x|);
# A-law: (1+ln A) max(1/A, |x|)), with 3 % for the slope's growth across the half step
G711_BOUND = {
    "mulaw": lambda x: 1.03 / 256 * np.log(256) * (1 / 255 + np.abs(x)),
    "alaw": lambda x: 1.03 / 256 * (1 + np.log(87.6)) * np.maximum(1 / 87.6, np.abs(x)),
}


@pytest.mark.parametrize("law", ["mulaw", "alaw"])
def test_g711_has_256_levels_and_the_g711_error(law):
    ramp = np.linspace(-1, 1, 40001)  # finer than the smallest step (1.7e-4), so all codes
    assert len(np.unique(g711(ramp, law))) == 256
    t = np.arange(8000) / 8000
    for amplitude in (0.9, 0.05, 0.002):
        sine = amplitude * np.sin(2 * np.pi * 440 * t + 0.3)
        out = g711(sine, law)
        assert out.dtype == np.float32 and not np.array_equal(out, sine.astype(np.float32))
        assert np.all(np.abs(out - sine) <= G711_BOUND[law](sine))


@pytest.mark.parametrize("law", ["mulaw", "alaw"])
def test_g711_channel_keeps_length_alignment_and_quality(law):
    wav = speechlike(np.random.default_rng(6), 1.0, 150.0)  # harmonics below 1.1 kHz
    out = encode_decode(wav, SAMPLE_RATE, law)
    assert out.shape == wav.shape and lag_of(wav, out) == 0
    error = (wav - out)[1000:15000]
    assert 25 < 10 * np.log10(np.sum(wav[1000:15000] ** 2) / np.sum(error**2)) < 50


def has_encoder(codec):
    import av

    try:
        av.codec.Codec(CODECS[codec][0], "w")
    except av.codec.codec.UnknownCodecError:
        return False
    return True


@pytest.mark.parametrize("codec, kbps", [("mp3", 16), ("gsm", None), ("amrnb", 12)])
def test_ffmpeg_channels_keep_length_and_alignment_or_say_what_is_missing(codec, kbps):
    if not has_encoder(codec):
        with pytest.raises(ConfigError, match=CODECS[codec][0]):
            CodecAugment(1.0, SAMPLE_RATE, codecs=(codec,))
        with pytest.raises(ConfigError, match=CODECS[codec][0]):
            encode_decode(np.zeros(800, np.float32), SAMPLE_RATE, codec, kbps)
        return
    CodecAugment(1.0, SAMPLE_RATE, codecs=(codec,))
    # a chirp: unlike a voiced sound it has one correlation peak, and speech codecs keep it
    t = np.arange(SAMPLE_RATE) / SAMPLE_RATE
    wav = (0.3 * np.sin(2 * np.pi * (200 * t + 1500 * t**2))).astype(np.float32)
    out = encode_decode(wav, SAMPLE_RATE, codec, kbps)
    assert out.shape == wav.shape and out.dtype == np.float32
    assert not np.array_equal(out, wav)
    assert abs(lag_of(wav, out)) <= 3
