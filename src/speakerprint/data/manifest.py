"""Utterance manifests: JSON Lines, one utterance per line.

Each line is an object with these five fields::

    {"utt_id": "id10001/1zcIwhmdeo4/00001.wav", "path": "/data/vox1/id10001/1zcIwhmdeo4/00001.wav",
     "speaker": "id10001", "duration_s": 8.12, "sample_rate": 16000}

and optionally ``offset_s`` (the utterance is the span ``[offset_s, offset_s + duration_s)`` of
the file, e.g. one speech segment found by voice activity detection; without it, the whole file)
and ``gender`` (as the corpus states it, by convention ``"f"`` or ``"m"``). A field that is not
set is not written, so manifests without them stay exactly as they were.

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
from collections.abc import Iterable, Iterator
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
# Fields a line may hold or leave out; left out, the Utterance holds None.
_OPTIONAL_FIELD_TYPES: dict[str, tuple[type, ...]] = {
    "offset_s": (int, float),
    "gender": (str,),
}
_ALL_FIELD_TYPES = {**_FIELD_TYPES, **_OPTIONAL_FIELD_TYPES}


# slots: no per-object __dict__, about a third less memory for a million utterances.
@dataclass(frozen=True, slots=True)
class Utterance:
    """One audio file of one speaker.

    Attributes:
        utt_id: unique name of the utterance, by convention its path relative to the data root.
        path: where the audio is; absolute once read from a manifest.
        speaker: speaker label.
        duration_s: length in seconds.
        sample_rate: sample rate of the file in Hz, before any resampling.
        offset_s: where the utterance starts in the file, in seconds; ``duration_s`` is then the
            length of that span. None: the utterance is the whole file.
        gender: the speaker's gender as the corpus states it (``"f"``, ``"m"``), or None.
    """

    utt_id: str
    path: str
    speaker: str
    duration_s: float
    sample_rate: int
    offset_s: float | None = None
    gender: str | None = None


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


def iter_text_lines(path: Path, what: str) -> Iterator[str]:
    """The file's lines one at a time (never the whole text at once), without their line
    ends; the same errors as :func:`read_text_file`, and a line that is not UTF-8 is named."""
    try:
        f = open(path, "rb")
    except FileNotFoundError:
        raise ManifestError(f"{what} not found: {path}") from None
    except OSError as err:
        raise ManifestError(f"cannot read {what} {path}: {err}") from None
    with f:
        try:
            for number, raw in enumerate(f, start=1):
                try:
                    yield raw.decode("utf-8").rstrip("\r\n")
                except UnicodeDecodeError as err:
                    raise ManifestError(
                        f"cannot read {what} {path}: line {number} is not UTF-8 ({err.reason} "
                        f"at byte {err.start})"
                    ) from None
        except OSError as err:
            raise ManifestError(f"cannot read {what} {path}: {err}") from None


def _check_record(record: object) -> list[str]:
    """Problems of one decoded line, in words; empty when the line is a valid utterance."""
    if not isinstance(record, dict):
        return [f"expected a JSON object, got {type(record).__name__}"]
    problems = []
    missing = [name for name in _FIELD_TYPES if name not in record]
    if missing:
        problems.append(f"missing field(s) {', '.join(missing)}")
    extra = sorted(name for name in record if name not in _ALL_FIELD_TYPES)
    if extra:
        problems.append(f"unknown field(s) {', '.join(extra)}")
    for name, types in _ALL_FIELD_TYPES.items():
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
    offset = record.get("offset_s")
    if _is_number(offset) and not (math.isfinite(offset) and offset >= 0):
        problems.append(f"offset_s must be finite and >= 0, got {offset}")
    return problems


_INF = float("inf")


def _looks_valid(record: object) -> bool:
    """A quick test that passes the usual valid line; False sends the line to _check_record.

    Only a shortcut: a line it lets through would get no problem from :func:`_check_record`
    either (exact type tests exclude bool; ``not 0 <= x < inf`` also catches NaN).
    """
    if type(record) is not dict:
        return False
    get = record.get
    utt_id, path, speaker = get("utt_id"), get("path"), get("speaker")
    duration, sample_rate = get("duration_s"), get("sample_rate")
    known = 5
    if len(record) > 5:
        offset = get("offset_s")
        if offset is not None:
            if not ((type(offset) is float or type(offset) is int) and 0 <= offset < _INF):
                return False
            known += 1
        gender = get("gender")
        if gender is not None:
            if not (type(gender) is str and gender and not gender.isspace()):
                return False
            known += 1
        if len(record) != known:
            return False
    return (
        type(utt_id) is str
        and type(path) is str
        and type(speaker) is str
        and bool(utt_id)
        and bool(path)
        and bool(speaker)
        and not (utt_id.isspace() or path.isspace() or speaker.isspace())
        and (type(duration) is float or type(duration) is int)
        and 0 <= duration < _INF
        and type(sample_rate) is int
        and sample_rate > 0
    )


def _join(folder: str, path: str) -> str:
    """``str(Path(folder) / path)``, without building Paths when ``path`` needs no normalising."""
    if "//" in path or "/./" in path or path.startswith("./") or path.endswith(("/", "/.")):
        return str(Path(folder) / path)
    if path.startswith("/"):
        return path
    if path == ".":
        return folder
    return f"{folder}/{path}" if folder != "/" else f"/{path}"


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
    wrongly typed fields, a duplicate ``utt_id``, a negative duration or offset) is collected
    and raised together. A million lines take a few seconds (``bench/manifest_load.py``).

    Raises:
        ManifestError: the file is missing or unreadable, or lists ``FILE:LINE: problem`` for
            every bad line.
    """
    path = Path(path)
    # Not resolve(): keep symlinked data folders as the user named them.
    folder = str(Path(os.path.abspath(path)).parent)
    utts: list[Utterance] = []
    problems: list[str] = []
    first_line_of: dict[str, int] = {}
    # One string per speaker, gender and rate for the whole manifest, not one per line.
    shared: dict[object, object] = {}
    # The C scanner without json.loads' wrapper: a large share of the time for big manifests.
    scan = json.JSONDecoder().scan_once
    for line_number, line in enumerate(iter_text_lines(path, "manifest"), start=1):
        try:
            record, end = scan(line, 0)
            if end != len(line) and not line[end:].isspace():
                raise ValueError("extra data")
        except (StopIteration, ValueError):
            # Not one plain JSON value: empty, leading whitespace or malformed; json.loads decides.
            try:
                record = json.loads(line)
            except json.JSONDecodeError as err:
                if not line.strip():
                    continue
                problems.append(
                    f"{path}:{line_number}: malformed JSON: {err.msg} (column {err.colno})"
                )
                continue
        line_problems = [] if _looks_valid(record) else _check_record(record)
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
        offset = record.get("offset_s")
        gender = record.get("gender")
        utts.append(
            Utterance(
                utt_id,
                _join(folder, record["path"]),  # an absolute path replaces folder
                shared.setdefault(record["speaker"], record["speaker"]),
                float(record["duration_s"]),
                shared.setdefault(record["sample_rate"], record["sample_rate"]),
                None if offset is None else float(offset),
                None if gender is None else shared.setdefault(gender, gender),
            )
        )
    raise_problems(path, problems, "manifest")
    return utts


def _record(utt: Utterance) -> dict:
    """The JSON object of one line: the five fields, and the optional ones that are set."""
    record = asdict(utt)
    for name in _OPTIONAL_FIELD_TYPES:
        if record[name] is None:
            del record[name]
    return record


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
        record = _record(utt)
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
