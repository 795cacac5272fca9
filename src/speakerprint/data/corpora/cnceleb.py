"""CN-Celeb1 and CN-Celeb2 (OpenSLR 82, the FLAC release ``cn-celeb_v2`` / ``cn-celeb2_v2``).

The layout read, as the archives unpack (the WAV release, ``.wav`` files in the same places, is
read too)::

    ROOT/CN-Celeb_flac/data/id00000/singing-01-001.flac    every speaker's recordings, named
                                                            <genre>-<session>-<n>
    ROOT/CN-Celeb_flac/dev/dev.lst                          the 800 training speakers, one a line
    ROOT/CN-Celeb_flac/eval/enroll/id00800-enroll.flac      one enrolment file per eval speaker
    ROOT/CN-Celeb_flac/eval/test/id00800-singing-01-001.flac
    ROOT/CN-Celeb_flac/eval/lists/trials.lst                ENROLL_ID TEST_PATH LABEL, e.g.
                                                            id00800-enroll test/id00800-singing-01-001.wav 1
    ROOT/CN-Celeb2_flac/data/id10000/interview-01-001.flac
    ROOT/CN-Celeb2_flac/spk.lst                             its speakers, one a line

Assumptions, from the published recipes (Kaldi's ``egs/cnceleb``, WeSpeaker's and 3D-Speaker's
``cnceleb`` recipes) rather than from the archives themselves, which were not available here:
the trial list names test files with a ``.wav`` extension even in the FLAC release, and the
enrolment side by its id without folder or extension; ``data/`` also holds the 200 evaluation
speakers' raw recordings (the sources of ``eval/``), which must stay out of training, so training
takes the speakers of ``dev/dev.lst`` (or, without it, those that are not evaluation speakers);
CN-Celeb2 speaker ids do not collide with CN-Celeb1's (an error says so if they do). ROOT may
also be ``CN-Celeb_flac`` or ``CN-Celeb2_flac`` itself. utt_ids are paths relative to ROOT; the
speaker is the ``idNNNNN`` folder, or the part of an eval file name before the first ``-``.

>>> r = prepare_cnceleb("/data/cnceleb", "runs/cnc/data")  # doctest: +SKIP
>>> sorted(r.manifests), sorted(r.trials)  # doctest: +SKIP
(['eval', 'train'], ['cnceleb1_eval'])
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from speakerprint.data.corpora._common import (
    Collected,
    FileToProbe,
    PreparedCorpus,
    check_vad,
    convert_trials,
    find_audio,
    finish,
    label_01,
    probe_files,
    require_folder,
)
from speakerprint.errors import ManifestError

__all__ = ["prepare_cnceleb"]

_EXTENSIONS = ("flac", "wav")
_SPEAKER = re.compile(r"id\d{5}")


def _read_list(path: Path) -> list[str]:
    return [
        line.split()[0] for line in path.read_text(encoding="utf-8").splitlines() if line.strip()
    ]


def _find_parts(root: Path) -> tuple[Path | None, Path | None]:
    cnc1 = cnc2 = None
    for name in ("CN-Celeb_flac", "CN-Celeb_wav", "CN-Celeb"):
        if (root / name).is_dir():
            cnc1 = root / name
            break
    for name in ("CN-Celeb2_flac", "CN-Celeb2_wav", "CN-Celeb2"):
        if (root / name).is_dir():
            cnc2 = root / name
            break
    if cnc1 is None and cnc2 is None and (root / "data").is_dir():
        if (root / "eval").is_dir() or (root / "dev").is_dir():
            cnc1 = root
        else:
            cnc2 = root
    return cnc1, cnc2


def prepare_cnceleb(
    root: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    drop_missing_trials: bool = False,
    vad: str | None = None,
    num_workers: int = 1,
) -> PreparedCorpus:
    """``train.jsonl`` (CN-Celeb1's training speakers and all of CN-Celeb2, whichever are
    present), ``eval.jsonl`` (CN-Celeb1's ``eval/enroll`` and ``eval/test`` files) and
    ``cnceleb1_eval.txt`` (``eval/lists/trials.lst`` in the ``LABEL ENROL TEST`` format, named by
    the eval manifest's ids: CN-Celeb's "Eval-Core" protocol, one enrolment file per speaker).

    Args:
        root: the folder holding ``CN-Celeb_flac`` and/or ``CN-Celeb2_flac`` (or one of them).
        out_dir: where to write; created if missing.
        drop_missing_trials: leave out trials naming missing or unreadable files instead of
            failing (a note says how many).
        vad: ``"silero"`` or ``"energy"``: split ``train.jsonl`` into speech segments (the eval
            files stay whole, as the trial list names them).
        num_workers: threads reading file headers.

    Raises:
        ManifestError: neither corpus under ``root``, no readable file, a malformed trial list,
            lines of it naming files that are not there (all, with line numbers), or a speaker
            id in both corpora.
    """
    root, out_dir = Path(os.path.abspath(root)), Path(out_dir)
    require_folder(root, "CN-Celeb root")
    check_vad(vad)
    cnc1, cnc2 = _find_parts(root)
    if cnc1 is None and cnc2 is None:
        raise ManifestError(
            f"no CN-Celeb under {root}: expected CN-Celeb_flac/data/idNNNNN/<genre>-<s>-<n>.flac "
            "and/or CN-Celeb2_flac/data/..."
        )
    collected = Collected("cnceleb")
    train: list[FileToProbe] = []
    eval_files: list[FileToProbe] = []
    speakers_of: dict[str, set[str]] = {}
    if cnc1 is not None:
        for part in ("enroll", "test"):
            folder = cnc1 / "eval" / part
            if folder.is_dir():
                for file in find_audio(folder, _EXTENSIONS):
                    speaker = file.name.split("-", 1)[0]
                    utt_id = file.relative_to(root).as_posix()
                    if "/" in file.relative_to(folder).as_posix() or not _SPEAKER.fullmatch(
                        speaker
                    ):
                        collected.skip(file, f"not in the layout eval/{part}/idNNNNN-<...>.<ext>")
                        continue
                    eval_files.append(FileToProbe(file, utt_id, speaker))
        eval_speakers = {f.speaker for f in eval_files}
        dev_list = cnc1 / "dev" / "dev.lst"
        if dev_list.is_file():
            wanted = set(_read_list(dev_list))
        else:
            wanted = None
            collected.notes.append(
                f"no {dev_list}: CN-Celeb1 training takes every speaker in data/ that has no "
                "eval/ files"
            )
        train += _data_files(cnc1, root, collected, wanted, exclude=eval_speakers)
        speakers_of["CN-Celeb1"] = {f.speaker for f in train}
    if cnc2 is not None:
        spk_list = cnc2 / "spk.lst"
        wanted = set(_read_list(spk_list)) if spk_list.is_file() else None
        files2 = _data_files(cnc2, root, collected, wanted, exclude=set())
        both = speakers_of.get("CN-Celeb1", set()) & {f.speaker for f in files2}
        if both:
            raise ManifestError(
                f"speaker ids in both CN-Celeb1 ({cnc1}) and CN-Celeb2 ({cnc2}): "
                f"{', '.join(sorted(both)[:10])}; prepare them one at a time"
            )
        train += files2

    train.sort(key=lambda f: f.utt_id)
    train_utts = probe_files(train, collected, num_workers=num_workers)
    eval_utts = probe_files(eval_files, collected, num_workers=num_workers)
    if not train_utts and not eval_utts:
        raise ManifestError(f"no readable CN-Celeb audio under {root}")
    collected.manifests["train"] = train_utts
    collected.splittable.add("train")
    if eval_files:
        collected.manifests["eval"] = eval_utts
    trials_list = cnc1 / "eval" / "lists" / "trials.lst" if cnc1 is not None else None
    if trials_list is not None and trials_list.is_file():
        # The list's names: enrolment by id ("id00800-enroll"), test by "test/<name>.wav".
        names: dict[str, str] = {}
        for utt in eval_utts:
            part, stem = utt.utt_id.split("/")[-2], Path(utt.utt_id).stem
            names[stem if part == "enroll" else f"{part}/{stem}"] = utt.utt_id
        collected.trials["cnceleb1_eval"] = convert_trials(
            trials_list,
            _parse_cnceleb_line,
            names,
            out_dir=out_dir,
            protocol="cnceleb1_eval",
            drop_missing=drop_missing_trials,
            notes=collected.notes,
        )
    return finish(collected, out_dir, vad=vad)


def _data_files(
    corpus: Path, root: Path, collected: Collected, wanted: set[str] | None, exclude: set[str]
) -> list[FileToProbe]:
    """``data/idNNNNN/*`` files of the wanted speakers (all but ``exclude`` when None)."""
    data = corpus / "data"
    if not data.is_dir():
        collected.notes.append(f"no {data}: no training audio from {corpus.name}")
        return []
    files = []
    for file in find_audio(data, _EXTENSIONS):
        parts = file.relative_to(data).as_posix().split("/")
        speaker = parts[0]
        if len(parts) != 2 or not _SPEAKER.fullmatch(speaker):
            collected.skip(file, "not in the layout data/idNNNNN/<genre>-<session>-<n>.<ext>")
            continue
        if (wanted is not None and speaker not in wanted) or speaker in exclude:
            continue
        files.append(FileToProbe(file, file.relative_to(root).as_posix(), speaker))
    return files


def _strip_extension(name: str) -> str:
    head, dot, ext = name.rpartition(".")
    return head if dot and ext.lower() in _EXTENSIONS else name


def _parse_cnceleb_line(fields: list[str]) -> tuple[int, str, str] | str:
    if len(fields) != 3:
        return f"expected 3 fields 'ENROLL_ID TEST_PATH LABEL', got {len(fields)}"
    label = label_01(fields[2])
    if label is None:
        return f"label must be 0 or 1, got {fields[2]!r}"
    enrol = _strip_extension(fields[0]).removeprefix("enroll/")
    return label, enrol, _strip_extension(fields[1])
