"""Score normalisation against a cohort of speakers: z-norm, t-norm, s-norm and adaptive s-norm.

A raw cosine score means different things for different utterances: some embeddings sit close to
many speakers and score high against everyone. Normalisation measures that per embedding, by
scoring it against a cohort of other speakers (disjoint from the trial speakers), and
standardises the trial score with the mean and standard deviation of those cohort scores::

    z-norm   (s - mean(enrol vs cohort)) / std(enrol vs cohort)
    t-norm   (s - mean(test vs cohort)) / std(test vs cohort)
    s-norm   (z-norm + t-norm) / 2
    as-norm  s-norm, each side's statistics taken over only its top_k highest cohort scores

Embeddings and cohort rows are L2-normalised first, so cohort scores are cosines, one matrix
product per block of embeddings. The statistics of each distinct embedding are computed once,
however many trials use it. Standard deviations are population ones (``ddof=0``), so z-normed
cohort scores of an embedding have mean 0 and standard deviation 1 exactly.

>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> cohort = rng.normal(size=(20, 8))
>>> enrol, test = rng.normal(size=(3, 8)), rng.normal(size=(3, 8))
>>> raw = np.einsum("nd,nd->n", enrol, test)  # any score; cosines in practice
>>> asnorm(enrol, test, raw, cohort, top_k=5).shape
(3,)
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import numpy as np
from numpy.typing import ArrayLike

from speakerprint.data.manifest import Utterance
from speakerprint.data.trials import Trial
from speakerprint.utils.linalg import l2_normalize_rows

__all__ = [
    "NORMALIZATION_METHODS",
    "asnorm",
    "cohort_from_embeddings",
    "cohort_from_manifest",
    "normalize_scores",
    "normalize_scores_by_index",
    "snorm",
    "tnorm",
    "znorm",
]

NORMALIZATION_METHODS = ("none", "znorm", "tnorm", "snorm", "asnorm")

# Embeddings are scored against the cohort this many at a time, so that memory stays at
# _CHUNK_ROWS * K floats however many embeddings there are (8192 x 6000 cohort ~ 400 MB).
_CHUNK_ROWS = 4096


# A zero row stays zero (its cohort scores are all 0 and then rejected for zero spread).
unit_rows = l2_normalize_rows


def _as_matrix(values: ArrayLike, name: str) -> np.ndarray:
    matrix = np.asarray(values, dtype=np.float64)
    if matrix.ndim != 2:
        raise ValueError(f"{name} must be a 2-D array (rows, embed_dim), got shape {matrix.shape}")
    if not np.isfinite(matrix).all():
        raise ValueError(f"{name} must be finite, got NaN or infinite values")
    return matrix


def cohort_from_embeddings(
    embeddings: Mapping[str, ArrayLike], speakers: Mapping[str, str]
) -> np.ndarray:
    """Cohort matrix: one L2-normalised mean embedding per speaker, rows sorted by speaker name.

    Each utterance embedding is L2-normalised before averaging, so long and short utterances
    weigh the same, and the mean is normalised again because cohort scores are cosines.

    Args:
        embeddings: ``{utt_id: (D,) embedding}``; ids not in ``speakers`` are ignored.
        speakers: ``{utt_id: speaker}`` of the cohort utterances; every id needs an embedding.

    Returns:
        (K, D) float64, K = number of distinct speakers, in ``sorted(speakers.values())`` order.

    Raises:
        ValueError: no utterances, an utterance without an embedding, or embeddings of
            different shapes.

    >>> import numpy as np
    >>> emb = {"a1": np.array([2.0, 0.0]), "a2": np.array([0.0, 1.0]), "b1": np.array([0.0, 3.0])}
    >>> cohort_from_embeddings(emb, {"a1": "a", "a2": "a", "b1": "b"}).round(4).tolist()
    [[0.7071, 0.7071], [0.0, 1.0]]
    """
    if not speakers:
        raise ValueError("a cohort needs at least one utterance, got an empty speakers mapping")
    utt_ids = sorted(speakers)
    missing = [u for u in utt_ids if u not in embeddings]
    if missing:
        raise ValueError(
            f"{len(missing)} cohort utterance(s) have no embedding, e.g. {missing[:5]}"
        )
    shapes = {np.shape(embeddings[u]) for u in utt_ids}
    if len(shapes) != 1 or len(next(iter(shapes))) != 1:
        raise ValueError(f"cohort embeddings must all be 1-D of one size, got shapes {shapes}")
    matrix = unit_rows(_as_matrix(np.stack([embeddings[u] for u in utt_ids]), "embeddings"))
    _, speaker_of = np.unique([speakers[u] for u in utt_ids], return_inverse=True)
    speaker_of = speaker_of.reshape(-1)
    # Sum rows per speaker by sorting them into runs: np.add.reduceat over each run's start.
    order = np.argsort(speaker_of, kind="stable")
    starts = np.flatnonzero(np.r_[True, np.diff(speaker_of[order]) != 0])
    sums = np.add.reduceat(matrix[order], starts, axis=0)
    return unit_rows(sums)


def cohort_from_manifest(
    utts: Iterable[Utterance], embeddings: Mapping[str, ArrayLike]
) -> np.ndarray:
    """:func:`cohort_from_embeddings` for the utterances of a manifest (speaker from each one).

    >>> cohort = cohort_from_manifest(read_manifest("cohort.jsonl"), embeddings)  # doctest: +SKIP
    """
    return cohort_from_embeddings(embeddings, {utt.utt_id: utt.speaker for utt in utts})


def _check_top_k(top_k: int | None, cohort_size: int) -> int:
    if top_k is None:
        return cohort_size
    if isinstance(top_k, bool) or not isinstance(top_k, (int, np.integer)):
        raise ValueError(f"top_k must be an int or None, got {top_k!r}")
    if not 2 <= top_k <= cohort_size:
        raise ValueError(
            f"top_k must be between 2 and the cohort size {cohort_size} (a standard deviation "
            f"needs two scores), got {top_k}"
        )
    return int(top_k)


def _check_method(method: str) -> None:
    if method not in NORMALIZATION_METHODS:
        raise ValueError(
            f"unknown normalisation method {method!r}; choose one of "
            f"{', '.join(NORMALIZATION_METHODS)}"
        )


def _cohort_statistics(
    unit_emb: np.ndarray, unit_cohort: np.ndarray, top_k: int
) -> tuple[np.ndarray, np.ndarray]:
    """Mean and std (M,) of each row's top_k highest cosines with the cohort (all when top_k=K)."""
    num_cohort = len(unit_cohort)
    means = np.empty(len(unit_emb))
    stds = np.empty(len(unit_emb))
    for start in range(0, len(unit_emb), _CHUNK_ROWS):
        stop = start + _CHUNK_ROWS
        scores = unit_emb[start:stop] @ unit_cohort.T  # (chunk, K)
        if top_k < num_cohort:
            # The top_k largest per row, unordered: a partition is O(K), a sort O(K log K).
            scores = np.partition(scores, num_cohort - top_k, axis=1)[:, num_cohort - top_k :]
        means[start:stop] = scores.mean(axis=1)
        stds[start:stop] = scores.std(axis=1)
    flat = stds <= 1e-12
    if flat.any():
        raise ValueError(
            f"{int(flat.sum())} embedding(s) score the same against every cohort row they are "
            "normalised by (a zero embedding or a cohort of identical rows?), so their standard "
            "deviation is 0 and the score cannot be normalised"
        )
    return means, stds


def normalize_scores_by_index(
    method: str,
    embeddings: ArrayLike,
    enrol_index: ArrayLike,
    test_index: ArrayLike,
    raw_scores: ArrayLike,
    cohort: ArrayLike,
    *,
    top_k: int | None = None,
) -> np.ndarray:
    """Normalise trial scores whose embeddings are rows of one matrix of distinct embeddings.

    Each embedding's cohort statistics are computed once (only for rows some trial uses on a
    side the method needs), however many trials share it: the efficient form for trial lists,
    where every utterance is in many trials.

    Args:
        method: one of :data:`NORMALIZATION_METHODS`; see the module docstring.
        embeddings: (M, D) distinct embeddings, any length (L2-normalised here).
        enrol_index: (N,) int, row of ``embeddings`` of each trial's enrolment side.
        test_index: (N,) int, row of ``embeddings`` of each trial's test side.
        raw_scores: (N,) raw trial scores (cosines, usually).
        cohort: (K, D) cohort embeddings, K >= 2, e.g. from :func:`cohort_from_embeddings`.
        top_k: for ``"asnorm"`` only: use each side's ``top_k`` highest cohort scores, 2 <= top_k
            <= K; None uses all K, which is s-norm.

    Returns:
        (N,) float64 normalised scores (``raw_scores`` as float64 for ``"none"``).

    Raises:
        ValueError: an unknown method (the message lists the valid ones), ``top_k`` with a method
            other than ``"asnorm"`` or out of range, mismatched shapes or an index out of range,
            non-finite values, or an embedding whose cohort scores are all equal.

    >>> import numpy as np
    >>> emb = np.eye(3)
    >>> cohort = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [1.0, 1.0, 1.0]])  # cosines 1 0 .577
    >>> normalize_scores_by_index("znorm", emb, [0], [1], [0.5], cohort).round(4).tolist()
    [-0.0629]
    """
    _check_method(method)
    if top_k is not None and method != "asnorm":
        raise ValueError(f"top_k applies to 'asnorm' only, got top_k={top_k} with {method!r}")
    emb = _as_matrix(embeddings, "embeddings")
    cohort_arr = _as_matrix(cohort, "cohort")
    raw = np.asarray(raw_scores, dtype=np.float64)
    enrol = np.asarray(enrol_index)
    test = np.asarray(test_index)
    if raw.ndim != 1 or enrol.shape != raw.shape or test.shape != raw.shape:
        raise ValueError(
            "raw_scores, enrol_index and test_index must be 1-D of one length, got shapes "
            f"{raw.shape}, {enrol.shape} and {test.shape}"
        )
    if not np.isfinite(raw).all():
        raise ValueError("raw_scores must be finite, got NaN or infinite values")
    for name, index in (("enrol_index", enrol), ("test_index", test)):
        if len(index) and not np.issubdtype(index.dtype, np.integer):
            raise ValueError(f"{name} must hold integers, got dtype {index.dtype}")
        if len(index) and (index.min() < 0 or index.max() >= len(emb)):
            raise ValueError(f"{name} must lie in [0, {len(emb)}), the rows of embeddings")
    if emb.shape[1] != cohort_arr.shape[1]:
        raise ValueError(
            f"embeddings have dimension {emb.shape[1]} but the cohort has {cohort_arr.shape[1]}"
        )
    if len(cohort_arr) < 2:
        raise ValueError(f"the cohort needs at least 2 rows, got {len(cohort_arr)}")
    top_k = _check_top_k(top_k, len(cohort_arr))
    if method == "none":
        return raw.copy()

    sides = {"znorm": [enrol], "tnorm": [test]}.get(method, [enrol, test])
    # Statistics only for the rows used; `position` maps a row of `emb` to its row in `needed`.
    needed = np.unique(np.concatenate(sides)).astype(np.int64)
    means, stds = _cohort_statistics(unit_rows(emb[needed]), unit_rows(cohort_arr), top_k)
    normalized = [(raw - means[p]) / stds[p] for p in (np.searchsorted(needed, s) for s in sides)]
    return normalized[0] if len(normalized) == 1 else (normalized[0] + normalized[1]) / 2.0


def normalize_scores(
    method: str,
    embeddings: Mapping[str, ArrayLike],
    trials: Sequence[Trial],
    raw_scores: ArrayLike,
    cohort: ArrayLike,
    *,
    top_k: int | None = None,
) -> np.ndarray:
    """Normalise the scores of a trial list: the single entry point for evaluation runs.

    Args:
        method: one of :data:`NORMALIZATION_METHODS`; see the module docstring.
        embeddings: ``{utt_id: (D,) embedding}``, holding every id the trials name.
        trials: the N trials; ``raw_scores[i]`` belongs to ``trials[i]``.
        raw_scores: (N,) raw scores, e.g. from ``speakerprint.eval.scoring.cosine_scores``.
        cohort: (K, D), e.g. from :func:`cohort_from_embeddings`.
        top_k: see :func:`normalize_scores_by_index`.

    Returns:
        (N,) float64 normalised scores.

    Raises:
        ValueError: as :func:`normalize_scores_by_index`, or a trial id without an embedding.

    >>> scores = normalize_scores("asnorm", emb, trials, raw, cohort, top_k=300)  # doctest: +SKIP
    """
    _check_method(method)  # before the work of stacking the embeddings
    cohort_arr = _as_matrix(cohort, "cohort")
    ids = sorted({t.enrol for t in trials} | {t.test for t in trials})
    missing = [u for u in ids if u not in embeddings]
    if missing:
        raise ValueError(f"{len(missing)} trial utterance(s) have no embedding, e.g. {missing[:5]}")
    row_of = {u: i for i, u in enumerate(ids)}
    matrix = np.stack([embeddings[u] for u in ids]) if ids else np.zeros((0, cohort_arr.shape[1]))
    return normalize_scores_by_index(
        method,
        matrix,
        np.array([row_of[t.enrol] for t in trials], dtype=np.int64),
        np.array([row_of[t.test] for t in trials], dtype=np.int64),
        raw_scores,
        cohort_arr,
        top_k=top_k,
    )


def _paired(
    method: str,
    enrol_emb: ArrayLike,
    test_emb: ArrayLike,
    raw_scores: ArrayLike,
    cohort: ArrayLike,
    top_k: int | None,
) -> np.ndarray:
    enrol = _as_matrix(enrol_emb, "enrol_emb")
    test = _as_matrix(test_emb, "test_emb")
    if enrol.shape != test.shape:
        raise ValueError(
            f"enrol_emb and test_emb must have one shape (N, D), got {enrol.shape} and {test.shape}"
        )
    num_trials = len(enrol)
    rows = np.arange(num_trials)
    return normalize_scores_by_index(
        method,
        np.concatenate([enrol, test]),
        rows,
        rows + num_trials,
        raw_scores,
        cohort,
        top_k=top_k,
    )


def znorm(
    enrol_emb: ArrayLike, test_emb: ArrayLike, raw_scores: ArrayLike, cohort: ArrayLike
) -> np.ndarray:
    """Zero normalisation: ``(s - mean) / std`` of the enrolment side's cosines with the cohort.

    Args:
        enrol_emb: (N, D) enrolment embedding of each trial.
        test_emb: (N, D) test embedding of each trial; checked but unused, so that the four
            methods share one signature.
        raw_scores: (N,) raw trial scores.
        cohort: (K, D) cohort embeddings, K >= 2.

    Returns:
        (N,) float64. For many trials sharing embeddings use :func:`normalize_scores`.

    >>> import numpy as np
    >>> cohort = np.array([[0.0, 1.0], [0.6, 0.8], [0.8, 0.6]])  # cosines with [1, 0]: 0 .6 .8
    >>> znorm([[1.0, 0.0]], [[0.0, 1.0]], [0.9], cohort).round(4).tolist()
    [1.2748]
    """
    return _paired("znorm", enrol_emb, test_emb, raw_scores, cohort, None)


def tnorm(
    enrol_emb: ArrayLike, test_emb: ArrayLike, raw_scores: ArrayLike, cohort: ArrayLike
) -> np.ndarray:
    """Test normalisation: ``(s - mean) / std`` of the test side's cosines with the cohort.

    Arguments and result as :func:`znorm`, with the roles of the sides swapped.

    >>> import numpy as np
    >>> cohort = np.array([[0.0, 1.0], [0.6, 0.8], [0.8, 0.6]])
    >>> tnorm([[0.0, 1.0]], [[1.0, 0.0]], [0.9], cohort).round(4).tolist()
    [1.2748]
    """
    return _paired("tnorm", enrol_emb, test_emb, raw_scores, cohort, None)


def snorm(
    enrol_emb: ArrayLike, test_emb: ArrayLike, raw_scores: ArrayLike, cohort: ArrayLike
) -> np.ndarray:
    """Symmetric normalisation: ``(znorm + tnorm) / 2``, so neither side of a trial is favoured.

    Arguments and result as :func:`znorm`.

    >>> import numpy as np
    >>> cohort = np.array([[0.0, 1.0], [0.6, 0.8], [0.8, 0.6]])
    >>> snorm([[1.0, 0.0]], [[1.0, 0.0]], [0.9], cohort).round(4).tolist()
    [1.2748]
    """
    return _paired("snorm", enrol_emb, test_emb, raw_scores, cohort, None)


def asnorm(
    enrol_emb: ArrayLike,
    test_emb: ArrayLike,
    raw_scores: ArrayLike,
    cohort: ArrayLike,
    *,
    top_k: int | None = None,
) -> np.ndarray:
    """Adaptive s-norm: s-norm with each side's statistics over its ``top_k`` closest cohort rows.

    ``(s - mean_e) / std_e / 2 + (s - mean_t) / std_t / 2``, where ``mean_e, std_e`` are over the
    ``top_k`` highest cosines of the enrolment embedding with the cohort, and ``mean_t, std_t``
    over the test embedding's own ``top_k`` highest. The nearest cohort speakers are the
    impostors that matter for a high score, which is why it usually beats plain s-norm.

    Args:
        enrol_emb, test_emb, raw_scores, cohort: as :func:`znorm`.
        top_k: 2 <= top_k <= K; None (all K) gives exactly :func:`snorm`.

    >>> import numpy as np
    >>> cohort = np.array([[0.0, 1.0], [0.6, 0.8], [0.8, 0.6]])  # top 2 with [1, 0]: .6 .8
    >>> asnorm([[1.0, 0.0]], [[1.0, 0.0]], [0.9], cohort, top_k=2).round(4).tolist()
    [2.0]
    """
    return _paired("asnorm", enrol_emb, test_emb, raw_scores, cohort, top_k)
