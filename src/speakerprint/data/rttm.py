"""RTTM, the NIST "who spoke when" format: one ``SPEAKER`` line per speaker turn.

Each line has ten fields::

    SPEAKER <file> <channel> <onset s> <duration s> <NA> <NA> <speaker> <NA> <NA>

Diarization writes it, and ``eval-diarization`` reads a reference and a hypothesis. Only
``SPEAKER`` lines are turns; other line types (``SPKR-INFO``, ``LEXEME``...) are skipped, as the
NIST scoring tools do.

>>> turns = [Turn("meeting", 0.0, 1.5, "SPEAKER_00"), Turn("meeting", 1.5, 2.0, "alice")]
>>> format_rttm(turns).splitlines()[0]
'SPEAKER meeting 1 0.000 1.500 <NA> <NA> SPEAKER_00 <NA> <NA>'
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from speakerprint.data.manifest import raise_problems, read_text_file
from speakerprint.utils.io import atomic_write_text

__all__ = ["Turn", "format_rttm", "read_rttm", "write_rttm"]


@dataclass(frozen=True)
class Turn:
    """One speaker turn: ``speaker`` talks in ``file_id`` from ``start_s`` for ``duration_s``."""

    file_id: str
    start_s: float
    duration_s: float
    speaker: str
    channel: int = 1

    @property
    def end_s(self) -> float:
        return self.start_s + self.duration_s


def format_rttm(turns: Iterable[Turn]) -> str:
    """The RTTM text of ``turns``, in the order given, times to the millisecond."""
    lines = []
    for turn in turns:
        for name, value in (("file id", turn.file_id), ("speaker", turn.speaker)):
            if not value or any(c.isspace() for c in value):
                raise ValueError(f"RTTM {name} must be one non-empty word, got {value!r}")
        lines.append(
            f"SPEAKER {turn.file_id} {turn.channel} {turn.start_s:.3f} {turn.duration_s:.3f} "
            f"<NA> <NA> {turn.speaker} <NA> <NA>"
        )
    return "".join(line + "\n" for line in lines)


def write_rttm(path: str | os.PathLike, turns: Iterable[Turn]) -> Path:
    """Write ``turns`` to ``path`` atomically."""
    path = Path(path)
    atomic_write_text(path, format_rttm(turns))
    return path


def read_rttm(path: str | os.PathLike) -> dict[str, list[Turn]]:
    """The turns of an RTTM file by file id, each list in onset order.

    Raises:
        ManifestError: the file is missing or unreadable, or lists ``FILE:LINE: problem`` for every
            ``SPEAKER`` line with fewer than 8 fields or an onset or duration that is not a
            finite number >= 0.
    """
    path = Path(path)
    text = read_text_file(path, "RTTM file")
    by_file: dict[str, list[Turn]] = {}
    problems: list[str] = []
    for line_number, line in enumerate(text.splitlines(), start=1):
        fields = line.split()
        if not fields or fields[0] != "SPEAKER":
            continue
        if len(fields) < 8:
            problems.append(
                f"{path}:{line_number}: a SPEAKER line needs 10 fields "
                "(SPEAKER FILE CHANNEL ONSET DURATION <NA> <NA> NAME <NA> <NA>), "
                f"got {len(fields)}"
            )
            continue
        try:
            start, duration = float(fields[3]), float(fields[4])
        except ValueError:
            problems.append(f"{path}:{line_number}: onset and duration must be numbers")
            continue
        if not (math.isfinite(start) and math.isfinite(duration)) or start < 0 or duration < 0:
            problems.append(
                f"{path}:{line_number}: onset and duration must be finite and >= 0, "
                f"got {fields[3]} and {fields[4]}"
            )
            continue
        channel = int(fields[2]) if fields[2].isdigit() else 1
        turn = Turn(fields[1], start, duration, fields[7], channel)
        by_file.setdefault(turn.file_id, []).append(turn)
    raise_problems(path, problems, "RTTM file")
    return {file_id: sorted(turns, key=lambda t: t.start_s) for file_id, turns in by_file.items()}
