"""Tests of speakerprint.audio.vad on real speech (speechocean762, FSDD) with silence added around
it, and on synthetic signals whose speech boundaries are known exactly."""

from __future__ import annotations

import numpy as np
import pytest

from speakerprint.audio import load_audio
from speakerprint.audio.vad import EnergyVad, SileroVad, SpeechSegment, make_vad

SR = 16000
SPEECH = "speechocean762/train/SPEAKER0001/000010011.opus"


def _spans(segments: list[SpeechSegment]) -> list[tuple[float, float]]:
    return [(s.start_s, s.end_s) for s in segments]


def _pad(wav: np.ndarray, before_s: float, after_s: float, noise_db: float | None = None):
    """``wav`` between stretches of silence: digital zeros, or white noise at ``noise_db`` dBFS."""
    rng = np.random.default_rng(0)

    def quiet(seconds):
        n = int(seconds * SR)
        if noise_db is None:
            return np.zeros(n, np.float32)
        return (rng.standard_normal(n) * 10 ** (noise_db / 20)).astype(np.float32)

    return np.concatenate([quiet(before_s), wav, quiet(after_s)])


@pytest.fixture(scope="module")
def speech(shared_data) -> np.ndarray:
    return load_audio(shared_data / SPEECH, SR)


def test_energy_boundaries_of_a_known_burst_are_exact_to_a_frame():
    vad = EnergyVad(pad_s=0.0)
    burst = np.random.default_rng(0).uniform(-0.5, 0.5, int(1.5 * SR)).astype(np.float32)
    wav = _pad(burst, 1.0, 0.75)
    ((start, end),) = _spans(vad(wav, SR))
    assert abs(start - 1.0) <= vad.frame_ms / 1000 and abs(end - 2.5) <= vad.frame_ms / 1000
    # Padding, short gaps and short blips behave as their parameters say.
    padded = EnergyVad(pad_s=0.2)(wav, SR)
    assert _spans(padded) == [(pytest.approx(start - 0.2), pytest.approx(end + 0.2))]
    gap = np.concatenate([burst, np.zeros(int(0.1 * SR), np.float32), burst])
    assert len(vad(_pad(gap, 0.5, 0.5), SR)) == 1  # a 0.1 s gap < min_silence_s: one segment
    assert len(EnergyVad(min_silence_s=0.05, pad_s=0.0)(_pad(gap, 0.5, 0.5), SR)) == 2
    blip = _pad(burst[: int(0.1 * SR)], 1.0, 1.0)
    assert vad(blip, SR) == [] and EnergyVad(min_speech_s=0.05)(blip, SR) != []


def test_energy_on_real_speech_ignores_the_added_silence(speech):
    vad = EnergyVad()
    alone = _spans(vad(speech, SR))
    assert alone, "no speech found in a real utterance"
    for noise_db in (None, -70.0):
        padded = _pad(speech, 1.0, 1.5, noise_db)
        found = _spans(vad(padded, SR))
        # The same speech, shifted by the silence added before it (to within a frame)...
        assert len(found) == len(alone)
        for (start, end), (start0, end0) in zip(found, alone):
            assert start == pytest.approx(start0 + 1.0, abs=0.03)
            assert end == pytest.approx(end0 + 1.0, abs=0.03)
        # ... and nothing in the silence itself.
        assert found[0][0] >= 1.0 - vad.pad_s - 0.01
        assert found[-1][1] <= 1.0 + len(speech) / SR + vad.pad_s + 0.01
    # The segments hold nearly all of the utterance's energy: speech is not cut off.
    inside = sum(float(np.sum(speech[int(s * SR) : int(e * SR)] ** 2)) for s, e in alone)
    assert inside / float(np.sum(speech**2)) > 0.97


def test_energy_finds_nothing_in_silence_and_checks_its_input():
    vad = EnergyVad()
    assert vad(np.zeros(SR, np.float32), SR) == []
    assert vad(_pad(np.zeros(0, np.float32), 1.0, 0.0, noise_db=-80.0), SR) == []
    assert vad(np.zeros(0, np.float32), SR) == []
    with pytest.raises(ValueError, match="mono"):
        vad(np.zeros((2, SR), np.float32), SR)
    with pytest.raises(ValueError, match="min_speech_s"):
        EnergyVad(min_speech_s=-1.0)
    with pytest.raises(
        ValueError, match="unknown VAD method 'webrtc'; choose one of energy, silero"
    ):
        make_vad("webrtc")


def test_silero_finds_real_speech_and_excludes_the_silence(speech, shared_data):
    pytest.importorskip("silero_vad")
    vad = make_vad("silero")
    assert isinstance(vad, SileroVad)
    padded = _pad(speech, 1.0, 1.5, noise_db=-70.0)
    found = _spans(vad(padded, SR))
    speech_end = 1.0 + len(speech) / SR
    assert found, "Silero found no speech in a real utterance"
    assert found[0][0] >= 1.0 - vad.pad_s - 0.05 and found[-1][1] <= speech_end + vad.pad_s + 0.05
    assert sum(e - s for s, e in found) > 0.5 * len(speech) / SR
    # The loudest part of the utterance is speech.
    loudest = 1.0 + int(np.argmax(np.abs(speech))) / SR
    assert any(s <= loudest <= e for s, e in found)
    assert vad(np.zeros(2 * SR, np.float32), SR) == []
    # 8 kHz audio (FSDD) runs at its own rate; 44.1 kHz is resampled first.
    digit = load_audio(shared_data / "fsdd" / "recordings" / "0_george_0.wav", 8000)
    digit_padded = np.concatenate([np.zeros(8000, np.float32), digit, np.zeros(8000, np.float32)])
    at_8k = _spans(SileroVad(min_speech_s=0.05)(digit_padded, 8000))
    # Silero's 32 ms windows and its hangover put the end up to a few windows late.
    assert at_8k and at_8k[0][0] >= 1.0 - 0.1 and at_8k[-1][1] <= 1.0 + len(digit) / 8000 + 0.2
