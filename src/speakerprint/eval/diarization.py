"""Diarization error rate (DER), scored by pyannote.metrics.

DER is the fraction of reference speech time that is attributed wrongly: missed (reference
speech with no hypothesis speaker), false alarm (hypothesis speech where the reference has none)
and confusion (speech given to the wrong speaker under the best one-to-one mapping of hypothesis
to reference labels). Where several speakers overlap, each reference speaker counts, as in NIST's
md-eval.

**Collar.** ``collar_s`` follows NIST's convention: that many seconds on *each side* of every
reference boundary are not scored (the standard 0.25 s removes 0.5 s around each boundary).
pyannote.metrics' ``collar`` is the *total* width of that no-score zone, so it is given
``2 * collar_s``. ``tests/eval/test_diarization.py`` holds both to a case worked out by hand.

**Several files** are aggregated as the NIST tools do: seconds are summed over files and the
rates are taken of the sums, not the mean of per-file rates.

pyannote.metrics and pyannote.core are the ``diarization`` extra
(``pip install 'speakerprint[diarize]'``), imported only when a score is computed.

>>> ref = [Turn("f", 0.0, 10.0, "A"), Turn("f", 10.0, 10.0, "B")]
>>> hyp = [Turn("f", 0.0, 12.0, "s0"), Turn("f", 12.0, 8.0, "s1")]
>>> round(diarization_error(ref, hyp, collar_s=0.0).der, 3)
0.1
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from speakerprint.data.rttm import Turn

__all__ = [
    "INSTALL_HINT",
    "DiarizationReport",
    "DiarizationScore",
    "diarization_error",
    "diarization_error_files",
]

INSTALL_HINT = "pip install 'speakerprint[diarize]'"


@dataclass(frozen=True)
class DiarizationScore:
    """Diarization errors in seconds of one file or a sum over files.

    Attributes:
        total_s: reference speech scored (overlapped speech counted once per speaker).
        missed_s, false_alarm_s, confusion_s: the three errors, in seconds.
        collar_s: the no-score zone on each side of every reference boundary.
        skip_overlap: whether reference overlap was left out of scoring.

    The rates (``der``, ``missed``, ``false_alarm``, ``confusion``) are fractions of ``total_s``;
    with no reference speech they are 0 when there is no error and ``inf`` otherwise.
    """

    total_s: float
    missed_s: float
    false_alarm_s: float
    confusion_s: float
    collar_s: float
    skip_overlap: bool

    def _rate(self, seconds: float) -> float:
        if self.total_s > 0:
            return seconds / self.total_s
        return 0.0 if seconds == 0 else math.inf

    @property
    def error_s(self) -> float:
        return self.missed_s + self.false_alarm_s + self.confusion_s

    @property
    def der(self) -> float:
        return self._rate(self.error_s)

    @property
    def missed(self) -> float:
        return self._rate(self.missed_s)

    @property
    def false_alarm(self) -> float:
        return self._rate(self.false_alarm_s)

    @property
    def confusion(self) -> float:
        return self._rate(self.confusion_s)

    def __add__(self, other: DiarizationScore) -> DiarizationScore:
        if (self.collar_s, self.skip_overlap) != (other.collar_s, other.skip_overlap):
            raise ValueError("cannot add scores made with different collars or overlap rules")
        return DiarizationScore(
            self.total_s + other.total_s,
            self.missed_s + other.missed_s,
            self.false_alarm_s + other.false_alarm_s,
            self.confusion_s + other.confusion_s,
            self.collar_s,
            self.skip_overlap,
        )

    def to_dict(self) -> dict[str, float | bool | None]:
        """Seconds and rates as plain numbers; an infinite rate is None (JSON has no inf)."""

        def finite(x: float) -> float | None:
            return x if math.isfinite(x) else None

        return {
            "der": finite(self.der),
            "missed": finite(self.missed),
            "false_alarm": finite(self.false_alarm),
            "confusion": finite(self.confusion),
            "total_s": self.total_s,
            "missed_s": self.missed_s,
            "false_alarm_s": self.false_alarm_s,
            "confusion_s": self.confusion_s,
            "collar_s": self.collar_s,
            "skip_overlap": self.skip_overlap,
        }


@dataclass(frozen=True)
class DiarizationReport:
    """Scores of several files and their NIST-style total.

    Attributes:
        per_file: score of each file id scored (every file of the reference).
        total: the sum over ``per_file`` (seconds summed, then the rates).
        missing_in_hypothesis: reference files the hypothesis has no turn for; scored as all
            missed speech, as md-eval does.
        missing_in_reference: hypothesis files with no reference; not scored (with no reference
            and no evaluation map there is nothing to measure false alarm against).
    """

    per_file: dict[str, DiarizationScore]
    total: DiarizationScore
    missing_in_hypothesis: list[str] = field(default_factory=list)
    missing_in_reference: list[str] = field(default_factory=list)


def _pyannote():
    try:
        from pyannote.core import Annotation, Segment, Timeline
        from pyannote.metrics.diarization import DiarizationErrorRate
    except ImportError as err:
        raise ImportError(
            f"diarization scoring needs pyannote.metrics and pyannote.core: {INSTALL_HINT}"
        ) from err
    return Annotation, Segment, Timeline, DiarizationErrorRate


def _annotation(turns: Iterable[Turn], Annotation, Segment):
    annotation = Annotation()
    for track, turn in enumerate(turns):
        if turn.duration_s > 0:  # an empty segment is no speech, and pyannote rejects it
            annotation[Segment(turn.start_s, turn.end_s), track] = turn.speaker
    # Overlapping turns of one speaker are one speaker talking, as md-eval merges them; left
    # apart, pyannote would count that speaker twice there.
    return annotation.support()


def _check_collar(collar_s: float) -> None:
    if not (math.isfinite(collar_s) and collar_s >= 0):
        raise ValueError(f"collar_s must be finite and >= 0, got {collar_s}")


def diarization_error(
    reference: Sequence[Turn],
    hypothesis: Sequence[Turn],
    *,
    collar_s: float = 0.25,
    skip_overlap: bool = False,
    uem: Sequence[tuple[float, float]] | None = None,
) -> DiarizationScore:
    """DER of one file's ``hypothesis`` turns against its ``reference`` turns.

    Args:
        reference, hypothesis: the turns of one file (their ``file_id`` is not looked at).
        collar_s: seconds not scored on each side of every reference turn boundary (NIST's
            convention; see the module docstring).
        skip_overlap: leave reference regions where several speakers talk out of scoring.
        uem: the scored regions as ``(start_s, end_s)`` pairs; None scores the extent of
            reference and hypothesis together.

    Raises:
        ImportError: pyannote.metrics is not installed (names the ``diarization`` extra).
    """
    _check_collar(collar_s)
    Annotation, Segment, Timeline, DiarizationErrorRate = _pyannote()
    ref = _annotation(reference, Annotation, Segment)
    hyp = _annotation(hypothesis, Annotation, Segment)
    if uem is not None:
        uem_timeline = Timeline([Segment(start, end) for start, end in uem if end > start])
    else:
        extent = (ref.get_timeline() | hyp.get_timeline()).extent()
        if not extent:  # both empty: nothing to score
            return DiarizationScore(0.0, 0.0, 0.0, 0.0, collar_s, skip_overlap)
        uem_timeline = Timeline([extent])
    metric = DiarizationErrorRate(collar=2.0 * collar_s, skip_overlap=skip_overlap)
    parts = metric(ref, hyp, uem=uem_timeline, detailed=True)
    return DiarizationScore(
        total_s=float(parts["total"]),
        missed_s=float(parts["missed detection"]),
        false_alarm_s=float(parts["false alarm"]),
        confusion_s=float(parts["confusion"]),
        collar_s=collar_s,
        skip_overlap=skip_overlap,
    )


def diarization_error_files(
    reference: Mapping[str, Sequence[Turn]],
    hypothesis: Mapping[str, Sequence[Turn]],
    *,
    collar_s: float = 0.25,
    skip_overlap: bool = False,
    uem: Mapping[str, Sequence[tuple[float, float]]] | None = None,
) -> DiarizationReport:
    """DER of several files (``file_id -> turns``, as :func:`~speakerprint.data.rttm.read_rttm`
    gives), per file and in total, the total summing seconds over files as NIST's tools do.

    >>> report = diarization_error_files(read_rttm("ref.rttm"), read_rttm("hyp.rttm"))  # doctest: +SKIP
    >>> report.total.der  # doctest: +SKIP
    """
    _check_collar(collar_s)
    per_file = {}
    for file_id in sorted(reference):
        per_file[file_id] = diarization_error(
            reference[file_id],
            hypothesis.get(file_id, []),
            collar_s=collar_s,
            skip_overlap=skip_overlap,
            uem=None if uem is None else uem.get(file_id),
        )
    total = DiarizationScore(0.0, 0.0, 0.0, 0.0, collar_s, skip_overlap)
    for score in per_file.values():
        total = total + score
    return DiarizationReport(
        per_file=per_file,
        total=total,
        missing_in_hypothesis=sorted(set(reference) - set(hypothesis)),
        missing_in_reference=sorted(set(hypothesis) - set(reference)),
    )
