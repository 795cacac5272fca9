"""Simulated conversations for diarization: real utterances laid end to end, with pauses and a
chosen amount of overlap, written as audio with its exact RTTM.

Each conversation draws, from a seeded RNG, its number of speakers, which speakers, how many turns,
each turn's utterance, its length (the utterance is cut to it) and the pause before it. The next
turn starts before the previous one ends where that keeps the overlapped share of the speech near
``overlap`` (at most two speakers at once). A turn's reference span runs from the first to the
last speech frame the energy VAD finds in its piece of utterance, so the RTTM holds speech, not the
silence that leads and trails read sentences; pauses within a sentence count as the speaker's turn,
as in references made by hand.

Conversation ``i`` depends only on ``(seed, i)`` and the manifest, so any one can be remade alone
and a run is the same on every machine. Conversations are made and written one at a time.

Which speakers go in is the caller's choice: to measure a model, give a manifest of speakers it
never saw, such as the ``dev.jsonl`` of ``prepare_folder(root, out, dev_speakers=25, seed=0)``,
which holds the shipped model's unseen speakers.

>>> config = SimulationConfig(num_conversations=50, max_speakers=4, overlap=0.1)
>>> summary = write_conversations("prepared/dev.jsonl", "sim/", config)  # doctest: +SKIP
>>> # sim/reference.rttm, sim/conversations.jsonl, sim/audio/conv_0000.wav, sim/rttm/...
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from speakerprint.audio import load_audio
from speakerprint.audio.vad import EnergyVad
from speakerprint.data.manifest import Utterance, read_manifest
from speakerprint.data.rttm import Turn, format_rttm
from speakerprint.errors import ConfigError
from speakerprint.utils.io import atomic_open

__all__ = [
    "Conversation",
    "SimulationConfig",
    "SimulationSummary",
    "overlap_fraction",
    "simulate_conversations",
    "write_conversations",
]

# Overlaps shorter than this are not made (the deficit is carried to a later turn): a few
# frames of overlap is not what overlap in conversation sounds like.
MIN_OVERLAP_S = 0.5
# Loudness of every turn's speech (RMS, dBFS) before a random gain of up to +-GAIN_DB.
LEVEL_DBFS = -24.0
GAIN_DB = 3.0


@dataclass(frozen=True)
class SimulationConfig:
    """How conversations are drawn.

    Attributes:
        num_conversations: how many to make.
        min_speakers, max_speakers: each conversation has a number of speakers drawn uniformly
            in this range.
        overlap: target fraction of speech time where two speakers talk at once, in [0, 0.5).
        pause_s: (min, max) seconds of silence before a turn that does not overlap, uniform.
        turn_s: (min, max) seconds a turn may last, uniform; an utterance longer than the drawn
            length is cut to it, a shorter one is used whole.
        turns_per_speaker: (min, max) turns per speaker, uniform; every speaker talks at least
            once and no speaker takes two turns in a row.
        sample_rate: of the audio written, in Hz.
        seed: conversation ``i`` is drawn from ``numpy.random.default_rng([seed, i])``.
    """

    num_conversations: int = 50
    min_speakers: int = 2
    max_speakers: int = 4
    overlap: float = 0.0
    pause_s: tuple[float, float] = (0.2, 1.0)
    turn_s: tuple[float, float] = (1.5, 6.0)
    turns_per_speaker: tuple[int, int] = (2, 4)
    sample_rate: int = 16000
    seed: int = 0

    def check(self) -> None:
        """Raise ConfigError naming the first setting that cannot be drawn from."""
        if self.num_conversations < 0:
            raise ConfigError(f"num_conversations must be >= 0, got {self.num_conversations}")
        if not 1 <= self.min_speakers <= self.max_speakers:
            raise ConfigError(
                "need 1 <= min_speakers <= max_speakers, "
                f"got {self.min_speakers} and {self.max_speakers}"
            )
        if not (0.0 <= self.overlap < 0.5):
            raise ConfigError(f"overlap must be in [0, 0.5), got {self.overlap}")
        for name, (low, high) in (("pause_s", self.pause_s), ("turn_s", self.turn_s)):
            if not (math.isfinite(low) and math.isfinite(high) and 0 <= low <= high):
                raise ConfigError(
                    f"{name} must be (min, max) with 0 <= min <= max, got {low, high}"
                )
        if self.turn_s[0] <= 0:
            raise ConfigError(f"turn_s must be > 0, got {self.turn_s}")
        low, high = self.turns_per_speaker
        if not 1 <= low <= high:
            raise ConfigError(f"turns_per_speaker must have 1 <= min <= max, got {low, high}")
        if self.sample_rate <= 0:
            raise ConfigError(f"sample_rate must be > 0, got {self.sample_rate}")


@dataclass
class Conversation:
    """One simulated conversation: ``wav`` (float32 mono at ``sample_rate``) and its ``turns``
    (onset order, times exact to the sample), and the utterance each turn was cut from."""

    file_id: str
    wav: np.ndarray
    sample_rate: int
    turns: list[Turn]
    utt_ids: list[str]

    @property
    def duration_s(self) -> float:
        return len(self.wav) / self.sample_rate

    @property
    def speakers(self) -> list[str]:
        return sorted({t.speaker for t in self.turns})


@dataclass(frozen=True)
class SimulationSummary:
    """What :func:`write_conversations` wrote."""

    out_dir: Path
    index: Path
    reference_rttm: Path
    num_conversations: int
    total_s: float
    speech_s: float
    overlap_fraction: float
    speakers_per_conversation: dict[int, int] = field(default_factory=dict)

    def summary(self) -> str:
        counts = ", ".join(
            f"{n} speakers: {c}" for n, c in sorted(self.speakers_per_conversation.items())
        )
        return (
            f"{self.num_conversations} conversations ({counts}), {self.total_s / 60:.1f} min of "
            f"audio, {self.speech_s / 60:.1f} min of speech, {100 * self.overlap_fraction:.1f}% of "
            f"it overlapped -> {self.out_dir}\n"
            f"reference: {self.reference_rttm}\nindex: {self.index}"
        )


def overlap_fraction(turns: Sequence[Turn]) -> float:
    """Time where two or more turns overlap over time where at least one is on (0 if none)."""
    overlapped, union = _overlap_and_union(turns)
    return overlapped / union if union > 0 else 0.0


def _overlap_and_union(turns: Sequence[Turn]) -> tuple[float, float]:
    events = sorted([(t.start_s, 1) for t in turns] + [(t.end_s, -1) for t in turns])
    overlapped = union = 0.0
    active, last = 0, 0.0
    for time, step in events:
        if active >= 1:
            union += time - last
        if active >= 2:
            overlapped += time - last
        active, last = active + step, time
    return overlapped, union


def _by_speaker(utterances: Sequence[Utterance]) -> dict[str, list[Utterance]]:
    by_speaker: dict[str, list[Utterance]] = {}
    for utt in sorted(utterances, key=lambda u: u.utt_id):
        by_speaker.setdefault(utt.speaker, []).append(utt)
    return by_speaker


def _speaker_order(rng: np.random.Generator, speakers: list[str], num_turns: int) -> list[str]:
    """Every speaker once in a random order, then random speakers, never the same twice running."""
    order = [speakers[i] for i in rng.permutation(len(speakers))]
    while len(order) < num_turns:
        others = [s for s in speakers if s != order[-1]]
        order.append(others[int(rng.integers(len(others)))])
    return order


def _speech_piece(
    utt: Utterance, rng: np.random.Generator, config: SimulationConfig, vad: EnergyVad
) -> np.ndarray:
    """The utterance from its first speech frame, cut to a drawn turn length and back to its
    last speech frame, at a drawn loudness."""
    sr = config.sample_rate
    offset = utt.offset_s or 0.0
    wav = load_audio(
        utt.path, sr, start_s=offset, duration_s=utt.duration_s if utt.offset_s else None
    )
    segments = vad(wav, sr)
    if segments:
        start = int(segments[0].start_s * sr)
        limit = start + int(rng.uniform(*config.turn_s) * sr)
        end = max(
            min(int(math.ceil(s.end_s * sr)), limit) for s in segments if s.start_s * sr < limit
        )
        wav = wav[start : min(end, len(wav))]
    else:  # no frame over the VAD's threshold: the whole cut is taken as speech
        wav = wav[: int(rng.uniform(*config.turn_s) * sr)]
    rms = float(np.sqrt(np.mean(np.square(wav, dtype=np.float64)))) if len(wav) else 0.0
    gain_db = LEVEL_DBFS + rng.uniform(-GAIN_DB, GAIN_DB)
    return (wav * (10 ** (gain_db / 20) / rms if rms > 0 else 1.0)).astype(np.float32)


def _onsets(
    lengths: list[int], rng: np.random.Generator, config: SimulationConfig
) -> tuple[list[int], int]:
    """Onset of each turn in samples, and the conversation's length.

    A turn overlaps the previous one by what brings overlapped / speech time to the target
    (solving (O + d) / (U + L - d) = r for d), when that is at least half MIN_OVERLAP_S (then
    made at least MIN_OVERLAP_S long) and the overlap leaves the turn before the previous one
    finished (two speakers at most); otherwise it follows a pause.
    """
    sr, r = config.sample_rate, config.overlap
    onsets: list[int] = []
    union = overlapped = 0  # samples of speech and of overlapped speech so far
    prev_start = prev_end = before_prev_end = 0
    for length in lengths:
        pause = int(rng.uniform(*config.pause_s) * sr)
        if not onsets:
            start = pause
        else:
            wanted = (r * (union + length) - overlapped) / (1 + r)
            room = min(prev_end - max(prev_start, before_prev_end), length) // 2
            shortest = MIN_OVERLAP_S * sr
            if r > 0 and wanted >= shortest / 2 and room >= shortest:
                # rounded up to the shortest overlap rather than down to none, so the
                # fraction made is not biased under the target
                start = prev_end - int(min(max(wanted, shortest), room))
            else:
                start = prev_end + pause
        overlap = max(prev_end - start, 0) if onsets else 0
        union += length - overlap
        overlapped += overlap
        before_prev_end, prev_start, prev_end = prev_end, start, start + length
        onsets.append(start)
    tail = int(rng.uniform(*config.pause_s) * sr)
    return onsets, prev_end + tail


def _conversation(
    index: int, by_speaker: dict[str, list[Utterance]], config: SimulationConfig, vad: EnergyVad
) -> Conversation:
    rng = np.random.default_rng([config.seed, index])
    names = sorted(by_speaker)
    num_speakers = int(rng.integers(config.min_speakers, config.max_speakers + 1))
    speakers = [names[i] for i in sorted(rng.choice(len(names), num_speakers, replace=False))]
    num_turns = num_speakers * int(
        rng.integers(config.turns_per_speaker[0], config.turns_per_speaker[1] + 1)
    )
    order = _speaker_order(rng, speakers, num_turns)
    unused = {s: list(by_speaker[s]) for s in speakers}
    pieces, utt_ids = [], []
    for speaker in order:
        if not unused[speaker]:  # every utterance of the speaker used: draw again from all
            unused[speaker] = list(by_speaker[speaker])
        utt = unused[speaker].pop(int(rng.integers(len(unused[speaker]))))
        pieces.append(_speech_piece(utt, rng, config, vad))
        utt_ids.append(utt.utt_id)
    onsets, num_samples = _onsets([len(p) for p in pieces], rng, config)
    wav = np.zeros(num_samples, np.float32)
    for onset, piece in zip(onsets, pieces):
        wav[onset : onset + len(piece)] += piece
    peak = float(np.max(np.abs(wav))) if num_samples else 0.0
    if peak > 0.99:
        wav *= 0.99 / peak
    file_id = f"conv_{index:04d}"
    sr = config.sample_rate
    turns = [
        Turn(file_id, onset / sr, len(piece) / sr, speaker)
        for onset, piece, speaker in zip(onsets, pieces, order)
    ]
    return Conversation(file_id, wav, sr, turns, utt_ids)


def simulate_conversations(
    utterances: Sequence[Utterance], config: SimulationConfig
) -> Iterator[Conversation]:
    """Yield ``config.num_conversations`` conversations one at a time (only one in memory).

    Raises:
        ConfigError: a setting that cannot be drawn from, or fewer speakers in ``utterances``
            than ``config.max_speakers``.
        AudioLoadError: an utterance's audio cannot be read (names the file).
    """
    config.check()
    by_speaker = _by_speaker(utterances)
    if len(by_speaker) < config.max_speakers:
        raise ConfigError(
            f"conversations of up to {config.max_speakers} speakers need as many speakers, "
            f"the utterances have {len(by_speaker)}"
        )
    vad = EnergyVad()
    for index in range(config.num_conversations):
        yield _conversation(index, by_speaker, config, vad)


def _write_wav(path: Path, wav: np.ndarray, sample_rate: int) -> None:
    import soundfile as sf

    with atomic_open(path, "wb") as f:
        sf.write(f, wav, sample_rate, format="WAV", subtype="PCM_16")


def write_conversations(
    manifest: str | os.PathLike, out_dir: str | os.PathLike, config: SimulationConfig
) -> SimulationSummary:
    """Simulate conversations from the utterances of ``manifest`` and write, in ``out_dir``:

    - ``audio/<file_id>.wav``: 16-bit PCM at ``config.sample_rate``;
    - ``rttm/<file_id>.rttm``: its reference turns;
    - ``reference.rttm``: every conversation's turns, for ``eval-diarization``;
    - ``conversations.jsonl``: one line per conversation: file id, audio and RTTM paths
      (relative to ``out_dir``), duration, speakers, overlap fraction, utterance ids.

    Every file is written atomically; the index and ``reference.rttm`` appear once all
    conversations are written.
    """
    out_dir = Path(out_dir)
    utterances = read_manifest(manifest)
    conversations = simulate_conversations(utterances, config)  # checks config before writing
    total = speech = overlapped = 0.0
    counts: dict[int, int] = {}
    index, reference = out_dir / "conversations.jsonl", out_dir / "reference.rttm"
    with (
        atomic_open(index, "w", encoding="utf-8") as index_file,
        atomic_open(reference, "w", encoding="utf-8") as reference_file,
    ):
        for conv in conversations:
            audio_rel, rttm_rel = f"audio/{conv.file_id}.wav", f"rttm/{conv.file_id}.rttm"
            _write_wav(out_dir / audio_rel, conv.wav, conv.sample_rate)
            rttm_text = format_rttm(conv.turns)
            with atomic_open(out_dir / rttm_rel, "w", encoding="utf-8") as f:
                f.write(rttm_text)
            reference_file.write(rttm_text)
            conv_overlap, conv_speech = _overlap_and_union(conv.turns)
            record = {
                "file_id": conv.file_id,
                "audio": audio_rel,
                "rttm": rttm_rel,
                "duration_s": round(conv.duration_s, 3),
                "num_speakers": len(conv.speakers),
                "speakers": conv.speakers,
                "overlap_fraction": round(conv_overlap / conv_speech, 4) if conv_speech else 0.0,
                "utt_ids": conv.utt_ids,
            }
            index_file.write(json.dumps(record) + "\n")
            total += conv.duration_s
            speech += conv_speech
            overlapped += conv_overlap
            counts[len(conv.speakers)] = counts.get(len(conv.speakers), 0) + 1
    return SimulationSummary(
        out_dir=out_dir,
        index=index,
        reference_rttm=reference,
        num_conversations=sum(counts.values()),
        total_s=total,
        speech_s=speech,
        overlap_fraction=overlapped / speech if speech else 0.0,
        speakers_per_conversation=counts,
    )
