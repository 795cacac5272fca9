"""Turn a folder of audio, one sub-folder per speaker, into manifests and a dev trial list.

Layout: ``ROOT/<speaker>/**/<audio file>``. The speaker is the first folder under ROOT, so any
nesting below it (sessions, videos, chapters) is fine::

    ROOT/id10001/1zcIwhmdeo4/00001.wav   -> speaker "id10001", utt_id "id10001/1zcIwhmdeo4/00001.wav"
    ROOT/SPEAKER0001/000010011.opus      -> speaker "SPEAKER0001"

>>> prepared = prepare_folder("data/speechocean762/train", "runs/so762", dev_speakers=10)
... # doctest: +SKIP
>>> prepared.num_train_speakers, prepared.num_dev_speakers  # doctest: +SKIP
(115, 10)
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from speakerprint.audio import AudioLoadError, audio_info
from speakerprint.data.manifest import Utterance, speakers, write_manifest
from speakerprint.data.trials import make_trials, write_trials
from speakerprint.errors import ManifestError
from speakerprint.utils.io import atomic_open

__all__ = ["AUDIO_EXTENSIONS", "PreparedFolder", "prepare_folder"]

logger = logging.getLogger(__name__)

AUDIO_EXTENSIONS: tuple[str, ...] = ("wav", "flac", "ogg", "opus", "mp3", "m4a", "aac")


@dataclass(frozen=True)
class PreparedFolder:
    """What :func:`prepare_folder` wrote and how much went where.

    ``dev_manifest`` and ``dev_trials`` are None when no dev speakers were asked for.
    """

    train_manifest: Path
    dev_manifest: Path | None
    dev_trials: Path | None
    skipped: Path
    num_train_utts: int
    num_train_speakers: int
    num_dev_utts: int
    num_dev_speakers: int
    num_dev_trials: int
    num_skipped: int


def prepare_folder(
    root: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    dev_speakers: int = 0,
    seed: int = 0,
    num_dev_trials: int | None = None,
    extensions: Iterable[str] = AUDIO_EXTENSIONS,
) -> PreparedFolder:
    """Scan ``root`` for audio and write manifests, a dev trial list and a list of skipped files.

    Writes, in ``out_dir``:

    - ``train.jsonl``: every utterance of the speakers not chosen for dev.
    - ``dev.jsonl`` and ``dev_trials.txt`` (only with ``dev_speakers > 0``): the utterances of
      ``dev_speakers`` speakers drawn at random (seeded), none of them in train, and a balanced
      trial list over them from :func:`~speakerprint.data.trials.make_trials`.
    - ``skipped.tsv``: ``path<TAB>reason`` for every file left out: unreadable audio (the reason
      from :class:`~speakerprint.audio.AudioLoadError`), files directly in ``root`` (no speaker
      folder) and relative paths holding whitespace (a trial list could not name them).

    ``utt_id`` is the path relative to ``root`` in POSIX form, ``path`` the absolute path (not
    resolving symbolic links, which are followed while scanning); duration and sample rate come
    from the file's header. Output is sorted by ``utt_id``, so the same folder and seed give the
    same files.

    Args:
        root: the data folder, one sub-folder per speaker.
        out_dir: where to write; created if missing.
        dev_speakers: how many speakers to hold out for dev; 0 or at least 2 (non-target
            trials need two speakers), and fewer than the speakers found.
        seed: seed of the dev speaker choice and of the trial list.
        num_dev_trials: total number of dev trials, half target and half non-target, so it must
            be even; by default :func:`make_trials` chooses.
        extensions: audio file extensions to take, matched without case, with or without a dot.

    Raises:
        ManifestError: ``root`` is not a folder, or it holds no readable audio file.
        ValueError: a bad ``dev_speakers`` or ``num_dev_trials``.
    """
    root = Path(os.path.abspath(root))
    out_dir = Path(out_dir)
    if dev_speakers < 0 or dev_speakers == 1:
        raise ValueError(
            f"dev_speakers must be 0 or at least 2 (non-target trials need two speakers), "
            f"got {dev_speakers}"
        )
    if num_dev_trials is not None and (num_dev_trials < 2 or num_dev_trials % 2):
        raise ValueError(
            f"num_dev_trials must be even and at least 2 (half target, half non-target), "
            f"got {num_dev_trials}"
        )
    if not root.is_dir():
        raise ManifestError(f"data root is not a folder: {root}")
    wanted = {e.lower().lstrip(".") for e in extensions}

    utts: list[Utterance] = []
    skipped: list[tuple[str, str]] = []
    for file in _audio_files(root, wanted):
        utt_id = file.relative_to(root).as_posix()
        reason = None
        if "/" not in utt_id:
            reason = "not in a speaker folder (expected ROOT/<speaker>/.../<file>)"
        elif any(c.isspace() for c in utt_id):
            reason = "path holds whitespace, which a trial list cannot hold"
        else:
            try:
                info = audio_info(file)
            except AudioLoadError as err:
                reason = getattr(err, "reason", None) or str(err)
        if reason is not None:
            logger.warning("skipping %s: %s", file, reason)
            skipped.append((str(file), reason))
            continue
        utts.append(
            Utterance(
                utt_id=utt_id,
                path=str(file),
                speaker=utt_id.split("/", 1)[0],
                duration_s=float(info.duration_s),
                sample_rate=int(info.sample_rate),
            )
        )
    if not utts:
        raise ManifestError(
            f"no readable audio file ({', '.join(sorted(wanted))}) found under {root} in the "
            f"layout ROOT/<speaker>/.../<file>; {len(skipped)} file(s) skipped"
        )

    all_speakers = speakers(utts)
    if dev_speakers >= len(all_speakers):
        raise ValueError(
            f"dev_speakers={dev_speakers} leaves no training speakers: {root} holds "
            f"{len(all_speakers)} speaker(s) with readable audio"
        )
    rng = np.random.default_rng(seed)
    dev_set = set(rng.choice(all_speakers, size=dev_speakers, replace=False).tolist())
    train_utts = [u for u in utts if u.speaker not in dev_set]
    dev_utts = [u for u in utts if u.speaker in dev_set]

    train_manifest = out_dir / "train.jsonl"
    write_manifest(train_manifest, train_utts)
    dev_manifest = dev_trials_path = None
    trials = []
    if dev_set:
        num_target = None if num_dev_trials is None else num_dev_trials // 2
        trials = make_trials(dev_utts, num_target=num_target, seed=seed)
        dev_manifest = out_dir / "dev.jsonl"
        dev_trials_path = out_dir / "dev_trials.txt"
        write_manifest(dev_manifest, dev_utts)
        write_trials(dev_trials_path, trials)
    skipped_path = out_dir / "skipped.tsv"
    with atomic_open(skipped_path, "w", encoding="utf-8") as f:
        f.write("path\treason\n")
        for path, reason in skipped:
            f.write(f"{_one_field(path)}\t{_one_field(reason)}\n")

    return PreparedFolder(
        train_manifest=train_manifest,
        dev_manifest=dev_manifest,
        dev_trials=dev_trials_path,
        skipped=skipped_path,
        num_train_utts=len(train_utts),
        num_train_speakers=len(all_speakers) - len(dev_set),
        num_dev_utts=len(dev_utts),
        num_dev_speakers=len(dev_set),
        num_dev_trials=len(trials),
        num_skipped=len(skipped),
    )


def _audio_files(root: Path, extensions: set[str]) -> Iterator[Path]:
    """Audio files under ``root`` in sorted order, following symbolic links without looping."""
    seen_folders: set[str] = set()
    found: list[Path] = []
    for folder, subfolders, files in os.walk(root, followlinks=True):
        real = os.path.realpath(folder)
        if real in seen_folders:  # a link back up the tree
            subfolders.clear()
            continue
        seen_folders.add(real)
        for name in files:
            if name.rsplit(".", 1)[-1].lower() in extensions and "." in name:
                found.append(Path(folder, name))
    # Sort on the relative POSIX path, the utt_id, not on os.walk's order.
    found.sort(key=lambda p: p.relative_to(root).as_posix())
    return iter(found)


def _one_field(text: str) -> str:
    """Keep a TSV field on one line and in one column."""
    return " ".join(text.split()) if any(c in text for c in "\t\r\n") else text
