"""Embedding extraction over a manifest, cosine scoring of trials, and one evaluation run.

An evaluation run (:func:`evaluate`) embeds the utterances under a test condition (optionally
through an embedding cache), scores the trials by cosine, optionally normalises the scores
against a speaker-mean cohort, and reports EER, minDCF at several target priors and, on request,
closed-set identification accuracy over the manifest's utterances.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from speakerprint.data.manifest import Utterance, raise_problems
from speakerprint.data.trials import Trial, check_trials_against
from speakerprint.eval.cache import EmbeddingCache
from speakerprint.eval.calibration import OperatingPoint, operating_points
from speakerprint.eval.conditions import FULL, Condition, embed_condition
from speakerprint.eval.identification import (
    IDENTIFICATION_MODES,
    IdentificationResult,
    OpenSetResult,
    closed_set_identification,
    open_set_identification,
    open_set_split,
)
from speakerprint.eval.metrics import (
    DcfResult,
    VerificationMetrics,
    compute_min_dcf,
    compute_verification_metrics,
)
from speakerprint.eval.normalization import (
    NORMALIZATION_METHODS,
    cohort_from_manifest,
    normalize_scores,
    unit_rows,
)
from speakerprint.models.bundle import Bundle

__all__ = [
    "DEFAULT_ASNORM_TOP_K",
    "REPORTED_P_TARGETS",
    "EvalResult",
    "ScoreNormalization",
    "cosine_scores",
    "embed_utterances",
    "embed_with_cache",
    "evaluate",
]

log = logging.getLogger(__name__)

# minDCF is always reported at these target priors (VoxSRC uses 0.05, NIST SRE 0.01), besides
# the run's own p_target.
REPORTED_P_TARGETS = (0.01, 0.05)
# AS-norm's default cohort subset: the 300 closest cohort speakers (the value of WeSpeaker's
# VoxCeleb recipe); capped at the cohort size.
DEFAULT_ASNORM_TOP_K = 300


def embed_utterances(
    bundle: Bundle,
    utts: Sequence[Utterance],
    *,
    batch_size: int = 16,
    num_workers: int = 0,
    progress: bool = False,
) -> dict[str, np.ndarray]:
    """Full-length embeddings of every utterance, batched by similar length.

    Returns ``{utt_id: (embed_dim,) float32}``. The encoder's train/eval mode is restored after.
    Other test conditions: :func:`speakerprint.eval.conditions.embed_condition`.
    """
    return embed_condition(
        bundle, utts, FULL, batch_size=batch_size, num_workers=num_workers, progress=progress
    )


def cosine_scores(embeddings: dict[str, np.ndarray], trials: Sequence[Trial]) -> np.ndarray:
    """Cosine similarity of each trial's enrolment and test embeddings, (num_trials,)."""
    ids = sorted(embeddings)
    index = {u: i for i, u in enumerate(ids)}
    matrix = unit_rows(np.stack([embeddings[u] for u in ids]).astype(np.float64))
    enrol = np.array([index[t.enrol] for t in trials])
    test = np.array([index[t.test] for t in trials])
    return np.einsum("nd,nd->n", matrix[enrol], matrix[test])


@dataclass(frozen=True)
class ScoreNormalization:
    """How the scores of a run were normalised (``method == "none"``: raw cosines).

    Attributes:
        method: one of :data:`~speakerprint.eval.normalization.NORMALIZATION_METHODS`.
        cohort: where the cohort came from (a manifest path, in words), or None.
        num_cohort_speakers: rows of the speaker-mean cohort (0 without one).
        num_cohort_utterances: utterances averaged into it.
        top_k: AS-norm's number of closest cohort speakers; None for other methods.
        note: anything a reader of the figure should know, e.g. that top_k was capped.
        num_overlapping_speakers: cohort speakers that also occur in the trials (should be 0).
    """

    method: str = "none"
    cohort: str | None = None
    num_cohort_speakers: int = 0
    num_cohort_utterances: int = 0
    top_k: int | None = None
    note: str = ""
    num_overlapping_speakers: int = 0

    def to_dict(self) -> dict[str, object]:
        return dict(vars(self))


@dataclass
class EvalResult:
    """One evaluation run: its metrics, its (possibly normalised) scores and its settings.

    Attributes:
        metrics: EER and minDCF at the run's ``p_target``.
        scores: (N,) the scores the metrics are computed from, one per trial.
        labels: (N,) 1 for target, 0 for non-target trials.
        min_dcfs: minDCF at each of :data:`REPORTED_P_TARGETS` and the run's ``p_target``,
            ascending by ``p_target``.
        condition: the test condition the utterances were embedded under.
        normalization: how the scores were normalised.
        identification: closed-set results (inclusive, leave-one-out) when asked for, else ().
        num_embedded: utterances embedded by this run (trials, cohort and identification sets).
        num_cached: utterances whose embeddings came from the cache.
        trials: the trials, in the order of ``scores``.
        operating_points: the threshold table (EER, false-accept targets, minDCF thresholds)
            measured on these scores.
        open_set: open-set identification at the raw-cosine EER threshold, when asked for.
        num_enrollment_models: multi-utterance enrollment models the trials used (0: every
            enrolment side is one utterance).
    """

    metrics: VerificationMetrics
    scores: np.ndarray
    labels: np.ndarray
    min_dcfs: tuple[DcfResult, ...] = ()
    condition: Condition = FULL
    normalization: ScoreNormalization = field(default_factory=ScoreNormalization)
    identification: tuple[IdentificationResult, ...] = ()
    num_embedded: int = 0
    num_cached: int = 0
    trials: Sequence[Trial] = ()
    operating_points: tuple[OperatingPoint, ...] = ()
    open_set: OpenSetResult | None = None
    num_enrollment_models: int = 0

    def score_means(self) -> dict[str, float]:
        """Mean score of the target and of the non-target trials (Deep Speaker's SAP and SAN
        when the scores are cosine similarities of unseen speakers)."""
        return {
            "mean_target_score": float(self.scores[self.labels == 1].mean()),
            "mean_nontarget_score": float(self.scores[self.labels == 0].mean()),
        }

    def to_dict(self) -> dict[str, object]:
        """Every figure with its settings, as plain JSON-ready values.

        The top level keeps :meth:`VerificationMetrics.to_dict`'s keys (EER and minDCF at the
        run's ``p_target``); ``min_dcf_by_p_target`` lists minDCF at every reported prior.
        """
        return {
            **self.metrics.to_dict(),
            **self.score_means(),
            "min_dcf_by_p_target": [vars(d).copy() for d in self.min_dcfs],
            "condition": self.condition.to_dict(),
            "normalization": self.normalization.to_dict(),
            "identification": [r.to_dict() for r in self.identification],
            "open_set_identification": None if self.open_set is None else self.open_set.to_dict(),
            "operating_points": [p.to_dict() for p in self.operating_points],
            "num_enrollment_models": self.num_enrollment_models,
            "num_embedded": self.num_embedded,
            "num_cached": self.num_cached,
        }

    def to_json(self, **inputs: str | os.PathLike | None) -> str:
        """The record ``speakerprint eval --json`` prints: ``inputs`` (the files the run read
        and wrote, by name; None for those not given) then :meth:`to_dict`, indented JSON."""
        named = {k: None if v is None else str(v) for k, v in inputs.items()}
        return json.dumps({**named, **self.to_dict()}, indent=2)

    def to_text(self, *, enrollment: str | os.PathLike | None = None) -> str:
        """The figures in words, one per line, as ``speakerprint eval`` prints them;
        ``enrollment`` names the enrollment map in the line about its models."""
        m, n = self.metrics, self.normalization
        lines = [
            f"condition: {self.condition.describe()}",
            f"trials: {m.num_target} target, {m.num_nontarget} non-target",
        ]
        if n.method == "none":
            lines.append("scores: raw cosine")
        else:
            top = f", top_k {n.top_k}" if n.top_k is not None else ""
            lines.append(
                f"scores: {n.method} against {n.num_cohort_speakers} cohort speakers "
                f"({n.num_cohort_utterances} utterances of {n.cohort}){top}"
            )
            if n.note:
                lines.append(f"note: {n.note}")
        lines.append(f"EER: {100 * m.eer:.2f}% (threshold {m.eer_threshold:.4f})")
        for d in self.min_dcfs:
            lines.append(
                f"minDCF (p_target={d.p_target}, C_miss={d.c_miss}, C_fa={d.c_fa}): {d.min_dcf:.4f}"
            )
        for r in self.identification:
            skipped = (
                f", {r.num_skipped_speakers} single-utterance speaker(s) not tested"
                if r.num_skipped_speakers
                else ""
            )
            lines.append(
                f"identification, {r.mode.replace('_', '-')} ({r.num_speakers} speakers, "
                f"{r.num_tested} utterances{skipped}): top-1 {100 * r.top1_accuracy:.2f}%, "
                f"top-5 {100 * r.top5_accuracy:.2f}%"
            )
        o = self.open_set
        if o is not None:
            lines.append(
                f"open-set identification ({o.num_speakers} enrolled speakers, {o.num_known} of "
                f"their utterances and {o.num_unknown} of held-out speakers tested, threshold "
                f"{o.threshold:.4f}): correct accept {100 * o.correct_accept_rate:.2f}%, "
                f"misidentified {100 * o.misidentification_rate:.2f}%, impostors accepted "
                f"{100 * o.false_accept_rate:.2f}%"
            )
        lines.append("thresholds measured on these trials (optimistic for these trials):")
        for p in self.operating_points:
            lines.append(
                f"  {p.name:22s} {p.threshold:9.4f}  false accepts "
                f"{100 * p.false_accept_rate:6.2f}%  misses {100 * p.miss_rate:6.2f}%"
            )
        if self.num_enrollment_models:
            lines.append(f"enrollment models: {self.num_enrollment_models} from {enrollment}")
        return "\n".join(lines)


def embed_with_cache(
    bundle: Bundle,
    utts: Sequence[Utterance],
    condition: Condition,
    cache: EmbeddingCache | None,
    *,
    batch_size: int = 16,
    num_workers: int = 0,
    progress: bool = False,
) -> tuple[dict[str, np.ndarray], int, int]:
    """Embeddings ``{utt_id: (D,)}`` under a condition, those in ``cache`` (when given) read
    from it and the others embedded and added; with how many were embedded now and how many
    came from the cache."""

    def compute(todo: Sequence[Utterance]) -> dict[str, np.ndarray]:
        return embed_condition(
            bundle,
            todo,
            condition,
            batch_size=batch_size,
            num_workers=num_workers,
            progress=progress,
        )

    if cache is None:
        return compute(utts), len(utts), 0
    found = cache.get_or_compute(condition, utts, compute)
    return found.embeddings, found.num_computed, found.num_cached


def evaluate(
    bundle: Bundle,
    utts: Sequence[Utterance],
    trials: Sequence[Trial],
    *,
    trials_path: str = "trials",
    batch_size: int = 16,
    num_workers: int = 0,
    p_target: float = 0.01,
    progress: bool = False,
    condition: Condition = FULL,
    cache: EmbeddingCache | None = None,
    norm: str = "none",
    cohort: Sequence[Utterance] | None = None,
    cohort_name: str = "cohort",
    top_k: int | None = None,
    identification: bool = False,
    open_set: bool = False,
    enrollment: Mapping[str, Sequence[str]] | None = None,
    enrollment_path: str = "enrollment map",
) -> EvalResult:
    """Embed the utterances the trials use, score the trials, and compute EER and minDCF.

    Args:
        bundle: the model; ``utts``: the manifest the trials name; ``trials``: the trial list.
        trials_path: the trial list's name in error messages.
        p_target: prior of ``metrics.min_dcf``; minDCF at :data:`REPORTED_P_TARGETS` is added.
        condition: the test condition of every embedding (trials, cohort, identification).
        cache: where embeddings are kept between runs; it must belong to ``bundle``.
        norm: score normalisation, one of ``NORMALIZATION_METHODS``; all but "none" need
            ``cohort``.
        cohort: utterances of speakers disjoint from the trials' (e.g. a training manifest),
            averaged into one mean embedding per speaker.
        cohort_name: where the cohort came from, for the record (e.g. its manifest path).
        top_k: AS-norm's closest cohort speakers; default ``min(DEFAULT_ASNORM_TOP_K, K)``.
        identification: also compute closed-set top-1/top-5 accuracy, inclusive and
            leave-one-out, over all of ``utts`` (so every utterance is embedded).
        open_set: also compute open-set identification over all of ``utts``: half of the
            speakers held out as impostors, the others enrolled on half of their utterances
            (:func:`~speakerprint.eval.identification.open_set_split`), decided at the EER
            threshold of the raw cosine scores.
        enrollment: multi-utterance enrollment models, ``{model_id: utterance ids}`` (see
            :func:`speakerprint.data.trials.read_enrollment`); a trial's enrolment side may name
            a model, whose embedding is the normalised mean of its utterances' unit embeddings.
        enrollment_path: the enrollment map's name in error messages.

    Raises:
        ManifestError: a trial names an utterance not in ``utts`` (or, on its enrolment side,
            a model not in ``enrollment``), a model lists an utterance not in ``utts``, or a
            model id is also an utterance id.
        ValueError: an unknown ``norm``, ``norm`` without ``cohort`` or a cohort without
            ``norm``, ``top_k`` with a method other than AS-norm or outside [2, K].

    >>> result = evaluate(bundle, read_manifest("dev.jsonl"), read_trials("dev_trials.txt"),
    ...                   norm="asnorm", cohort=read_manifest("train.jsonl"))  # doctest: +SKIP
    >>> result.metrics.eer, result.normalization.top_k  # doctest: +SKIP
    (0.041, 100)
    """
    _check_normalization_options(norm, cohort, top_k)  # before the work of embedding
    by_id = {u.utt_id: u for u in utts}
    models = _check_enrollment(enrollment or {}, by_id, trials, trials_path, enrollment_path)
    check_trials_against(trials, by_id.keys() | models.keys(), trials_path)
    used_models = {m: models[m] for m in sorted({t.enrol for t in trials if t.enrol in models})}
    needed = _needed_utterances(trials, used_models)

    # Embed: the utterances the trials need (every one for identification), then the models.
    to_embed = list(by_id.values()) if identification or open_set else [by_id[u] for u in needed]
    options = dict(batch_size=batch_size, num_workers=num_workers, progress=progress)
    embeddings, num_embedded, num_cached = embed_with_cache(
        bundle, to_embed, condition, cache, **options
    )
    embeddings = _with_enrollment_models(embeddings, used_models)

    # Score, then normalise against the cohort's speaker means.
    raw_scores = cosine_scores(embeddings, trials)
    scores, normalization = raw_scores, ScoreNormalization()
    if norm != "none":
        assert cohort is not None
        cohort_utts = list(cohort)
        cohort_emb, computed, cached = embed_with_cache(
            bundle, cohort_utts, condition, cache, **options
        )
        num_embedded += computed
        num_cached += cached
        scores, normalization = _normalize(
            norm,
            raw_scores,
            embeddings,
            trials,
            cohort_utts,
            cohort_emb,
            trial_speakers={by_id[u].speaker for u in needed},
            cohort_name=cohort_name,
            top_k=top_k,
        )

    # Metrics.
    labels = np.array([t.label for t in trials], dtype=np.int64)
    identified, open_set_result = _identify(
        by_id,
        embeddings,
        closed_set=identification,
        open_set=open_set,
        raw_scores=raw_scores,
        labels=labels,
    )
    return EvalResult(
        metrics=compute_verification_metrics(scores, labels, p_target=p_target),
        scores=scores,
        labels=labels,
        min_dcfs=tuple(
            compute_min_dcf(scores, labels, p_target=p)
            for p in sorted(set(REPORTED_P_TARGETS) | {float(p_target)})
        ),
        condition=condition,
        normalization=normalization,
        identification=identified,
        num_embedded=num_embedded,
        num_cached=num_cached,
        trials=tuple(trials),
        operating_points=tuple(operating_points(scores, labels)),
        open_set=open_set_result,
        num_enrollment_models=len(used_models),
    )


# -- the steps of evaluate -------------------------------------------------------------------------


def _check_normalization_options(
    norm: str, cohort: Sequence[Utterance] | None, top_k: int | None
) -> None:
    """ValueError for a normalisation request that cannot run (see :func:`evaluate`)."""
    if norm not in NORMALIZATION_METHODS:
        raise ValueError(
            f"unknown normalisation {norm!r}; choose one of {', '.join(NORMALIZATION_METHODS)}"
        )
    if norm != "none" and not cohort:
        raise ValueError(f"score normalisation {norm!r} needs a cohort of utterances")
    if norm == "none" and cohort:
        raise ValueError("a cohort is used only by score normalisation, but norm is 'none'")
    if top_k is not None and norm != "asnorm":
        raise ValueError(f"top_k applies to AS-norm only, got top_k={top_k} with {norm!r}")
    if top_k is not None:
        num_cohort = len({u.speaker for u in cohort or ()})
        if not 2 <= top_k <= num_cohort:
            raise ValueError(
                f"top_k must be between 2 and the cohort size ({num_cohort} speakers), got {top_k}"
            )


def _needed_utterances(trials: Sequence[Trial], models: Mapping[str, Sequence[str]]) -> list[str]:
    """Sorted ids of the utterances the trials score: test sides, enrolment sides that are
    utterances, and the members of the enrollment ``models`` they use."""
    return sorted(
        {t.test for t in trials}
        | {t.enrol for t in trials if t.enrol not in models}
        | {u for members in models.values() for u in members}
    )


def _with_enrollment_models(
    embeddings: Mapping[str, np.ndarray], models: Mapping[str, Sequence[str]]
) -> dict[str, np.ndarray]:
    """``embeddings`` plus one per enrollment model: the unit mean of its members' unit rows."""
    embeddings = dict(embeddings)
    for model, members in models.items():
        rows = unit_rows(np.stack([embeddings[u] for u in members]).astype(np.float64))
        embeddings[model] = unit_rows(rows.sum(axis=0, keepdims=True))[0]
    return embeddings


def _asnorm_top_k(top_k: int | None, num_cohort: int) -> tuple[int, str]:
    """AS-norm's top_k (the default capped at the cohort size) and a note when it equals s-norm."""
    if top_k is None:
        top_k = min(DEFAULT_ASNORM_TOP_K, num_cohort)
        if top_k < DEFAULT_ASNORM_TOP_K:
            return top_k, (
                f"top_k = the cohort size {num_cohort} (the default "
                f"{DEFAULT_ASNORM_TOP_K} is larger), so AS-norm equals s-norm here"
            )
    elif top_k == num_cohort:
        return top_k, f"top_k = the cohort size {num_cohort}, so AS-norm equals s-norm here"
    return top_k, ""


def _normalize(
    norm: str,
    scores: np.ndarray,
    embeddings: Mapping[str, np.ndarray],
    trials: Sequence[Trial],
    cohort_utts: Sequence[Utterance],
    cohort_emb: Mapping[str, np.ndarray],
    *,
    trial_speakers: set[str],
    cohort_name: str,
    top_k: int | None,
) -> tuple[np.ndarray, ScoreNormalization]:
    """The trials' scores normalised against the cohort's speaker means, and how."""
    cohort_matrix = cohort_from_manifest(cohort_utts, cohort_emb)
    num_cohort = len(cohort_matrix)
    note = ""
    if norm == "asnorm":
        top_k, note = _asnorm_top_k(top_k, num_cohort)
    overlap = trial_speakers & {u.speaker for u in cohort_utts}
    if overlap:
        log.warning(
            "%d cohort speaker(s) also occur in the trials (e.g. %s): a cohort should be "
            "disjoint from the trial speakers",
            len(overlap),
            sorted(overlap)[:3],
        )
    normalized = normalize_scores(norm, embeddings, trials, scores, cohort_matrix, top_k=top_k)
    return normalized, ScoreNormalization(
        method=norm,
        cohort=cohort_name,
        num_cohort_speakers=num_cohort,
        num_cohort_utterances=len(cohort_utts),
        top_k=top_k if norm == "asnorm" else None,
        note=note,
        num_overlapping_speakers=len(overlap),
    )


def _identify(
    by_id: Mapping[str, Utterance],
    embeddings: Mapping[str, np.ndarray],
    *,
    closed_set: bool,
    open_set: bool,
    raw_scores: np.ndarray,
    labels: np.ndarray,
) -> tuple[tuple[IdentificationResult, ...], OpenSetResult | None]:
    """Closed-set results (every mode) and the open-set result over every utterance of the
    manifest, each when asked for; open-set decides at the EER threshold of the raw scores."""
    if not (closed_set or open_set):
        return (), None
    ids = sorted(by_id)
    matrix = np.stack([embeddings[u] for u in ids])
    speakers = [by_id[u].speaker for u in ids]
    identified: tuple[IdentificationResult, ...] = ()
    if closed_set:
        identified = tuple(
            closed_set_identification(matrix, speakers, mode=mode) for mode in IDENTIFICATION_MODES
        )
    if not open_set:
        return identified, None
    enrol_rows, known_rows, unknown_rows = open_set_split(ids, speakers)
    test_rows = np.concatenate([known_rows, unknown_rows])
    return identified, open_set_identification(
        matrix[enrol_rows],
        [speakers[r] for r in enrol_rows],
        matrix[test_rows],
        [speakers[r] for r in test_rows],
        threshold=compute_verification_metrics(raw_scores, labels).eer_threshold,
    )


def _check_enrollment(
    models: Mapping[str, Sequence[str]],
    by_id: Mapping[str, Utterance],
    trials: Sequence[Trial],
    trials_path: str,
    enrollment_path: str,
) -> dict[str, tuple[str, ...]]:
    """The enrollment models as tuples, after checking them against the manifest and trials."""
    problems = []
    for model, members in models.items():
        if model in by_id:
            problems.append(
                f"{enrollment_path}: model {model!r} is also an utterance id of the manifest, "
                "so a trial naming it would be ambiguous"
            )
        missing = [u for u in members if u not in by_id]
        if missing:
            problems.append(
                f"{enrollment_path}: model {model!r}: {len(missing)} utterance(s) not in the "
                f"manifest, e.g. {missing[:3]}"
            )
        if not members:
            problems.append(f"{enrollment_path}: model {model!r} has no utterances")
    raise_problems(enrollment_path, problems, "enrollment map")
    test_models = [
        f"{trials_path}: trial {n}: the test side {t.test!r} is an enrollment model, not an "
        "utterance"
        for n, t in enumerate(trials, start=1)
        if t.test in models
    ]
    raise_problems(trials_path, test_models, "trial list")
    return {model: tuple(members) for model, members in models.items()}
