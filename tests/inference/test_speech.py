"""Too little speech (issue 25): the speech check of speakerprint.inference.speech, as the Python
API applies it in verify and in the CLI's embedding path, on real speechocean762 recordings (the
demo copy in the repository), digital silence and 0.1 s clips of real speech."""

import re

import numpy as np
import pytest
import soundfile as sf
import torch

from speakerprint.audio import audio_info, load_audio, stream_audio
from speakerprint.errors import ConfigError
from speakerprint.features import FbankConfig
from speakerprint.inference import SpeakerEncoder, extract
from speakerprint.inference.speech import (
    DEFAULT_MIN_SPEECH_S,
    TooLittleSpeechError,
    require_speech,
    speech_seconds,
)
from speakerprint.models import create_model
from speakerprint.models.bundle import Threshold, save_bundle

SR = 16000


@pytest.fixture(scope="module")
def shortest(demo_root):
    """The four shortest demo recordings (by header): the real utterances closest to the limit."""
    files = sorted(demo_root.glob("*/*.opus"))
    return sorted(files, key=lambda f: audio_info(f).duration_s)[:4]


@pytest.fixture(scope="module")
def encoder(tmp_path_factory):
    torch.manual_seed(0)
    model = create_model("ecapa_tdnn", channels=32, mfa_channels=96, embed_dim=24).eval()
    path = tmp_path_factory.mktemp("bundle") / "b"
    save_bundle(path, model, FbankConfig(), threshold=Threshold(0.25, "eer", "dev"))
    return SpeakerEncoder.from_pretrained(path)


def test_short_real_utterances_pass_silence_and_fragments_do_not(shortest):
    for path in shortest:
        wav = load_audio(path, SR)
        speech_s = require_speech(wav, SR, source=str(path))
        assert DEFAULT_MIN_SPEECH_S <= speech_s <= len(wav) / SR
        assert speech_s == pytest.approx(speech_seconds(wav, SR), abs=1e-3)
        with pytest.raises(TooLittleSpeechError) as caught:
            require_speech(wav[: SR // 10], SR, source="clip.wav")
        assert caught.value.speech_s < DEFAULT_MIN_SPEECH_S
    with pytest.raises(TooLittleSpeechError) as caught:
        require_speech(np.zeros(3 * SR, np.float32), SR, source="silence.wav")
    message = str(caught.value)
    assert (
        message.startswith("silence.wav: 0.00 s of speech in 3.00 s of audio")
        and "\n" not in message
    )
    assert (caught.value.speech_s, caught.value.min_speech_s) == (0.0, DEFAULT_MIN_SPEECH_S)


def test_the_minimum_is_configurable_and_checked(shortest):
    wav = load_audio(shortest[0], SR)
    speech_s = require_speech(wav, SR, source="x")
    assert require_speech(wav, SR, source="x", min_speech_s=speech_s) == speech_s
    with pytest.raises(TooLittleSpeechError, match=f"minimum of {speech_s + 0.1:g} s"):
        require_speech(wav, SR, source="x", min_speech_s=speech_s + 0.1)
    assert require_speech(np.zeros(SR, np.float32), SR, source="x", min_speech_s=0) == 0.0
    for bad in (-1.0, float("nan"), float("inf"), "1", True):
        with pytest.raises(ConfigError, match="min_speech_s"):
            require_speech(wav, SR, source="x", min_speech_s=bad)


def test_a_stream_is_measured_block_by_block(demo_root, tmp_path):
    """A long file is measured as it streams, each block with its own threshold: close to the
    whole file's figure when blocks hold seconds of audio (stream_audio's default is 30 s)."""
    files = sorted(demo_root.glob("*/*.opus"))[:6]
    silence = np.zeros(SR, np.float32)
    long = np.concatenate([part for f in files for part in (load_audio(f, SR), silence)])
    path = tmp_path / "long.wav"
    sf.write(path, long, SR, subtype="FLOAT")
    whole = require_speech(long, SR, source="whole")
    assert whole < len(long) / SR - len(files)  # the silences are not speech
    for block_s in (4.0, 30.0):
        streamed = require_speech(stream_audio(path, SR, block_s=block_s), SR, source="s")
        assert streamed == pytest.approx(whole, rel=0.1), block_s
    silent = tmp_path / "silent.wav"
    sf.write(silent, np.zeros(4 * SR, np.float32), SR)
    with pytest.raises(TooLittleSpeechError, match="0.00 s of speech in 4.00 s"):
        require_speech(stream_audio(silent, SR, block_s=1.0), SR, source=str(silent))


def test_verify_refuses_silence_and_fragments_and_reports_speech(encoder, shortest):
    a, b = (load_audio(f, SR) for f in shortest[:2])
    silence = np.zeros(3 * SR, np.float32)
    # What the check prevents: silence against silence is a perfect match to the model.
    unchecked = encoder.verify(silence, silence, min_speech_s=0)
    assert unchecked.same_speaker and unchecked.speech_s == (0.0, 0.0)
    with pytest.raises(TooLittleSpeechError, match=r"^a: 0.00 s of speech in 3.00 s"):
        encoder.verify(silence, silence)
    # A 0.1 s clip of a speaker's own recording: refused, not "different speakers".
    with pytest.raises(TooLittleSpeechError, match=r"^b: "):
        encoder.verify(a, a[: SR // 10])
    with pytest.raises(TooLittleSpeechError, match=f"^{re.escape(str(shortest[1]))}: "):
        encoder.verify(shortest[1], shortest[0], min_speech_s=60.0)  # paths are named as paths
    result = encoder.verify(shortest[0], shortest[1])
    assert result.speech_s == (require_speech(a, SR, source="a"), require_speech(b, SR, source="b"))
    assert result.to_dict()["speech_s"] == {"a": result.speech_s[0], "b": result.speech_s[1]}
    assert result.same_speaker == (result.score >= 0.25)
    assert encoder.verify_embeddings(encoder.embed(a), encoder.embed(b)).speech_s is None


def test_the_cli_embedding_path_checks_short_and_long_files(
    encoder, shortest, tmp_path, monkeypatch
):
    """extract.embed_speech (what the CLI's verify, enroll and identify embed) on a file decoded
    whole, and on one over LONG_RECORDING_S, measured as a stream and embedded in windows."""
    silent = tmp_path / "silent.wav"
    sf.write(silent, np.zeros(3 * SR, np.float32), SR)
    short = extract.embed_speech(encoder, shortest[0])
    np.testing.assert_allclose(short.embedding, encoder.embed(shortest[0]), atol=1e-6)
    assert short.speech_s == require_speech(load_audio(shortest[0], SR), SR, source="x")
    monkeypatch.setattr(extract, "LONG_RECORDING_S", 1.0)  # every file takes the long path
    long = extract.embed_speech(encoder, shortest[0])
    assert long.speech_s == pytest.approx(short.speech_s, abs=0.15)
    np.testing.assert_allclose(
        long.embedding, extract.embed_recording(encoder, shortest[0]), atol=1e-6
    )
    for long_s in (60.0, 1.0):  # the silent file decoded whole, then streamed
        monkeypatch.setattr(extract, "LONG_RECORDING_S", long_s)
        with pytest.raises(TooLittleSpeechError, match=f"^{re.escape(str(silent))}: 0.00 s"):
            extract.verify_recordings(encoder, shortest[0], silent)
