"""Verification trial lists in the VoxCeleb format, and balanced trial lists made from a manifest.

One trial per line, ``LABEL ENROL TEST``, separated by whitespace: LABEL is 1 for a target trial
(same speaker) and 0 for a non-target trial; ENROL and TEST are utterance ids (``utt_id`` in the
manifest, by convention paths relative to the data root)::

    1 id10270/x6uYqmx31kE/00001.wav id10270/8jEAjG6SegY/00008.wav
    0 id10270/x6uYqmx31kE/00001.wav id10300/ize_eiCFEg0/00003.wav

>>> trials = read_trials("veri_test.txt")  # doctest: +SKIP
>>> len(trials), sum(t.label for t in trials)  # doctest: +SKIP
(37720, 18860)
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from speakerprint.data.manifest import Utterance, raise_problems, read_text_file
from speakerprint.utils.io import atomic_open

__all__ = [
    "DEFAULT_TRIALS_PER_UTTERANCE",
    "Trial",
    "check_trials_against",
    "all_pair_trials",
    "format_trial",
    "make_trials",
    "read_enrollment",
    "read_trials",
    "write_trials",
]

# make_trials' default size: each utterance is in about this many target trials on average
# (and as many non-target ones), unless fewer target pairs exist. 20 keeps a dev list of a few
# hundred utterances at a few thousand trials, enough to resolve EER differences of ~1 %.
DEFAULT_TRIALS_PER_UTTERANCE = 20


@dataclass(frozen=True)
class Trial:
    """One verification trial: does ``test`` come from the speaker of ``enrol``?

    Attributes:
        label: 1 for a target trial (same speaker), 0 for a non-target trial.
        enrol: utterance id of the enrolment side.
        test: utterance id of the test side.
    """

    label: int
    enrol: str
    test: str


def read_trials(path: str | os.PathLike) -> list[Trial]:
    """Read a trial list, checking every line; empty lines are ignored.

    Raises:
        ManifestError: the file is missing or unreadable, or lists ``FILE:LINE: problem`` for
            every line that does not have three fields or whose label is not 0 or 1.
    """
    path = Path(path)
    text = read_text_file(path, "trial list")
    trials: list[Trial] = []
    problems: list[str] = []
    labels = {"1": 1, "0": 0}
    for line_number, line in enumerate(text.splitlines(), start=1):
        fields = line.split()
        if len(fields) == 3 and fields[0] in labels:
            trials.append(Trial(labels[fields[0]], fields[1], fields[2]))
        elif not fields:
            continue
        elif len(fields) != 3:
            problems.append(
                f"{path}:{line_number}: expected 3 fields 'LABEL ENROL TEST', got {len(fields)}"
            )
        else:
            problems.append(f"{path}:{line_number}: label must be 0 or 1, got {fields[0]!r}")
    raise_problems(path, problems, "trial list")
    return trials


def read_enrollment(path: str | os.PathLike) -> dict[str, tuple[str, ...]]:
    """Read an enrollment map: which utterances make up each enrollment model.

    One model per line, ``MODEL UTT [UTT ...]``; a model may also be spread over several lines
    (one utterance each, as in CN-Celeb's ``enroll.lst``), whose utterances add up in order.
    A trial list then names the model where it would name an enrolment utterance, and the
    model's embedding is the mean of its utterances' L2-normalised embeddings.

    Raises:
        ManifestError: the file is missing or unreadable, or lists ``FILE:LINE: problem`` for
            every line with fewer than two fields and every utterance listed twice for a model.

    >>> read_enrollment("enroll.txt")  # doctest: +SKIP
    {'spk1-model': ('spk1/a.wav', 'spk1/b.wav'), 'spk2-model': ('spk2/c.wav',)}
    """
    path = Path(path)
    text = read_text_file(path, "enrollment map")
    models: dict[str, list[str]] = {}
    problems: list[str] = []
    for line_number, line in enumerate(text.splitlines(), start=1):
        fields = line.split()
        if not fields:
            continue
        if len(fields) < 2:
            problems.append(f"{path}:{line_number}: expected 'MODEL UTT [UTT ...]', got one field")
            continue
        members = models.setdefault(fields[0], [])
        for utt in fields[1:]:
            if utt in members:
                problems.append(f"{path}:{line_number}: {utt!r} is already in model {fields[0]!r}")
            else:
                members.append(utt)
    raise_problems(path, problems, "enrollment map")
    if not models:
        raise_problems(path, [f"{path}: no enrollment models"], "enrollment map")
    return {model: tuple(utts) for model, utts in models.items()}


def _check_id(utt_id: object) -> None:
    if not isinstance(utt_id, str) or not utt_id or any(c.isspace() for c in utt_id):
        raise ValueError(
            f"utterance id {utt_id!r} cannot go in a trial list: ids must be non-empty strings "
            "without whitespace"
        )


def write_trials(path: str | os.PathLike, trials: Iterable[Trial]) -> None:
    """Write trials as ``LABEL ENROL TEST`` lines, atomically, in the order given.

    Raises:
        ValueError: a label other than 0 or 1, or an id that is empty or holds whitespace (it
            could not be read back).
    """
    lines = [format_trial(trial) + "\n" for trial in trials]
    with atomic_open(path, "w", encoding="utf-8") as f:
        f.writelines(lines)


def format_trial(trial: Trial) -> str:
    """``LABEL ENROL TEST`` without a newline, after checking it can be read back.

    Raises:
        ValueError: a label other than 0 or 1, or an id that is empty or holds whitespace.
    """
    if isinstance(trial.label, bool) or trial.label not in (0, 1):
        raise ValueError(f"trial label must be 0 or 1, got {trial.label!r} in {trial}")
    _check_id(trial.enrol)
    _check_id(trial.test)
    return f"{trial.label} {trial.enrol} {trial.test}"


def check_trials_against(
    trials: Sequence[Trial], utt_ids: Collection[str], trials_path: str | os.PathLike
) -> None:
    """Check that every id in ``trials`` is one of ``utt_ids`` (a manifest's ids).

    Trials are numbered from 1 in the order given; for a list from :func:`read_trials` that is the
    line number when the file has no empty lines.

    Raises:
        ManifestError: listing ``trials_path: trial N: ...`` for every trial naming an unknown id.
    """
    known = utt_ids if isinstance(utt_ids, (set, frozenset, dict)) else set(utt_ids)
    problems = []
    for number, trial in enumerate(trials, start=1):
        unknown = [u for u in dict.fromkeys((trial.enrol, trial.test)) if u not in known]
        if unknown:
            names = " and ".join(repr(u) for u in unknown)
            problems.append(f"{trials_path}: trial {number}: {names} not in the manifest")
    raise_problems(trials_path, problems, "trial list (ids missing from the manifest)")


def make_trials(
    utts: Iterable[Utterance],
    *,
    num_target: int | None = None,
    seed: int = 0,
    same_gender: bool = False,
) -> list[Trial]:
    """Make a balanced trial list: ``num_target`` target and as many non-target trials.

    Pairs are unordered and distinct, never an utterance with itself, and spread so that every
    utterance is used about equally often: target pairs are shared out among speakers in
    proportion to their utterance counts, and both kinds are drawn ring by ring from a seeded
    shuffle (ring ``k`` pairs the ``i``-th utterance with the ``i+k``-th, using each utterance
    twice), with a random part of the last ring. The same ``utts`` and ``seed`` give the same list,
    whatever the order of ``utts``. Within a trial ``enrol < test``; trials are sorted by
    ``(enrol, test)``.

    Args:
        utts: utterances with unique ids; ids must hold no whitespace.
        num_target: number of target trials; by default enough for each utterance to be in about
            ``DEFAULT_TRIALS_PER_UTTERANCE`` target trials, capped by the pairs that exist.
        seed: seed of the random choice.
        same_gender: non-target trials only pair speakers of the same gender (the harder
            condition of VoxCeleb1-H); their number is shared out among the genders in
            proportion to their utterance counts. Every utterance needs a ``gender``.

    Raises:
        ValueError: duplicate or unwritable ids, no speaker with two utterances, fewer than two
            speakers, or a ``num_target`` larger than the distinct pairs available; with
            ``same_gender``, an utterance without a gender.

    >>> utts = [Utterance(f"s{s}/u{u}.wav", "", f"s{s}", 1.0, 16000)
    ...         for s in range(3) for u in range(3)]
    >>> trials = make_trials(utts, num_target=4, seed=1)
    >>> len(trials), sum(t.label for t in trials)
    (8, 4)
    """
    utts = sorted(utts, key=lambda u: u.utt_id)
    ids = [u.utt_id for u in utts]
    for utt_id in ids:
        _check_id(utt_id)
    duplicates = sorted(utt_id for utt_id, n in Counter(ids).items() if n > 1)
    if duplicates:
        raise ValueError(f"duplicate utt_id(s) {duplicates[:5]}: trials need unique ids")
    speaker_names, speaker_of = np.unique([u.speaker for u in utts], return_inverse=True)
    speaker_of = np.asarray(speaker_of, dtype=np.int64).reshape(-1)
    sizes = np.bincount(speaker_of, minlength=len(speaker_names)).astype(np.int64)
    num_utts = len(ids)
    max_target = int((sizes * (sizes - 1) // 2).sum())
    max_nontarget = num_utts * (num_utts - 1) // 2 - max_target
    if same_gender:
        _check_genders(utts)
        gender_names, gender_of = np.unique([u.gender for u in utts], return_inverse=True)
        gender_of = np.asarray(gender_of, dtype=np.int64).reshape(-1)
        gender_sizes = np.bincount(gender_of, minlength=len(gender_names))
        # A gender's non-target pairs: all its pairs less its speakers' own pairs.
        nontarget_caps = gender_sizes * (gender_sizes - 1) // 2
        for speaker in range(len(speaker_names)):
            first = np.flatnonzero(speaker_of == speaker)[0]
            nontarget_caps[gender_of[first]] -= sizes[speaker] * (sizes[speaker] - 1) // 2
        max_nontarget = int(nontarget_caps.sum())
    if max_target == 0:
        raise ValueError("cannot make target trials: no speaker has two utterances")
    if max_nontarget == 0:
        raise ValueError("cannot make non-target trials: all utterances are of one speaker")
    most = min(max_target, max_nontarget)
    if num_target is None:
        num_target = min(most, DEFAULT_TRIALS_PER_UTTERANCE * num_utts // 2)
    elif not 1 <= num_target <= most:
        raise ValueError(
            f"num_target must be between 1 and {most} for these {num_utts} utterances of "
            f"{len(speaker_names)} speakers ({max_target} target and {max_nontarget} non-target "
            f"pairs exist), got {num_target}"
        )
    rng = np.random.default_rng(seed)

    quotas = _share_out(num_target, sizes, rng)
    target_pairs = []
    for speaker in range(len(speaker_names)):
        if quotas[speaker] > 0:
            members = rng.permutation(np.flatnonzero(speaker_of == speaker))
            target_pairs.append(_ring_pairs(members, int(quotas[speaker]), rng, speaker_of=None))
    if same_gender:
        gender_quotas = _share_out(num_target, gender_sizes, rng, caps=nontarget_caps)
        nontarget_pairs = np.concatenate(
            [
                _ring_pairs(
                    rng.permutation(np.flatnonzero(gender_of == g)), int(q), rng, speaker_of
                )
                for g, q in enumerate(gender_quotas)
            ]
        )
    else:
        nontarget_pairs = _ring_pairs(rng.permutation(num_utts), num_target, rng, speaker_of)

    trials = []
    for label, pairs in ((1, np.concatenate(target_pairs)), (0, nontarget_pairs)):
        for a, b in pairs.tolist():
            enrol, test = sorted((ids[a], ids[b]))
            trials.append(Trial(label, enrol, test))
    trials.sort(key=lambda t: (t.enrol, t.test))
    return trials


# all_pair_trials refuses lists longer than this: a full list of 20M trials is already ~1 GB of
# text, and sampled lists (make_trials) resolve EER as well with far fewer.
MAX_ALL_PAIRS = 20_000_000


def all_pair_trials(utts: Iterable[Utterance], *, same_gender: bool = False) -> list[Trial]:
    """Every unordered pair of distinct utterances as a trial, sorted by ``(enrol, test)``, with
    ``enrol < test``; with ``same_gender``, non-target pairs only within a gender.

    Raises:
        ValueError: duplicate or unwritable ids, more than :data:`MAX_ALL_PAIRS` pairs, or (with
            ``same_gender``) an utterance without a gender.

    >>> utts = [Utterance(f"s{s}/u{u}.wav", "", f"s{s}", 1.0, 16000)
    ...         for s in range(2) for u in range(2)]
    >>> [t.label for t in all_pair_trials(utts)]
    [1, 0, 0, 0, 0, 1]
    """
    utts = sorted(utts, key=lambda u: u.utt_id)
    ids = [u.utt_id for u in utts]
    for utt_id in ids:
        _check_id(utt_id)
    duplicates = sorted(utt_id for utt_id, n in Counter(ids).items() if n > 1)
    if duplicates:
        raise ValueError(f"duplicate utt_id(s) {duplicates[:5]}: trials need unique ids")
    count = len(ids) * (len(ids) - 1) // 2
    if count > MAX_ALL_PAIRS:
        raise ValueError(
            f"{len(ids)} utterances make {count} pairs, more than {MAX_ALL_PAIRS}: sample a "
            "balanced list instead (make_trials)"
        )
    if same_gender:
        _check_genders(utts)
    first, second = np.triu_indices(len(ids), k=1)
    speakers = np.array([u.speaker for u in utts])
    target = speakers[first] == speakers[second]
    keep = np.ones(len(first), dtype=bool)
    if same_gender:
        genders = np.array([u.gender for u in utts])
        keep = target | (genders[first] == genders[second])
    return [
        Trial(int(t), ids[a], ids[b])
        for a, b, t in zip(first[keep].tolist(), second[keep].tolist(), target[keep].tolist())
    ]


def _check_genders(utts: Sequence[Utterance]) -> None:
    genderless = [u.utt_id for u in utts if not u.gender]
    if genderless:
        raise ValueError(
            f"same-gender trials need a gender for every utterance; {len(genderless)} have "
            f"none, e.g. {genderless[:3]}"
        )


def _share_out(
    total: int, sizes: np.ndarray, rng: np.random.Generator, caps: np.ndarray | None = None
) -> np.ndarray:
    """Split ``total`` pairs among groups (speakers, genders) in proportion to their sizes.

    A group of ``n`` utterances has ``caps`` pairs at most (default ``n*(n-1)/2``); what a small
    group cannot take is shared out among the others again ("water filling"). Requires
    ``total <= sum of the caps``.
    """
    caps = sizes * (sizes - 1) // 2 if caps is None else np.asarray(caps, dtype=np.int64)
    quotas = np.zeros(len(sizes), dtype=np.int64)
    active = caps > 0
    remaining = total
    share = np.zeros(0)
    while remaining > 0 and active.any():
        share = remaining * sizes[active] / sizes[active].sum()
        full = caps[active] <= share
        if not full.any():
            break
        filled = np.flatnonzero(active)[full]
        quotas[filled] = caps[filled]
        remaining -= int(caps[filled].sum())
        active[filled] = False
        share = np.zeros(0)
    if remaining > 0:
        # share < cap for every active speaker, so floor(share) + 1 never exceeds a cap.
        base = np.floor(share).astype(np.int64)
        leftover = remaining - int(base.sum())
        # The largest fractional parts get one more each; ties broken at random.
        order = np.lexsort((rng.random(len(share)), -(share - base)))
        base[order[:leftover]] += 1
        quotas[np.flatnonzero(active)] = base
    return quotas


def _ring_pairs(
    members: np.ndarray,
    count: int,
    rng: np.random.Generator,
    speaker_of: np.ndarray | None,
) -> np.ndarray:
    """``count`` distinct unordered pairs of ``members`` (already shuffled), as (count, 2).

    Ring ``k`` pairs position ``i`` with position ``(i + k) mod n``, so each member is in two of
    its pairs (one when ``2k == n``) and rings ``1 .. n//2`` together hold every pair once. Whole
    rings are taken in order, then a random part of the next one. With ``speaker_of``, only pairs
    of different speakers count (for non-target trials).
    """
    n = len(members)
    chosen = []
    remaining = count
    for offset in range(1, n // 2 + 1):
        first = np.arange(n // 2 if 2 * offset == n else n)
        pairs = np.stack([members[first], members[(first + offset) % n]], axis=1)  # (P, 2)
        if speaker_of is not None:
            pairs = pairs[speaker_of[pairs[:, 0]] != speaker_of[pairs[:, 1]]]
        if len(pairs) >= remaining:
            keep = np.sort(rng.choice(len(pairs), size=remaining, replace=False))
            chosen.append(pairs[keep])
            remaining = 0
            break
        chosen.append(pairs)
        remaining -= len(pairs)
    if remaining:  # unreachable when the caller checked that enough pairs exist
        raise AssertionError(f"only {count - remaining} of {count} pairs exist")
    return np.concatenate(chosen) if chosen else np.zeros((0, 2), dtype=np.int64)
