"""Utterance manifests: JSON Lines, one utterance per line.

Each line is an object with exactly these fields::

    {"utt_id": "id10001/1zcIwhmdeo4/00001.wav", "path": "/data/vox1/id10001/1zcIwhmdeo4/00001.wav",
     "speaker": "id10001", "duration_s": 8.12, "sample_rate": 16000}

``utt_id`` is unique within a manifest and is the name trial lists use. A relative ``path`` is
relative to the folder holding the manifest, so a manifest can travel with its audio.

>>> utts = [Utterance("spk1/a.wav", "/data/spk1/a.wav", "spk1", 2.5, 16000)]
>>> write_manifest("train.jsonl", utts)  # doctest: +SKIP
>>> read_manifest("train.jsonl") == utts  # doctest: +SKIP
True
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path

from speakerprint.errors import ManifestError
from speakerprint.utils.io import atomic_open

__all__ = ["Utterance", "read_manifest", "speakers", "write_manifest"]

# A message lists at most this many problems; the rest are counted, not shown.
MAX_LISTED_PROBLEMS = 20

_FIELD_TYPES: dict[str, tuple[type, ...]] = {
    "utt_id": (str,),
    "path": (str,),
    "speaker": (str,),
    "duration_s": (int, float),
    "sample_rate": (int,),
}


@dataclass(frozen=True)
class Utterance:
    """One audio file of one speaker.

    Attributes:
        utt_id: unique name of the utterance, by convention its path relative to the data root.
        path: where the audio is; absolute once read from a manifest.
        speaker: speaker label.
        duration_s: length in seconds.
        sample_rate: sample rate of the file in Hz, before any resampling.
    """

    utt_id: str
    path: str
    speaker: str
    duration_s: float
    sample_rate: int


def raise_problems(path: str | os.PathLike, problems: list[str], what: str) -> None:
    """Raise one ManifestError listing ``problems`` (each ``FILE:LINE: text``); nothing if empty.

    Shared by the manifest and trial readers, so that every bad line is reported at once.
    """
    if not problems:
        return
    shown = problems[:MAX_LISTED_PROBLEMS]
    lines = [f"{path}: {len(problems)} problem(s) in {what}:"] + [f"  {p}" for p in shown]
    if len(problems) > len(shown):
        lines.append(f"  ... and {len(problems) - len(shown)} more")
    raise ManifestError("\n".join(lines))


def read_text_file(path: Path, what: str) -> str:
    """The file's text, or a ManifestError saying the ``what`` (manifest, trial list) is unreadable."""
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ManifestError(f"{what} not found: {path}") from None
    except (OSError, UnicodeDecodeError) as err:
        raise ManifestError(f"cannot read {what} {path}: {err}") from None


def _check_record(record: object) -> list[str]:
    """Problems of one decoded line, in words; empty when the line is a valid utterance."""
    if not isinstance(record, dict):
        return [f"expected a JSON object, got {type(record).__name__}"]
    problems = []
    missing = [name for name in _FIELD_TYPES if name not in record]
    if missing:
        problems.append(f"missing field(s) {', '.join(missing)}")
    extra = sorted(name for name in record if name not in _FIELD_TYPES)
    if extra:
        problems.append(f"unknown field(s) {', '.join(extra)}")
    for name, types in _FIELD_TYPES.items():
        if name not in record:
            continue
        value = record[name]
        # bool is an int in Python, but `"sample_rate": true` is a mistake, not a rate.
        if isinstance(value, bool) or not isinstance(value, types):
            expected = "a number" if float in types else types[0].__name__
            problems.append(f"{name} must be {expected}, got {_show(value)}")
        elif isinstance(value, str) and not value.strip():
            problems.append(f"{name} is empty")
    duration = record.get("duration_s")
    if _is_number(duration) and not (math.isfinite(duration) and duration >= 0):
        problems.append(f"duration_s must be finite and >= 0, got {duration}")
    sample_rate = record.get("sample_rate")
    if _is_number(sample_rate) and isinstance(sample_rate, int) and sample_rate <= 0:
        problems.append(f"sample_rate must be positive, got {sample_rate}")
    return problems


def _show(value: object) -> str:
    try:
        return json.dumps(value)
    except (TypeError, ValueError):
        return f"{value!r} ({type(value).__name__})"


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def read_manifest(path: str | os.PathLike) -> list[Utterance]:
    """Read a JSONL manifest, checking every line; relative audio paths become absolute.

    Empty lines are ignored. Every problem in the file (malformed JSON, missing, unknown or
    wrongly typed fields, a duplicate ``utt_id``, a negative duration) is collected and raised
    together.

    Raises:
        ManifestError: the file is missing or unreadable, or lists ``FILE:LINE: problem`` for
            every bad line.
    """
    path = Path(path)
    text = read_text_file(path, "manifest")
    # Not resolve(): keep symlinked data folders as the user named them.
    folder = Path(os.path.abspath(path)).parent
    utts: list[Utterance] = []
    problems: list[str] = []
    first_line_of: dict[str, int] = {}
    for line_number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            problems.append(f"{path}:{line_number}: malformed JSON: {err.msg} (column {err.colno})")
            continue
        line_problems = _check_record(record)
        if not line_problems:
            utt_id = record["utt_id"]
            if utt_id in first_line_of:
                line_problems.append(
                    f"duplicate utt_id {utt_id!r} (first on line {first_line_of[utt_id]})"
                )
            else:
                first_line_of[utt_id] = line_number
        if line_problems:
            problems.extend(f"{path}:{line_number}: {p}" for p in line_problems)
            continue
        utts.append(
            Utterance(
                utt_id=record["utt_id"],
                path=str(folder / record["path"]),  # an absolute path replaces folder
                speaker=record["speaker"],
                duration_s=float(record["duration_s"]),
                sample_rate=record["sample_rate"],
            )
        )
    raise_problems(path, problems, "manifest")
    return utts


def write_manifest(path: str | os.PathLike, utts: Iterable[Utterance]) -> None:
    """Write utterances as a JSONL manifest, atomically, in the order given.

    Paths are written as they are in ``utts``; relative ones will be read back relative to the
    manifest's folder.

    Raises:
        ValueError: an utterance that :func:`read_manifest` would reject (a duplicate ``utt_id``,
            a wrong type, a negative duration), so that no unreadable manifest gets written.
    """
    lines = []
    seen: set[str] = set()
    for utt in utts:
        record = asdict(utt)
        problems = _check_record(record)
        if utt.utt_id in seen:
            problems.append("duplicate utt_id: a manifest needs unique ids")
        if problems:
            raise ValueError(f"cannot write utterance {utt.utt_id!r}: {'; '.join(problems)}")
        seen.add(utt.utt_id)
        lines.append(json.dumps(record, ensure_ascii=False) + "\n")
    with atomic_open(path, "w", encoding="utf-8") as f:
        f.writelines(lines)


def speakers(utts: Iterable[Utterance]) -> list[str]:
    """Sorted distinct speaker labels of ``utts``."""
    return sorted({utt.speaker for utt in utts})
