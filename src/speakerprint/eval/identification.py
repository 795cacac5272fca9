"""Speaker identification from embeddings: closed-set top-k accuracy and open-set rejection.

Each enrolled speaker is represented by the mean of its utterances' L2-normalised embeddings,
normalised again; an utterance is identified as the speaker whose mean has the highest cosine
with it. Closed-set accuracy comes in two modes:

    inclusive      the test utterance is part of its own speaker's mean. This flatters the
                   figure (the utterance votes for itself); it is what some published numbers
                   measure, e.g. the MindSpore ECAPA seed's.
    leave_one_out  the test utterance is removed from its own speaker's mean (and only from that
                   one). Speakers with a single utterance then have nothing left to enrol, so
                   their utterances are not tested; they are counted in ``num_skipped_speakers``.
                   They stay enrolled as candidates for every other utterance.

Ranks are pessimistic about ties: a speaker whose score equals the true speaker's counts as
ranked above it. All functions are numpy on embeddings, independent of any model.

>>> import numpy as np
>>> emb = np.array([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 0.9]])
>>> r = closed_set_identification(emb, ["a", "a", "b", "b"], mode="leave_one_out")
>>> r.top1_accuracy, r.num_tested
(1.0, 4)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
from numpy.typing import ArrayLike

from speakerprint.eval.normalization import unit_rows

__all__ = [
    "IDENTIFICATION_MODES",
    "IdentificationResult",
    "OpenSetResult",
    "closed_set_identification",
    "open_set_identification",
    "open_set_split",
    "speaker_means",
]

IDENTIFICATION_MODES = ("inclusive", "leave_one_out")

# Utterances are scored against the speaker means this many at a time (memory: rows x speakers).
_CHUNK_ROWS = 4096


@dataclass(frozen=True)
class IdentificationResult:
    """Closed-set identification accuracy, as fractions in [0, 1].

    Attributes:
        mode: ``"inclusive"`` or ``"leave_one_out"`` (see the module docstring).
        top1_accuracy: fraction of tested utterances whose speaker ranks first.
        top5_accuracy: fraction whose speaker ranks in the first five (1.0 with <= 5 speakers).
        num_tested: utterances tested.
        num_speakers: enrolled speakers, the candidates of every test.
        num_skipped_speakers: speakers whose utterances were not tested (leave-one-out: the
            speakers with one utterance; always 0 inclusive).
    """

    mode: str
    top1_accuracy: float
    top5_accuracy: float
    num_tested: int
    num_speakers: int
    num_skipped_speakers: int

    def to_dict(self) -> dict[str, str | float | int]:
        return asdict(self)


@dataclass(frozen=True)
class OpenSetResult:
    """Open-set identification at one cosine threshold, rates as fractions in [0, 1].

    A test utterance is accepted when its best speaker-mean cosine is ``>= threshold``.

    Attributes:
        threshold: the cosine threshold.
        correct_accept_rate: of the utterances of enrolled speakers, the fraction accepted as
            their own speaker.
        misidentification_rate: of the utterances of enrolled speakers, the fraction accepted as
            another enrolled speaker.
        false_accept_rate: of the utterances of speakers not enrolled, the fraction accepted (as
            anyone): the impostors let in.
        num_known: test utterances of enrolled speakers.
        num_unknown: test utterances of speakers not enrolled.
        num_speakers: enrolled speakers.
    """

    threshold: float
    correct_accept_rate: float
    misidentification_rate: float
    false_accept_rate: float
    num_known: int
    num_unknown: int
    num_speakers: int

    def to_dict(self) -> dict[str, float | int]:
        return asdict(self)


def _check(embeddings: ArrayLike, speakers: Sequence[str], name: str) -> np.ndarray:
    matrix = np.asarray(embeddings, dtype=np.float64)
    if matrix.ndim != 2:
        raise ValueError(f"{name} must be a 2-D array (rows, embed_dim), got shape {matrix.shape}")
    if not np.isfinite(matrix).all():
        raise ValueError(f"{name} must be finite, got NaN or infinite values")
    if len(speakers) != len(matrix):
        raise ValueError(
            f"{name} has {len(matrix)} rows but {len(speakers)} speaker labels were given"
        )
    return matrix


def speaker_means(embeddings: ArrayLike, speakers: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """Speaker names (K,) sorted, and their enrolment means (K, D): each the L2-normalised sum
    of the speaker's L2-normalised embeddings.

    >>> names, means = speaker_means([[2.0, 0.0], [0.0, 1.0], [0.0, 3.0]], ["a", "a", "b"])
    >>> names.tolist(), means.round(4).tolist()
    (['a', 'b'], [[0.7071, 0.7071], [0.0, 1.0]])
    """
    matrix = _check(embeddings, speakers, "embeddings")
    names, speaker_of = np.unique(np.asarray(speakers, dtype=str), return_inverse=True)
    sums = np.zeros((len(names), matrix.shape[1]))
    np.add.at(sums, speaker_of.reshape(-1), unit_rows(matrix))
    return names, unit_rows(sums)


def closed_set_identification(
    embeddings: ArrayLike, speakers: Sequence[str], *, mode: str = "leave_one_out"
) -> IdentificationResult:
    """Top-1 and top-5 accuracy of identifying each utterance among the speakers' means.

    Args:
        embeddings: (N, D) embeddings of the utterances, any length (L2-normalised here).
        speakers: (N,) the speaker of each utterance; every speaker is enrolled.
        mode: ``"inclusive"`` or ``"leave_one_out"``, see the module docstring.

    Raises:
        ValueError: an unknown mode, fewer than two speakers, mismatched lengths, non-finite
            embeddings, or (leave-one-out) no speaker with two utterances.

    >>> import numpy as np
    >>> emb = np.array([[1.0, 0.0], [0.8, 0.6], [0.0, 1.0]])
    >>> closed_set_identification(emb, ["a", "a", "b"], mode="inclusive").top1_accuracy
    1.0
    """
    if mode not in IDENTIFICATION_MODES:
        raise ValueError(f"unknown mode {mode!r}; choose one of {', '.join(IDENTIFICATION_MODES)}")
    matrix = unit_rows(_check(embeddings, speakers, "embeddings"))
    names, speaker_of = np.unique(np.asarray(speakers, dtype=str), return_inverse=True)
    speaker_of = speaker_of.reshape(-1)
    if len(names) < 2:
        raise ValueError(f"identification needs at least 2 speakers, got {len(names)}")
    counts = np.bincount(speaker_of, minlength=len(names))
    sums = np.zeros((len(names), matrix.shape[1]))
    np.add.at(sums, speaker_of, matrix)
    means = unit_rows(sums)

    if mode == "inclusive":
        tested = np.arange(len(matrix))
        num_skipped = 0
    else:
        tested = np.flatnonzero(counts[speaker_of] > 1)
        num_skipped = int((counts == 1).sum())
        if len(tested) == 0:
            raise ValueError(
                "leave-one-out identification needs a speaker with at least two utterances"
            )
    ranks = np.empty(len(tested), dtype=np.int64)
    for start in range(0, len(tested), _CHUNK_ROWS):
        rows = tested[start : start + _CHUNK_ROWS]
        own = speaker_of[rows]
        scores = matrix[rows] @ means.T  # (chunk, K)
        if mode == "leave_one_out":
            # The own speaker's mean without this utterance: its sum minus the utterance.
            rest = unit_rows(sums[own] - matrix[rows])
            scores[np.arange(len(rows)), own] = np.einsum("nd,nd->n", matrix[rows], rest)
        true_score = scores[np.arange(len(rows)), own]
        # Rank 1 + the other speakers scoring at least as high (ties count against).
        ranks[start : start + len(rows)] = (scores >= true_score[:, None]).sum(axis=1)
    return IdentificationResult(
        mode=mode,
        top1_accuracy=float((ranks <= 1).mean()),
        top5_accuracy=float((ranks <= 5).mean()),
        num_tested=len(tested),
        num_speakers=len(names),
        num_skipped_speakers=num_skipped,
    )


def open_set_identification(
    enrol_embeddings: ArrayLike,
    enrol_speakers: Sequence[str],
    test_embeddings: ArrayLike,
    test_speakers: Sequence[str],
    threshold: float,
) -> OpenSetResult:
    """Identify test utterances among enrolled speakers, rejecting those below a threshold.

    Each test utterance goes to the enrolled speaker whose mean (:func:`speaker_means`) has the
    highest cosine with it, and is accepted if that cosine is ``>= threshold``. Test utterances
    of speakers in the enrolment set measure correct accepts; those of speakers held out of it
    measure false accepts. Enrolment and test utterances should be different recordings.

    Args:
        enrol_embeddings: (M, D) enrolment embeddings; enrol_speakers: (M,) their speakers.
        test_embeddings: (N, D) test embeddings; test_speakers: (N,) their speakers.
        threshold: cosine threshold, e.g. a verification EER threshold.

    Raises:
        ValueError: mismatched shapes, non-finite values, or a test set without utterances of
            enrolled speakers or without utterances of held-out ones.

    >>> r = open_set_identification([[1.0, 0.0]], ["a"], [[0.8, 0.6], [0.0, 1.0]], ["a", "x"], 0.5)
    >>> r.correct_accept_rate, r.false_accept_rate
    (1.0, 0.0)
    """
    names, means = speaker_means(enrol_embeddings, enrol_speakers)
    test = unit_rows(_check(test_embeddings, test_speakers, "test_embeddings"))
    if test.shape[1] != means.shape[1]:
        raise ValueError(
            f"test embeddings have dimension {test.shape[1]}, enrolment ones {means.shape[1]}"
        )
    if not np.isfinite(threshold):
        raise ValueError(f"threshold must be finite, got {threshold}")
    test_names = np.asarray(test_speakers, dtype=str)
    known = np.isin(test_names, names)
    if not known.any() or known.all():
        raise ValueError(
            "open-set identification needs test utterances of enrolled speakers and of held-out "
            f"ones, got {int(known.sum())} and {int((~known).sum())}"
        )
    best = np.empty(len(test), dtype=np.int64)
    best_score = np.empty(len(test))
    for start in range(0, len(test), _CHUNK_ROWS):
        scores = test[start : start + _CHUNK_ROWS] @ means.T  # (chunk, K)
        best[start : start + _CHUNK_ROWS] = scores.argmax(axis=1)
        best_score[start : start + _CHUNK_ROWS] = scores.max(axis=1)
    accepted = best_score >= threshold
    right = names[best] == test_names
    return OpenSetResult(
        threshold=float(threshold),
        correct_accept_rate=float((accepted & right)[known].mean()),
        misidentification_rate=float((accepted & ~right)[known].mean()),
        false_accept_rate=float(accepted[~known].mean()),
        num_known=int(known.sum()),
        num_unknown=int((~known).sum()),
        num_speakers=len(names),
    )


def open_set_split(
    utt_ids: Sequence[str], speakers: Sequence[str], *, seed: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Split one labelled set for open-set identification: row indices of (enrol, known test,
    unknown test).

    Half of the speakers (rounded down, at least one) are held out as unknown: all their
    utterances are impostor tests. Each remaining speaker's utterances, in id order, are split
    in two: the first half (rounded up) enrols it and the rest are its tests, so enrolment and
    test recordings never overlap. Which speakers are held out is a seeded choice, independent
    of the input order.

    Raises:
        ValueError: fewer than two speakers, or mismatched lengths.

    >>> enrol, known, unknown = open_set_split(["a1", "a2", "b1", "b2"], ["a", "a", "b", "b"])
    >>> len(enrol), len(known), len(unknown)
    (1, 1, 2)
    """
    if len(utt_ids) != len(speakers):
        raise ValueError(f"{len(utt_ids)} utterance ids but {len(speakers)} speakers")
    names = sorted(set(speakers))
    if len(names) < 2:
        raise ValueError(f"open-set identification needs two speakers or more, got {len(names)}")
    rng = np.random.default_rng(seed)
    held_out = set(rng.permutation(names)[: len(names) // 2].tolist())
    rows_of: dict[str, list[int]] = {}
    for row in sorted(range(len(utt_ids)), key=lambda r: utt_ids[r]):
        rows_of.setdefault(speakers[row], []).append(row)
    enrol: list[int] = []
    known: list[int] = []
    unknown: list[int] = []
    for name in names:
        rows = rows_of[name]
        if name in held_out:
            unknown += rows
        else:
            half = (len(rows) + 1) // 2
            enrol += rows[:half]
            known += rows[half:]
    enrol_rows, known_rows, unknown_rows = (
        np.asarray(sorted(rows), dtype=np.int64) for rows in (enrol, known, unknown)
    )
    return enrol_rows, known_rows, unknown_rows
