"""Check a manifest (and trial lists) before a long run: every problem at once, with line numbers.

A run of days should not die at hour ten on line 812,004. :func:`check_manifest` reads every line
of a manifest and reports malformed JSON, missing or wrongly typed fields, duplicate ids and audio
files that do not exist; with ``scan=True`` it also decodes every file and checks that it holds
finite, non-silent audio whose sample rate and duration agree with the manifest. Trial lists are
checked line by line, including ids that the manifest does not hold.

>>> report = check_manifest("train.jsonl", trials=["dev_trials.txt"], scan=True)  # doctest: +SKIP
>>> report.ok, report.summary()  # doctest: +SKIP
(True, 'OK: 2646 utterances, 2646 files scanned, 4000 trials in 1 list(s), no problems')
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from speakerprint.audio import AudioLoadError, audio_info, load_audio
from speakerprint.data.manifest import _check_record, read_text_file
from speakerprint.errors import ManifestError

__all__ = ["CheckReport", "check_manifest"]

# A file whose peak is below this (-80 dBFS) holds no usable speech.
SILENCE_PEAK = 1e-4
# The manifest's duration may differ from the decoded one by this much (header rounding,
# codec priming), in seconds or as a fraction of the duration, whichever is larger.
DURATION_TOLERANCE_S = 0.1
DURATION_TOLERANCE_FRACTION = 0.02


@dataclass
class CheckReport:
    """What :func:`check_manifest` found. ``problems`` are ``FILE:LINE: text`` lines."""

    manifest: str
    problems: list[str] = field(default_factory=list)
    num_utterances: int = 0  # valid manifest lines
    num_scanned: int = 0  # files decoded (scan=True)
    num_trials: int = 0  # valid trial lines over all lists
    num_trial_lists: int = 0

    @property
    def ok(self) -> bool:
        return not self.problems

    def summary(self) -> str:
        scanned = f", {self.num_scanned} files scanned" if self.num_scanned else ""
        trials = (
            f", {self.num_trials} trials in {self.num_trial_lists} list(s)"
            if self.num_trial_lists
            else ""
        )
        verdict = "OK" if self.ok else "FAILED"
        found = "no problems" if self.ok else f"{len(self.problems)} problem(s)"
        return f"{verdict}: {self.num_utterances} utterances{scanned}{trials}, {found}"


def check_manifest(
    manifest: str | os.PathLike,
    *,
    trials: Sequence[str | os.PathLike] = (),
    scan: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> CheckReport:
    """Check ``manifest`` and the trial lists ``trials``; never raises for what it finds.

    Args:
        manifest: a JSONL manifest (see :mod:`speakerprint.data.manifest`).
        trials: trial lists whose ids must all be in the manifest.
        scan: also decode every audio file (slow: reads all the audio).
        progress: called as ``progress(done, total)`` while scanning.

    Raises:
        ManifestError: the manifest itself cannot be read (missing, not UTF-8).
    """
    path = Path(manifest)
    report = CheckReport(manifest=str(path))
    text = read_text_file(path, "manifest")
    folder = Path(os.path.abspath(path)).parent
    first_line_of: dict[str, int] = {}
    to_scan: list[tuple[int, dict, Path]] = []
    for line_number, line in enumerate(text.splitlines(), start=1):
        where = f"{path}:{line_number}"
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            report.problems.append(f"{where}: malformed JSON: {err.msg} (column {err.colno})")
            continue
        problems = _check_record(record)
        if problems:
            report.problems.extend(f"{where}: {p}" for p in problems)
            continue
        utt_id = record["utt_id"]
        if utt_id in first_line_of:
            report.problems.append(
                f"{where}: duplicate utt_id {utt_id!r} (first on line {first_line_of[utt_id]})"
            )
            continue
        first_line_of[utt_id] = line_number
        report.num_utterances += 1
        audio = folder / record["path"]
        if not audio.is_file():
            what = "is not a file" if audio.exists() else "does not exist"
            report.problems.append(f"{where}: audio file {audio} {what}")
            continue
        to_scan.append((line_number, record, audio))

    if scan:
        for done, (line_number, record, audio) in enumerate(to_scan, start=1):
            report.problems.extend(f"{path}:{line_number}: {p}" for p in _scan_file(audio, record))
            report.num_scanned += 1
            if progress is not None:
                progress(done, len(to_scan))

    for trial_path in trials:
        _check_trials(Path(trial_path), first_line_of, report)
    return report


def _scan_file(audio: Path, record: dict) -> list[str]:
    """Problems of one audio file against its manifest line."""
    try:
        info = audio_info(audio)
        wav = load_audio(audio, info.sample_rate)  # at the file's own rate: no resampling
    except AudioLoadError as e:
        return [e.reason + f" ({audio})"]
    problems = []
    if info.sample_rate != record["sample_rate"]:
        problems.append(
            f"sample rate is {info.sample_rate} Hz, the manifest says {record['sample_rate']}"
        )
    duration_s = len(wav) / info.sample_rate
    tolerance = max(DURATION_TOLERANCE_S, DURATION_TOLERANCE_FRACTION * duration_s)
    if abs(duration_s - record["duration_s"]) > tolerance:
        problems.append(
            f"duration is {duration_s:.3f} s, the manifest says {record['duration_s']:.3f} s"
        )
    peak = float(np.abs(wav).max())
    if peak < SILENCE_PEAK:
        problems.append(f"silent: peak amplitude {peak:.2e} (below -80 dBFS)")
    return problems


def _check_trials(path: Path, known: dict[str, int], report: CheckReport) -> None:
    report.num_trial_lists += 1
    try:
        text = read_text_file(path, "trial list")
    except ManifestError as e:  # a missing list is one problem among the others, not a crash
        report.problems.append(str(e))
        return
    for line_number, line in enumerate(text.splitlines(), start=1):
        where = f"{path}:{line_number}"
        fields = line.split()
        if not fields:
            continue
        if len(fields) != 3:
            report.problems.append(
                f"{where}: expected 3 fields 'LABEL ENROL TEST', got {len(fields)}"
            )
            continue
        label, enrol, test = fields
        if label not in ("0", "1"):
            report.problems.append(f"{where}: label must be 0 or 1, got {label!r}")
            continue
        unknown = [u for u in dict.fromkeys((enrol, test)) if u not in known]
        if unknown:
            names = " and ".join(repr(u) for u in unknown)
            report.problems.append(f"{where}: {names} not in the manifest")
            continue
        report.num_trials += 1
