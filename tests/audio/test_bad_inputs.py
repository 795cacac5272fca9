"""The outcomes in docs/reliability.md that tests/audio/test_io.py does not already pin."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf
import torch

from speakerprint.audio import audio_info, load_audio
from speakerprint.inference import SpeakerEncoder

SR = 16000


def _tone(seconds: float, sr: int = SR) -> np.ndarray:
    t = np.arange(int(seconds * sr)) / sr
    return (0.3 * np.sin(2 * np.pi * (150 * t + 400 * t**2))).astype(np.float32)


def test_eight_channels_are_averaged(tmp_path):
    wav = _tone(0.5)
    channels = np.stack([wav * (c + 1) / 8 for c in range(8)], axis=1)  # (N, 8)
    sf.write(tmp_path / "eight.wav", channels, SR, subtype="FLOAT")
    np.testing.assert_allclose(load_audio(tmp_path / "eight.wav"), channels.mean(1), atol=1e-6)


@pytest.mark.parametrize("channels", [2, 8, 9])
def test_many_channels_through_ffmpeg_are_averaged(tmp_path, channels):
    # A .m4a name sends the file to PyAV; PyAV's planar frames of 8 channels once crashed it.
    wav = _tone(0.5)
    multi = np.stack([wav * (c + 1) / channels for c in range(channels)], axis=1)
    sf.write(tmp_path / "many.m4a", multi, SR, subtype="PCM_24", format="WAV")
    np.testing.assert_allclose(load_audio(tmp_path / "many.m4a"), multi.mean(1), atol=1e-6)


@pytest.mark.parametrize(("fmt", "name"), [("FLAC", "flac_inside.wav"), ("WAV", "wav.mp3")])
def test_a_wrong_extension_still_loads(tmp_path, fmt, name):
    wav = _tone(0.5)
    sf.write(tmp_path / name, wav, SR, format=fmt)
    np.testing.assert_allclose(load_audio(tmp_path / name), wav, atol=1e-4)


def test_full_scale_clipping_loads_unchanged(tmp_path):
    square = np.sign(_tone(0.5) + 1e-9).astype(np.float32)
    sf.write(tmp_path / "clipped.wav", square, SR, subtype="FLOAT")
    np.testing.assert_array_equal(load_audio(tmp_path / "clipped.wav"), square)


def test_an_hour_long_file_is_read_by_window(tmp_path):
    path = tmp_path / "hour.wav"
    block = _tone(10.0, 8000)
    with sf.SoundFile(path, "w", samplerate=8000, channels=1, subtype="PCM_U8") as f:
        for _ in range(360):
            f.write(block)
    assert audio_info(path).duration_s == pytest.approx(3600.0)
    window = load_audio(path, SR, start_s=3599.0, duration_s=1.0)
    assert window.shape == (SR,)
    # The last second of the hour is the last second of the repeated block, resampled.
    np.testing.assert_allclose(window, load_audio(path, SR, start_s=9.0, duration_s=1.0))


def test_shorter_than_the_minimum_is_repeated_up_to_it(tmp_path):
    enc = SpeakerEncoder.from_pretrained()
    minimum = enc.bundle.min_samples
    short = _tone(0.01)  # 160 samples
    assert len(short) < minimum
    sf.write(tmp_path / "short.wav", short, SR, subtype="FLOAT")
    emb = enc.embed(tmp_path / "short.wav")
    repeated = np.tile(short, -(-minimum // len(short)))[:minimum]
    expected = enc.embed_batch(torch.from_numpy(repeated)[None])[0]
    assert np.isfinite(emb).all()
    np.testing.assert_allclose(emb, expected, rtol=1e-4, atol=1e-4)
