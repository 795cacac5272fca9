"""LibriSpeech in its published layout (FLAC, 16 kHz)::

    ROOT/LibriSpeech/SPEAKERS.TXT
    ROOT/LibriSpeech/train-clean-100/103/1240/103-1240.trans.txt
    ROOT/LibriSpeech/train-clean-100/103/1240/103-1240-0000.flac

ROOT may also be the ``LibriSpeech`` folder itself. The speaker is the reader's number (``103``);
the utt_id is the path under ``LibriSpeech/``, ``train-clean-100/103/1240/103-1240-0000.flac``.
Each speaker reads in one subset only, so subsets are speaker-disjoint.

>>> r = prepare_librispeech("/data", "runs/ls/data", subsets=["train-clean-100", "test-clean"])
... # doctest: +SKIP
>>> sorted(r.manifests)  # doctest: +SKIP
['test-clean', 'train-clean-100']
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path

from speakerprint.data.corpora._common import (
    Collected,
    FileToProbe,
    PreparedCorpus,
    check_vad,
    find_audio,
    finish,
    probe_files,
    require_folder,
)
from speakerprint.data.manifest import raise_problems, read_text_file
from speakerprint.errors import ManifestError

__all__ = ["LIBRISPEECH_SUBSETS", "prepare_librispeech", "read_librispeech_speakers"]

LIBRISPEECH_SUBSETS: tuple[str, ...] = (
    "train-clean-100",
    "train-clean-360",
    "train-other-500",
    "dev-clean",
    "dev-other",
    "test-clean",
    "test-other",
)

_FILE = re.compile(r"(\d+)/(\d+)/(\d+)-(\d+)-(\d+)\.flac")


def read_librispeech_speakers(path: str | os.PathLike) -> dict[str, str]:
    """Speaker -> gender (``"f"``/``"m"``) from ``SPEAKERS.TXT``.

    Lines are ``ID | SEX | SUBSET | MINUTES | NAME``; lines starting with ``;`` are comments.
    Names may hold ``|`` themselves (speaker 60 is ``|CBW|Simon``), so only the first four
    separators count.

    Raises:
        ManifestError: lines that are not in that form, with their line numbers.
    """
    path = Path(path)
    genders: dict[str, str] = {}
    problems = []
    for number, line in enumerate(read_text_file(path, "speaker list").splitlines(), start=1):
        if not line.strip() or line.lstrip().startswith(";"):
            continue
        fields = [f.strip() for f in line.split("|", 4)]
        if len(fields) < 3 or not fields[0].isdigit() or fields[1].upper() not in ("F", "M"):
            problems.append(f"{path}:{number}: expected 'ID | SEX | SUBSET | MINUTES | NAME'")
            continue
        genders[fields[0]] = fields[1].lower()
    raise_problems(path, problems, "speaker list")
    return genders


def prepare_librispeech(
    root: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    subsets: Sequence[str] | None = None,
    vad: str | None = None,
    num_workers: int = 1,
) -> PreparedCorpus:
    """One manifest per subset, ``<subset>.jsonl``, with each speaker's gender from
    ``SPEAKERS.TXT`` when that file is there.

    The ``*.trans.txt`` files are checked against the audio: an utterance they list whose FLAC
    file is missing goes into ``skipped.tsv``. A FLAC file whose name does not match its
    folders (``<spk>/<chapter>/<spk>-<chapter>-<n>.flac``) is skipped too.

    Args:
        root: the folder holding ``LibriSpeech/``, or ``LibriSpeech/`` itself.
        out_dir: where to write; created if missing.
        subsets: subset folders to take, any of :data:`LIBRISPEECH_SUBSETS` (or other folders
            in the same layout); by default every subset present.
        vad: ``"silero"`` or ``"energy"``: split every manifest into speech segments.
        num_workers: threads reading file headers.

    Raises:
        ManifestError: no subset found, a requested subset missing, a malformed SPEAKERS.TXT,
            or no readable file in a subset.
    """
    root, out_dir = Path(os.path.abspath(root)), Path(out_dir)
    require_folder(root, "LibriSpeech root")
    check_vad(vad)
    base = root / "LibriSpeech" if (root / "LibriSpeech").is_dir() else root
    present = [s for s in LIBRISPEECH_SUBSETS if (base / s).is_dir()]
    if subsets is None:
        if not present:
            raise ManifestError(
                f"no LibriSpeech subset under {base}: expected one of "
                f"{', '.join(LIBRISPEECH_SUBSETS)}"
            )
        subsets = present
    else:
        subsets = list(dict.fromkeys(subsets))
        absent = [s for s in subsets if not (base / s).is_dir()]
        if absent:
            raise ManifestError(
                f"LibriSpeech subset(s) {', '.join(absent)} not found under {base}; present: "
                f"{', '.join(present) or 'none'}"
            )
    speakers_file = base / "SPEAKERS.TXT"
    genders = read_librispeech_speakers(speakers_file) if speakers_file.is_file() else {}

    collected = Collected("librispeech")
    if not genders:
        collected.notes.append(f"no {speakers_file}: manifests carry no gender")
    for subset in subsets:
        subset_dir = base / subset
        files = []
        for file in find_audio(subset_dir, ["flac"]):
            relative = file.relative_to(subset_dir).as_posix()
            match = _FILE.fullmatch(relative)
            if not match or match[1] != match[3] or match[2] != match[4]:
                collected.skip(
                    file, "not in the layout <speaker>/<chapter>/<speaker>-<chapter>-<n>.flac"
                )
                continue
            files.append(FileToProbe(file, f"{subset}/{relative}", match[1], genders.get(match[1])))
        _check_transcripts(subset_dir, collected)
        utts = probe_files(files, collected, num_workers=num_workers)
        if not utts:
            raise ManifestError(f"no readable LibriSpeech audio in {subset_dir}")
        collected.manifests[subset] = utts
        collected.splittable.add(subset)
    return finish(collected, out_dir, vad=vad)


def _check_transcripts(subset_dir: Path, collected: Collected) -> None:
    """Skip-list every utterance a ``*.trans.txt`` names whose FLAC file is not there."""
    for trans in sorted(subset_dir.glob("*/*/*.trans.txt")):
        for line in trans.read_text(encoding="utf-8", errors="replace").splitlines():
            utt = line.split(" ", 1)[0].strip()
            if utt and not (trans.parent / f"{utt}.flac").exists():
                collected.skip(trans.parent / f"{utt}.flac", f"listed in {trans.name} but missing")
