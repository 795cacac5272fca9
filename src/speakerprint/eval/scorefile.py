"""Score files: one scored trial per line, ``LABEL ENROL TEST SCORE``.

The trial list's three fields (see :mod:`speakerprint.data.trials`) followed by the score, so a
score file is also a readable trial list once the last column is dropped, and two systems'
score files of the same trial list line up line by line (reports, fusion).

>>> write_scores("scores.txt", trials, scores)  # doctest: +SKIP
>>> trials, scores = read_trial_scores("scores.txt")  # doctest: +SKIP
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from numpy.typing import ArrayLike

from speakerprint.data.manifest import raise_problems, read_text_file
from speakerprint.data.trials import Trial, format_trial
from speakerprint.errors import ManifestError
from speakerprint.utils.io import atomic_open

__all__ = ["check_same_trials", "read_trial_scores", "write_scores"]


def write_scores(path: str | os.PathLike, trials: Sequence[Trial], scores: ArrayLike) -> None:
    """Write ``LABEL ENROL TEST SCORE`` lines atomically, in the order of ``trials``.

    Scores are written with 9 significant digits (float32 precision and then some).

    Raises:
        ValueError: as many scores as trials are needed, every one finite.
    """
    scores_arr = np.asarray(scores, dtype=np.float64).reshape(-1)
    if len(scores_arr) != len(trials):
        raise ValueError(f"{len(trials)} trials but {len(scores_arr)} scores")
    if not np.isfinite(scores_arr).all():
        raise ValueError("scores must be finite")
    lines = [f"{format_trial(t)} {score:.9g}\n" for t, score in zip(trials, scores_arr.tolist())]
    with atomic_open(path, "w", encoding="utf-8") as f:
        f.writelines(lines)


def read_trial_scores(path: str | os.PathLike) -> tuple[list[Trial], np.ndarray]:
    """Read a score file: the trials and their (N,) float64 scores.

    Raises:
        ManifestError: the file is missing, unreadable or empty, or lists ``FILE:LINE:
            problem`` for every line without four fields, with a label other than 0 or 1, or
            with a score that is not a finite number.
    """
    path = Path(path)
    text = read_text_file(path, "score file")
    trials: list[Trial] = []
    scores: list[float] = []
    problems: list[str] = []
    for line_number, line in enumerate(text.splitlines(), start=1):
        fields = line.split()
        if not fields:
            continue
        where = f"{path}:{line_number}"
        if len(fields) != 4:
            problems.append(
                f"{where}: expected 4 fields 'LABEL ENROL TEST SCORE', got {len(fields)}"
            )
            continue
        if fields[0] not in ("0", "1"):
            problems.append(f"{where}: label must be 0 or 1, got {fields[0]!r}")
            continue
        try:
            score = float(fields[3])
        except ValueError:
            score = math.nan
        if not math.isfinite(score):
            problems.append(f"{where}: score must be a finite number, got {fields[3]!r}")
            continue
        trials.append(Trial(int(fields[0]), fields[1], fields[2]))
        scores.append(score)
    raise_problems(path, problems, "score file")
    if not trials:
        raise ManifestError(f"score file {path} holds no scores")
    return trials, np.asarray(scores, dtype=np.float64)


def check_same_trials(
    named_trials: Sequence[tuple[str, Sequence[Trial]]],
) -> None:
    """Check that several systems' score files score the same trials in the same order.

    Raises:
        ManifestError: naming the first file whose trials differ from the first file's, and
            the first line where they do.
    """
    (first_name, first), *others = named_trials
    for name, trials in others:
        if len(trials) != len(first):
            raise ManifestError(
                f"{name} has {len(trials)} trials but {first_name} has {len(first)}: "
                "systems compared or fused must score the same trial list"
            )
        for number, (a, b) in enumerate(zip(first, trials), start=1):
            if a != b:
                raise ManifestError(
                    f"{name}: trial {number} is '{b.label} {b.enrol} {b.test}' but {first_name} "
                    f"has '{a.label} {a.enrol} {a.test}': systems compared or fused must score "
                    "the same trial list in the same order"
                )
