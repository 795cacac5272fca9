"""The result of diarizing one recording: speaker turns (RTTM's), with what each speaker is."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from speakerprint.data.rttm import Turn, format_rttm, write_rttm

__all__ = ["DiarizationResult", "SpeakerCluster"]


@dataclass(frozen=True)
class SpeakerCluster:
    """One speaker found in a recording.

    Attributes:
        label: ``SPEAKER_00``, ... in order of first appearance, or an enrolled speaker's name.
        num_windows: embedding windows clustered into this speaker.
        speech_s: seconds of turns given to this speaker.
        enrolled_score: cosine of the cluster's centroid with the enrolled speaker it was named
            after, or None when it was not named.
    """

    label: str
    num_windows: int
    speech_s: float
    enrolled_score: float | None = None


@dataclass(frozen=True)
class DiarizationResult:
    """Who spoke when in one recording.

    Iterating gives ``(start_s, end_s, speaker)`` in time order, as pyannote's
    ``Annotation.itertracks(yield_label=True)`` does (without the track).

    >>> result = diarize("meeting.wav")  # doctest: +SKIP
    >>> for start, end, speaker in result:  # doctest: +SKIP
    ...     print(f"{start:.1f} {end:.1f} {speaker}")
    >>> result.write_rttm("meeting.rttm")  # doctest: +SKIP
    """

    file_id: str
    turns: list[Turn]
    clusters: list[SpeakerCluster]
    duration_s: float
    method: str
    threshold: float
    threshold_source: str
    notes: list[str] = field(default_factory=list)

    def __iter__(self) -> Iterator[tuple[float, float, str]]:
        for turn in self.turns:
            yield turn.start_s, turn.end_s, turn.speaker

    def __len__(self) -> int:
        return len(self.turns)

    def labels(self) -> list[str]:
        """The speakers, in order of first appearance."""
        return [c.label for c in self.clusters]

    @property
    def speakers(self) -> list[str]:
        return self.labels()

    @property
    def speech_s(self) -> float:
        return sum(t.duration_s for t in self.turns)

    def to_rttm(self) -> str:
        """The turns as RTTM text, one ``SPEAKER`` line each."""
        return format_rttm(self.turns)

    def write_rttm(self, path: str | os.PathLike) -> Path:
        return write_rttm(path, self.turns)

    def to_dict(self) -> dict:
        return {
            "file_id": self.file_id,
            "duration_s": self.duration_s,
            "method": self.method,
            "threshold": self.threshold,
            "threshold_source": self.threshold_source,
            "speakers": [
                {
                    "label": c.label,
                    "num_windows": c.num_windows,
                    "speech_s": round(c.speech_s, 3),
                    "enrolled_score": c.enrolled_score,
                }
                for c in self.clusters
            ],
            "turns": [
                {"start_s": round(t.start_s, 3), "end_s": round(t.end_s, 3), "speaker": t.speaker}
                for t in self.turns
            ],
            "notes": list(self.notes),
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)
