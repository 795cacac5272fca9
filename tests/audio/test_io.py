"""Tests of speakerprint.audio.io: every format round-trips, windows, resampling, and one error type.

Fixtures are numpy signals written into tmp_path (soundfile for WAV/FLAC/Ogg, PyAV encoders for
MP3 and AAC); two real recordings come from /work/shared/data (skipped where it is absent).
"""

from __future__ import annotations

import fractions
import pickle
import struct
import zlib
from pathlib import Path

import av
import numpy as np
import pytest
import soundfile as sf

from speakerprint.audio import AudioInfo, AudioLoadError, audio_info, load_audio, resample
from speakerprint.errors import SpeakerprintError

SR = 16000
DATA = Path(__file__).resolve().parents[3] / "shared" / "data"
OPUS_FILE = DATA / "speechocean762" / "train" / "SPEAKER0001" / "000010011.opus"
FSDD_FILE = DATA / "fsdd" / "recordings" / "0_george_0.wav"


def chirp(num_samples: int = SR, sr: int = SR, amplitude: float = 0.5) -> np.ndarray:
    """A 200 Hz -> 3.2 kHz sweep over one second: aperiodic, so alignment errors show."""
    t = np.arange(num_samples) / sr
    return (amplitude * np.sin(2 * np.pi * (200 * t + 1500 * t**2))).astype(np.float32)


def snr_db(ref: np.ndarray, est: np.ndarray) -> float:
    n = min(len(ref), len(est))
    noise = np.sum((ref[:n] - est[:n]) ** 2)
    return float(10 * np.log10(np.sum(ref[:n] ** 2) / max(noise, 1e-20)))


def best_lag(ref: np.ndarray, est: np.ndarray, max_lag: int = 1200) -> int:
    """Shift of ``est`` against ``ref`` that maximises their correlation over the middle."""
    seg = ref[2000:10000]
    scores = [np.dot(seg, est[2000 + lag : 10000 + lag]) for lag in range(-max_lag, max_lag + 1)]
    return int(np.argmax(scores)) - max_lag


def write_pyav(path: Path, wav: np.ndarray, sr: int, codec: str, fmt: str | None = None) -> None:
    """Encode ``wav`` ((N,) or (N, C)) with an FFmpeg encoder through PyAV."""
    planar = np.ascontiguousarray(np.atleast_2d(wav.T), dtype=np.float32)  # (C, N)
    layout = "mono" if planar.shape[0] == 1 else "stereo"
    try:
        with av.open(str(path), "w", format=fmt) as out:
            stream = out.add_stream(codec, rate=sr, layout=layout)
            frame = av.AudioFrame.from_ndarray(planar, format="fltp", layout=layout)
            frame.sample_rate = sr
            # A timestamp lets the MP4 muxer write the edit list that hides the encoder's priming.
            frame.pts = 0
            frame.time_base = fractions.Fraction(1, sr)
            for packet in stream.encode(frame):
                out.mux(packet)
            for packet in stream.encode(None):
                out.mux(packet)
    except (av.FFmpegError, ValueError) as error:
        pytest.skip(f"the installed FFmpeg cannot encode {codec} into {path.suffix}: {error}")


# --------------------------------------------------------------------------------------------
# Round trips


@pytest.mark.parametrize(
    ("suffix", "fmt", "subtype", "atol"),
    [
        (".wav", "WAV", "PCM_16", 1 / 32768),
        (".wav", "WAV", "FLOAT", 0.0),
        (".flac", "FLAC", "PCM_16", 1 / 32768),
        (".flac", "FLAC", "PCM_24", 1 / 2**23),
    ],
)
def test_lossless_round_trip(tmp_path, suffix, fmt, subtype, atol):
    wav = chirp()
    path = tmp_path / f"x_{subtype}{suffix}"
    sf.write(path, wav, SR, format=fmt, subtype=subtype)
    out = load_audio(path, SR)
    assert out.dtype == np.float32 and out.ndim == 1
    assert out.shape == wav.shape
    np.testing.assert_allclose(out, wav, atol=atol, rtol=0)
    info = audio_info(path)
    assert info == AudioInfo(SR, len(wav), 1, 1.0, f"{fmt}/{subtype}".lower())


@pytest.mark.parametrize(
    ("suffix", "subtype", "min_snr_db"), [(".ogg", "VORBIS", 15.0), (".opus", "OPUS", 15.0)]
)
def test_ogg_round_trip(tmp_path, suffix, subtype, min_snr_db):
    wav = chirp()
    path = tmp_path / f"x{suffix}"
    sf.write(path, wav, SR, format="OGG", subtype=subtype)
    out = load_audio(path, SR)
    assert out.dtype == np.float32 and out.shape == wav.shape
    assert best_lag(wav, out) == 0
    assert snr_db(wav, out) > min_snr_db
    info = audio_info(path)
    assert (info.sample_rate, info.num_samples, info.num_channels) == (SR, len(wav), 1)
    assert info.format == f"ogg/{subtype.lower()}"


@pytest.mark.parametrize(
    ("name", "codec", "fmt", "expected_lag"),
    [
        ("x.mp3", "libmp3lame", None, 0),
        ("x.m4a", "aac", None, 0),
        # Raw ADTS cannot signal the AAC encoder's 1024 priming samples, so they stay in.
        ("x.aac", "aac", "adts", 1024),
    ],
)
def test_ffmpeg_formats_round_trip(tmp_path, name, codec, fmt, expected_lag):
    wav = chirp()
    path = tmp_path / name
    write_pyav(path, wav, SR, codec, fmt)
    out = load_audio(path, SR)
    assert out.dtype == np.float32 and out.ndim == 1
    assert best_lag(wav, out) == expected_lag
    assert snr_db(wav, out[expected_lag:]) > 15.0
    # Lossy codecs pad to whole codec frames (1152 for MP3, 1024 for AAC).
    assert len(wav) + expected_lag <= len(out) <= len(wav) + expected_lag + 1152
    info = audio_info(path)
    assert info.sample_rate == SR and info.num_channels == 1
    assert abs(info.num_samples - len(out)) <= 2048


def test_stereo_is_averaged(tmp_path):
    left, right = chirp(), 0.25 * np.cos(np.linspace(0, 300, SR)).astype(np.float32)
    path = tmp_path / "stereo.wav"
    sf.write(path, np.stack([left, right], axis=1), SR, subtype="FLOAT")
    assert audio_info(path).num_channels == 2
    np.testing.assert_allclose(load_audio(path, SR), (left + right) / 2, atol=1e-7)


def test_stereo_is_averaged_through_pyav(tmp_path):
    left = chirp()
    path = tmp_path / "stereo.m4a"
    write_pyav(path, np.stack([left, np.zeros_like(left)], axis=1), SR, "aac")
    assert audio_info(path).num_channels == 2
    out = load_audio(path, SR)
    assert best_lag(left, out) == 0
    assert snr_db(left / 2, out) > 15.0


def test_float_wav_beyond_full_scale_is_clipped(tmp_path):
    wav = 1.5 * chirp(amplitude=1.0)
    path = tmp_path / "loud.wav"
    sf.write(path, wav, SR, subtype="FLOAT")
    out = load_audio(path, SR)
    assert out.max() == 1.0 and out.min() == -1.0
    np.testing.assert_array_equal(out, np.clip(wav, -1, 1))


# --------------------------------------------------------------------------------------------
# Resampling


def test_resample_48k_to_16k(tmp_path):
    t48 = np.arange(48000) / 48000
    path = tmp_path / "tone48k.flac"
    sf.write(path, (0.5 * np.sin(2 * np.pi * 1000 * t48)).astype(np.float32), 48000)
    out = load_audio(path, 16000)
    assert out.shape == (16000,) and out.dtype == np.float32
    expected = 0.5 * np.sin(2 * np.pi * 1000 * np.arange(16000) / 16000)
    # Away from the edges the resampled tone is the 16 kHz tone.
    np.testing.assert_allclose(out[200:-200], expected[200:-200], atol=2e-3)


def test_resample_function():
    wav = chirp(8000, 8000)
    out = resample(wav, 8000, 16000)
    assert out.dtype == np.float32 and out.shape == (16000,)
    np.testing.assert_allclose(resample(out, 16000, 8000)[100:-100], wav[100:-100], atol=5e-3)
    assert resample(wav.astype(np.float64), 8000, 8000).dtype == np.float32
    with pytest.raises(ValueError, match="positive"):
        resample(wav, 0, 16000)


@pytest.mark.skipif(not FSDD_FILE.exists(), reason="shared FSDD data not present")
def test_real_fsdd_8k_file_is_resampled_to_16k():
    native, sr = sf.read(FSDD_FILE, dtype="float32")
    assert sr == 8000
    out = load_audio(FSDD_FILE, 16000)
    assert out.shape == (2 * len(native),)
    assert audio_info(FSDD_FILE).sample_rate == 8000
    # The speech survives: loading at 8 kHz gives the file's samples, and power is kept.
    np.testing.assert_array_equal(load_audio(FSDD_FILE, 8000), native)
    assert np.mean(out**2) == pytest.approx(np.mean(native**2), rel=0.05)


@pytest.mark.skipif(not OPUS_FILE.exists(), reason="shared speechocean762 data not present")
def test_real_opus_file_has_the_right_duration():
    info = audio_info(OPUS_FILE)
    assert (info.sample_rate, info.num_channels, info.format) == (16000, 1, "ogg/opus")
    assert info.duration_s == pytest.approx(2.58, abs=1e-3)
    out = load_audio(OPUS_FILE, 16000)
    assert out.shape == (info.num_samples,)
    assert np.abs(out).max() > 0.01  # speech, not silence
    assert load_audio(OPUS_FILE, 8000).shape == (info.num_samples // 2,)


# --------------------------------------------------------------------------------------------
# Crop windows


@pytest.mark.parametrize("suffix", [".wav", ".flac", ".opus", ".mp3"])
def test_window_equals_slice_of_full_load(tmp_path, suffix):
    path = tmp_path / f"x{suffix}"
    if suffix == ".mp3":
        write_pyav(path, chirp(), SR, "libmp3lame")
    else:
        opus = suffix == ".opus"
        sf.write(
            path, chirp(), SR, format="OGG" if opus else None, subtype="OPUS" if opus else None
        )
    full = load_audio(path, SR)
    window = load_audio(path, SR, start_s=0.25, duration_s=0.5)
    np.testing.assert_array_equal(window, full[4000:12000])
    np.testing.assert_array_equal(load_audio(path, SR, start_s=0.5), full[8000:])
    np.testing.assert_array_equal(load_audio(path, SR, duration_s=0.1), full[:1600])
    # A window running past the end returns what exists.
    np.testing.assert_array_equal(load_audio(path, SR, start_s=0.9, duration_s=5.0), full[14400:])


def test_window_is_in_seconds_of_the_file_when_resampling(tmp_path):
    path = tmp_path / "x8k.wav"
    sf.write(path, chirp(8000, 8000), 8000)
    out = load_audio(path, 16000, start_s=0.25, duration_s=0.5)
    assert out.shape == (8000,)


# --------------------------------------------------------------------------------------------
# Errors: one type, naming the file and the reason


def tiny_png() -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", 2, 2, 8, 0, 0, 0, 0)  # 2x2 grey
    pixels = zlib.compress(b"\x00\x00\x00\x00\x00\x00")
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", pixels) + chunk(b"IEND", b"")
    )


def truncated(tmp_path: Path, suffix: str, subtype: str | None = None) -> Path:
    source = tmp_path / f"whole{suffix}"
    sf.write(source, chirp(), SR, format="OGG" if suffix == ".opus" else None, subtype=subtype)
    data = source.read_bytes()
    path = tmp_path / f"truncated{suffix}"
    path.write_bytes(data[: len(data) // 2])
    return path


def make_bad_file(tmp_path: Path, case: str) -> tuple[Path, dict]:
    kwargs: dict = {}
    if case == "missing":
        return tmp_path / "missing.wav", kwargs
    if case == "directory":
        path = tmp_path / "folder.wav"
        path.mkdir()
    elif case == "empty":
        path = tmp_path / "empty.wav"
        path.write_bytes(b"")
    elif case == "zero_samples":
        path = tmp_path / "zero_samples.wav"
        sf.write(path, np.zeros(0, np.float32), SR)
    elif case == "header_only":
        path = tmp_path / "header_only.wav"
        path.write_bytes(b"RIFF\x24\x00\x00\x00WAVEfmt ")
    elif case == "truncated_wav":
        path = truncated(tmp_path, ".wav")
    elif case == "truncated_flac":
        path = truncated(tmp_path, ".flac")
    elif case == "truncated_opus":
        path = truncated(tmp_path, ".opus", "OPUS")
    elif case == "text":
        path = tmp_path / "notes.wav"
        path.write_text("this is not audio\n" * 20)
    elif case == "png":
        path = tmp_path / "picture.wav"
        path.write_bytes(tiny_png())
    elif case == "text_mp3":
        path = tmp_path / "notes.mp3"
        path.write_text("this is not audio either\n" * 20)
    elif case in ("nan", "inf"):
        path = tmp_path / f"{case}.wav"
        wav = chirp()
        wav[100] = np.nan if case == "nan" else np.inf
        sf.write(path, wav, SR, subtype="FLOAT")
    else:
        path = tmp_path / "good.wav"
        sf.write(path, chirp(), SR)
        kwargs = {
            "negative_start": {"start_s": -1.0},
            "nan_start": {"start_s": float("nan")},
            "start_past_end": {"start_s": 1.0},
            "start_far_past_end": {"start_s": 30.0},
            "zero_duration": {"duration_s": 0.0},
            "negative_duration": {"duration_s": -0.5},
            "inf_duration": {"duration_s": float("inf")},
            "bad_sample_rate": {"sample_rate": 0},
        }[case]
    return path, kwargs


ERROR_CASES = [
    ("missing", "no such file"),
    ("directory", "not a regular file"),
    ("empty", "empty"),
    ("zero_samples", "no audio samples"),
    ("header_only", "not a readable audio file"),
    ("truncated_wav", "truncated"),
    ("truncated_flac", "not a readable audio file"),
    ("truncated_opus", "not a readable audio file"),
    ("text", "not a readable audio file"),
    ("png", "audio"),
    ("text_mp3", "not a readable audio file"),
    ("nan", "NaN or Inf"),
    ("inf", "NaN or Inf"),
    ("negative_start", "start_s"),
    ("nan_start", "start_s"),
    ("start_past_end", "past the end"),
    ("start_far_past_end", "past the end"),
    ("zero_duration", "duration_s"),
    ("negative_duration", "duration_s"),
    ("inf_duration", "duration_s"),
    ("bad_sample_rate", "sample_rate"),
]


@pytest.mark.parametrize(("case", "reason"), ERROR_CASES, ids=[c for c, _ in ERROR_CASES])
def test_every_failure_is_an_audio_load_error(tmp_path, case, reason):
    path, kwargs = make_bad_file(tmp_path, case)
    with pytest.raises(AudioLoadError) as caught:
        load_audio(path, **kwargs)
    error = caught.value
    assert isinstance(error, SpeakerprintError) and isinstance(error, ValueError)
    assert error.path == str(path)
    assert reason in error.reason
    assert str(error).startswith(f"cannot load audio '{path}': ")
    assert path.name in str(error)


@pytest.mark.parametrize(
    "case", ["missing", "directory", "empty", "zero_samples", "truncated_wav", "text", "png"]
)
def test_audio_info_raises_the_same_error(tmp_path, case):
    path, _ = make_bad_file(tmp_path, case)
    with pytest.raises(AudioLoadError, match=path.name):
        audio_info(path)


def test_error_pickles_with_its_attributes():
    error = pickle.loads(pickle.dumps(AudioLoadError("a b.wav", "no such file")))
    assert isinstance(error, AudioLoadError)
    assert (error.path, error.reason) == ("a b.wav", "no such file")
    assert str(error) == "cannot load audio 'a b.wav': no such file"


@pytest.mark.parametrize("name", ["dir with spaces/clip one.wav", "日本語/Ünïcødé clip é.flac"])
def test_unicode_and_spaces_in_path(tmp_path, name):
    path = tmp_path / name
    path.parent.mkdir()
    sf.write(path, chirp(), SR)
    assert load_audio(path, SR).shape == (SR,)
    assert load_audio(str(path), SR, start_s=0.5).shape == (SR // 2,)
    assert audio_info(path).num_samples == SR


def test_unicode_path_through_pyav(tmp_path):
    path = tmp_path / "naïve clip 音.mp3"
    write_pyav(path, chirp(), SR, "libmp3lame")
    assert best_lag(chirp(), load_audio(path, SR)) == 0
    assert audio_info(path).sample_rate == SR


# --------------------------------------------------------------------------------------------
# Streaming: stream_audio decodes once, block by block, and equals load_audio


@pytest.mark.parametrize(
    ("name", "rate", "channels", "writer"),
    [
        ("a.wav", 44100, 2, "soundfile"),
        ("b.flac", 16000, 1, "soundfile"),
        ("c.opus", 48000, 1, "soundfile"),
        ("d.m4a", 44100, 2, "pyav"),
        ("e.mp3", 22050, 1, "pyav"),
    ],
)
def test_stream_equals_load_audio(tmp_path, name, rate, channels, writer):
    from speakerprint.audio import stream_audio

    rng = np.random.default_rng(1)
    wav = (0.3 * rng.standard_normal((rate * 5 + 77, channels))).astype(np.float32).squeeze()
    path = tmp_path / name
    if writer == "soundfile":
        sf.write(
            path,
            wav,
            rate,
            format="OGG" if name.endswith(".opus") else None,
            subtype="OPUS" if name.endswith(".opus") else None,
        )
    else:
        write_pyav(path, wav, rate, "aac" if name.endswith(".m4a") else "libmp3lame")
    whole = load_audio(path, 16000)
    blocks = list(stream_audio(path, 16000, block_s=0.9))
    assert {len(b) for b in blocks[:-1]} == {round(0.9 * 16000)}
    assert 0 < len(blocks[-1]) <= round(0.9 * 16000)
    assert all(b.dtype == np.float32 and b.ndim == 1 for b in blocks)
    np.testing.assert_array_equal(np.concatenate(blocks), whole)


# A FLAC cut short fails where the stream reaches the cut, and says so.
STREAM_ERROR_CASES = [
    (case, "decoding failed mid-file" if case == "truncated_flac" else reason)
    for case, reason in ERROR_CASES
    if not case.endswith(("_start", "_duration", "_end"))
]


@pytest.mark.parametrize(
    ("case", "reason"), STREAM_ERROR_CASES, ids=[c for c, _ in STREAM_ERROR_CASES]
)
def test_stream_raises_the_errors_of_load_audio(tmp_path, case, reason):
    from speakerprint.audio import stream_audio

    path, kwargs = make_bad_file(tmp_path, case)
    with pytest.raises(AudioLoadError) as caught:
        list(stream_audio(path, **kwargs))
    assert caught.value.path == str(path) and reason in caught.value.reason


def test_stream_rejects_a_bad_block_length(tmp_path):
    from speakerprint.audio import stream_audio

    path = tmp_path / "good.wav"
    sf.write(path, chirp(), SR)
    for block_s in (0.0, -1.0, float("nan")):
        with pytest.raises(AudioLoadError, match="block_s"):
            next(stream_audio(path, block_s=block_s))
