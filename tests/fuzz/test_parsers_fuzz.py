"""Fuzzing: manifests, trial lists and audio files of arbitrary content either parse or raise the
package's own error (ManifestError, AudioLoadError), never anything else.

CI runs a few examples per test; ``HYPOTHESIS_PROFILE=nightly`` runs many more.
"""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from speakerprint.audio import AudioLoadError, load_audio
from speakerprint.data.manifest import read_manifest
from speakerprint.data.trials import read_trials
from speakerprint.errors import ManifestError

_COMMON = {"deadline": None, "suppress_health_check": [HealthCheck.too_slow]}
# CI draws the same examples every run (a red CI must be reproducible); nightly explores.
settings.register_profile(
    "speakerprint-fuzz-ci", max_examples=25, derandomize=True, database=None, **_COMMON
)
settings.register_profile("speakerprint-fuzz-nightly", max_examples=2000, **_COMMON)
# Applied per test, so that other hypothesis tests in the session keep their own settings.
PROFILE = settings.get_profile(
    "speakerprint-fuzz-nightly"
    if os.environ.get("HYPOTHESIS_PROFILE") == "nightly"
    else "speakerprint-fuzz-ci"
)

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=6,
)
FIELDS = ["utt_id", "path", "speaker", "duration_s", "sample_rate"]
records = st.dictionaries(st.sampled_from(FIELDS) | st.text(max_size=6), json_values, max_size=6)
manifest_lines = st.one_of(
    st.text(max_size=60),
    records.map(lambda r: json.dumps(r)),
    json_values.map(lambda v: json.dumps(v)),
)


def _write(data: bytes, suffix: str) -> Path:
    fd, name = tempfile.mkstemp(suffix=suffix)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    return Path(name)


@PROFILE
@given(st.lists(manifest_lines, max_size=8))
def test_manifest_text_parses_or_raises_a_manifest_error(lines):
    path = _write("\n".join(lines).encode("utf-8", "surrogatepass"), ".jsonl")
    try:
        utts = read_manifest(path)
    except ManifestError as e:
        assert str(path) in str(e)
    else:
        assert len({u.utt_id for u in utts}) == len(utts)
    finally:
        path.unlink()


@PROFILE
@given(st.binary(max_size=200))
def test_manifest_bytes_parse_or_raise_a_manifest_error(data):
    path = _write(data, ".jsonl")
    try:
        read_manifest(path)
    except ManifestError:
        pass
    finally:
        path.unlink()


trial_lines = st.one_of(
    st.text(max_size=40),
    st.tuples(st.sampled_from(["0", "1", "2", "x"]), st.text(max_size=5), st.text(max_size=5)).map(
        " ".join
    ),
)


@PROFILE
@given(st.lists(trial_lines, max_size=8) | st.binary(max_size=100).map(lambda b: [b]))
def test_trial_lists_parse_or_raise_a_manifest_error(lines):
    data = (
        lines[0]
        if lines and isinstance(lines[0], bytes)
        else "\n".join(lines).encode("utf-8", "surrogatepass")
    )
    path = _write(data, ".txt")
    try:
        trials = read_trials(path)
    except ManifestError:
        pass
    else:
        assert all(t.label in (0, 1) and t.enrol and t.test for t in trials)
    finally:
        path.unlink()


def _wav_header(data_size: int, channels: int, rate: int, bits: int) -> bytes:
    block = channels * max(bits // 8, 1)
    fmt = struct.pack("<HHIIHH", 1, channels, rate, rate * block, block, bits)
    return (
        b"RIFF"
        + struct.pack("<I", 36 + data_size)
        + b"WAVEfmt "
        + struct.pack("<I", 16)
        + fmt
        + b"data"
        + struct.pack("<I", data_size)
    )


audio_bytes = st.one_of(
    st.binary(max_size=400),
    # A plausible header with random fields over random data reaches deeper into the decoders.
    st.builds(
        lambda size, ch, rate, bits, body: _wav_header(size, ch, rate, bits) + body,
        st.integers(0, 2**32 - 1 - 36),  # the RIFF size field holds 36 + data size
        st.integers(0, 10),
        st.integers(0, 200_000),
        st.sampled_from([0, 8, 16, 24, 32, 7]),
        st.binary(max_size=400),
    ),
    st.binary(max_size=300).map(lambda b: b"fLaC" + b),
    st.binary(max_size=300).map(lambda b: b"OggS" + b),
    st.binary(max_size=300).map(lambda b: b"\x00\x00\x00\x20ftypM4A " + b),
)


# Found by this fuzzer: a WAV whose 'fmt ' chunk is shorter than 16 bytes makes soundfile fail
# and FFmpeg open an audio stream without a codec context, and load_audio raises AttributeError.
SHORT_FMT_WAV = (
    b"RIFF\x00\x00\x00\x00WAVEfmt \x0f\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x01"
    b"\x00\x00\x00\x00\x00\x00\x00\x00data\x00\x00\x00\x00"
)


def test_wav_with_a_short_fmt_chunk_is_an_audio_load_error(tmp_path):
    # Found by the nightly fuzz profile: ffmpeg opened it with an audio stream but no decoder.
    path = tmp_path / "short_fmt.wav"
    path.write_bytes(SHORT_FMT_WAV)
    with pytest.raises(AudioLoadError):
        load_audio(path, 16000)


# Found by the nightly fuzz profile: 8-channel 24-bit PCM in a .m4a name went to PyAV, whose
# planar 8-channel frames made to_ndarray() read past their buffers: a segfault, not an error.
EIGHT_CHANNEL_WAV = (
    b"RIFF"
    + struct.pack("<I", 0x81413D61)  # sizes far past the end of the file
    + b"WAVEfmt "
    + struct.pack("<IHHIIHH", 16, 1, 8, 16498, 0x060AB0, 24, 24)  # PCM, 8 ch, 24 bit
    + b"data"
    + struct.pack("<I", 0x81413D3D)
    + bytes(range(121))
)


def test_eight_channel_header_that_crashed_ffmpeg_decoding_is_handled(tmp_path):
    path = tmp_path / "eight.m4a"
    path.write_bytes(EIGHT_CHANNEL_WAV)
    # In a child process, so that a crash fails this test instead of killing the test run.
    code = (
        "import sys; from speakerprint.audio import load_audio, AudioLoadError\n"
        "try:\n    w = load_audio(sys.argv[1], 16000); print('loaded', w.shape)\n"
        "except AudioLoadError as e:\n    print('error', e)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, str(path)], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, f"crashed ({done.returncode}): {done.stderr[-2000:]}"
    assert done.stdout.startswith(("loaded", "error"))


@PROFILE
@given(audio_bytes, st.sampled_from([".wav", ".flac", ".ogg", ".m4a"]))
def test_random_audio_bytes_load_or_raise_an_audio_load_error(data, suffix):
    path = _write(data, suffix)
    try:
        wav = load_audio(path, 16000)
    except AudioLoadError as e:
        assert e.path == str(path)
    else:
        assert wav.dtype == np.float32 and wav.ndim == 1 and len(wav) > 0
        assert np.isfinite(wav).all() and np.abs(wav).max() <= 1.0
    finally:
        path.unlink()
