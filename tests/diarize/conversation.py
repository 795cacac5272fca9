"""Conversations built from real speech with known turns, for the diarization tests.

Utterances of each speaker are laid end to end in turns (speaker order cycles), separated by
short silences; the true turns are the utterances' spans. Small enough for a test: a few
utterances per speaker, cut to ``max_utt_s``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile as sf

from speakerprint.audio import load_audio
from speakerprint.audio.vad import EnergyVad
from speakerprint.data.rttm import Turn

SAMPLE_RATE = 16000
VAD = EnergyVad(pad_s=0.0)
#: Dev speakers of the shipped model (never seen in its training), far apart in voice:
#: an adult man (25), an adult woman (21), a boy (6).
WELL_SEPARATED = ("SPEAKER1260", "SPEAKER0036", "SPEAKER0001")


def build_conversation(
    speech_root: Path,
    speakers: tuple[str, ...],
    out: Path,
    *,
    turns_per_speaker: int = 3,
    pause_s: float = 0.4,
    max_utt_s: float = 4.0,
    noise_floor: bool = True,
) -> list[Turn]:
    """Write ``out`` (16 kHz WAV) and return its true turns (speaker = the folder name)."""
    files = {s: sorted((speech_root / s).glob("*.opus"))[:turns_per_speaker] for s in speakers}
    pause = np.zeros(round(pause_s * SAMPLE_RATE), np.float32)
    pieces, turns, cursor = [pause], [], len(pause)
    for i in range(turns_per_speaker):
        for speaker in speakers:
            wav = load_audio(files[speaker][i], SAMPLE_RATE)[: round(max_utt_s * SAMPLE_RATE)]
            speech = VAD(wav, SAMPLE_RATE)  # the turn is the speech, not the utterance's edges
            wav = wav[
                round(speech[0].start_s * SAMPLE_RATE) : round(speech[-1].end_s * SAMPLE_RATE)
            ]
            wav = wav / max(float(np.abs(wav).max()), 1e-6) * 0.5
            turns.append(Turn(out.stem, cursor / SAMPLE_RATE, len(wav) / SAMPLE_RATE, speaker))
            pieces += [wav, pause]
            cursor += len(wav) + len(pause)
    # A room's noise floor (-60 dBFS) under everything: digital zeros are no recording's
    # silence, and windows that reach into them embed as their edges, not their speaker.
    audio = np.concatenate(pieces)
    if noise_floor:
        audio += np.random.default_rng(0).normal(0.0, 1e-3, len(audio)).astype(np.float32)
    sf.write(out, audio, SAMPLE_RATE)
    return turns


def frame_error(reference: list[Turn], hypothesis: list[Turn], *, step_s: float = 0.01):
    """(speech error rate, confusion rate) on a frame grid: missed + false alarm + confusion
    over reference speech, and confusion alone, with the hypothesis speakers mapped one to one
    onto the reference ones to the most overlap (no collar, no overlap in the references)."""
    from itertools import permutations

    end = max([t.end_s for t in reference + hypothesis] + [0.0])
    n = int(np.ceil(end / step_s)) + 1
    ref_names = sorted({t.speaker for t in reference})
    hyp_names = sorted({t.speaker for t in hypothesis})

    def grid(turns, names):
        g = np.full(n, -1)
        for t in turns:
            g[int(round(t.start_s / step_s)) : int(round(t.end_s / step_s))] = names.index(
                t.speaker
            )
        return g

    ref, hyp = grid(reference, ref_names), grid(hypothesis, hyp_names)
    best = None
    size = max(len(ref_names), len(hyp_names))
    for perm in permutations(range(size), len(hyp_names)):
        mapped = np.where(hyp >= 0, np.array(perm + (-1,))[hyp], -1)
        confused = int(((ref >= 0) & (mapped >= 0) & (ref != mapped)).sum())
        if best is None or confused < best[0]:
            best = (confused, mapped)
    confused = best[0] if best else 0
    speech = int((ref >= 0).sum())
    missed = int(((ref >= 0) & (hyp < 0)).sum())
    false_alarm = int(((ref < 0) & (hyp >= 0)).sum())
    return (missed + false_alarm + confused) / speech, confused / speech
