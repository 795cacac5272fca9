"""VoxCeleb1 and VoxCeleb2 in their published layouts.

VoxCeleb1 (WAV, 16 kHz), either the combined tree or the two archives' trees under ROOT::

    ROOT/wav/id10001/1zcIwhmdeo4/00001.wav
    ROOT/vox1_dev_wav/wav/id10001/1zcIwhmdeo4/00001.wav
    ROOT/vox1_test_wav/wav/id10270/5r0dWxy17C8/00001.wav

VoxCeleb2 (AAC in M4A, read directly; no conversion to WAV)::

    ROOT/dev/aac/id00012/21Uxsk56VDQ/00001.m4a
    ROOT/test/aac/id00017/01dfn2spqyE/00001.m4a

The utt_id is the path under ``wav/`` or ``aac/``, ``id10270/5r0dWxy17C8/00001.wav``: exactly the
names of the official trial lists. The speaker is the ``idNNNNN`` folder.

>>> r = prepare_voxceleb1("/data/voxceleb1", "runs/vox1/data", trials_dir="/data/voxceleb1/meta")
... # doctest: +SKIP
>>> sorted(r.trials)  # doctest: +SKIP
['vox1_E', 'vox1_E_cleaned', 'vox1_H', 'vox1_H_cleaned', 'vox1_O', 'vox1_O_cleaned']
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

__all__ = [
    "VOX1_O_SPEAKERS",
    "VOX1_TRIAL_LISTS",
    "prepare_voxceleb1",
    "prepare_voxceleb2",
]

# The 40 speakers of the VoxCeleb1 test split: the speakers of VoxCeleb1-O (veri_test.txt).
VOX1_O_SPEAKERS: frozenset[str] = frozenset(f"id{n}" for n in range(10270, 10310))

# Official list file -> protocol name, and whether it needs all of VoxCeleb1 (E, H) or only the
# test split (O) as its evaluation manifest.
VOX1_TRIAL_LISTS: dict[str, tuple[str, str]] = {
    "veri_test.txt": ("vox1_O", "test"),
    "veri_test2.txt": ("vox1_O_cleaned", "test"),
    "list_test_all.txt": ("vox1_E", "all"),
    "list_test_all2.txt": ("vox1_E_cleaned", "all"),
    "list_test_hard.txt": ("vox1_H", "all"),
    "list_test_hard2.txt": ("vox1_H_cleaned", "all"),
}

_VOXCELEB_ID = re.compile(r"id\d{5}/[^/]+/[^/]+")


def _collect_voxceleb(
    roots: list[Path], extension: str, collected: Collected, num_workers: int
) -> dict[Path, list]:
    """Probe every ``idNNNNN/<video>/<n>.<ext>`` under each root; returns root -> utterances."""
    seen: dict[str, Path] = {}
    found: dict[Path, list] = {}
    for root in roots:
        files = []
        for file in find_audio(root, [extension]):
            utt_id = file.relative_to(root).as_posix()
            if not _VOXCELEB_ID.fullmatch(utt_id):
                collected.skip(file, f"not in the VoxCeleb layout idNNNNN/<video>/<n>.{extension}")
            elif utt_id in seen:
                collected.skip(file, f"the same utterance is also under {seen[utt_id]}")
            else:
                seen[utt_id] = root
                files.append(FileToProbe(file, utt_id, utt_id.split("/", 1)[0]))
        found[root] = probe_files(files, collected, num_workers=num_workers)
    return found


def prepare_voxceleb1(
    root: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    trials_dir: str | os.PathLike | None = None,
    drop_missing_trials: bool = False,
    vad: str | None = None,
    num_workers: int = 1,
) -> PreparedCorpus:
    """Manifests of VoxCeleb1 and its official trial lists, named by protocol.

    Writes in ``out_dir``: ``train.jsonl`` (every speaker but the 40 test speakers id10270 to
    id10309: the VoxCeleb1 dev split, 1,211 speakers in full), ``test.jsonl`` (those 40, the
    evaluation manifest of VoxCeleb1-O), ``all.jsonl`` (both: the evaluation manifest of
    VoxCeleb1-E and -H, whose trials are drawn from the whole corpus), ``skipped.tsv``, and, for
    each official list in ``trials_dir``, the list under its protocol name: ``veri_test.txt`` ->
    ``vox1_O.txt``, ``veri_test2.txt`` -> ``vox1_O_cleaned.txt``, ``list_test_all.txt`` ->
    ``vox1_E.txt``, ``list_test_all2.txt`` -> ``vox1_E_cleaned.txt``, ``list_test_hard.txt``
    -> ``vox1_H.txt``, ``list_test_hard2.txt`` -> ``vox1_H_cleaned.txt``, in the same
    ``LABEL ENROL TEST`` format with the same ids.

    Args:
        root: the VoxCeleb1 folder (see the module docstring for the layouts read).
        out_dir: where to write; created if missing.
        trials_dir: a folder holding any of the official list files.
        drop_missing_trials: leave out trials naming files that are missing or unreadable
            instead of failing (the protocol is then no longer the official one: a note says so).
        vad: ``"silero"`` or ``"energy"``: split ``train.jsonl`` into speech segments
            (``test`` and ``all`` stay whole files, as the trial lists name them).
        num_workers: threads reading file headers.

    Raises:
        ManifestError: no VoxCeleb1 tree under ``root``, no readable file, a trials folder with
            none of the list files, a malformed list, or list lines naming utterances that are
            not there (all of them, with line numbers; also in ``<protocol>.missing.txt``).
    """
    root, out_dir = Path(os.path.abspath(root)), Path(out_dir)
    require_folder(root, "VoxCeleb1 root")
    check_vad(vad)
    candidates = [root / "wav", root / "vox1_dev_wav" / "wav", root / "vox1_test_wav" / "wav"]
    wav_roots = [p for p in candidates if p.is_dir()]
    if not wav_roots:
        raise ManifestError(
            f"no VoxCeleb1 audio under {root}: expected wav/idNNNNN/<video>/<n>.wav, or "
            "vox1_dev_wav/wav/... and vox1_test_wav/wav/..."
        )
    lists: dict[str, Path] = {}
    if trials_dir is not None:
        trials_dir = Path(trials_dir)
        require_folder(trials_dir, "trials folder")
        lists = {
            name: trials_dir / name for name in VOX1_TRIAL_LISTS if (trials_dir / name).is_file()
        }
        if not lists:
            raise ManifestError(
                f"{trials_dir} holds none of the VoxCeleb1 trial lists "
                f"({', '.join(VOX1_TRIAL_LISTS)})"
            )

    collected = Collected("voxceleb1")
    found = _collect_voxceleb(wav_roots, "wav", collected, num_workers)
    utts = sorted((u for group in found.values() for u in group), key=lambda u: u.utt_id)
    if not utts:
        raise ManifestError(f"no readable VoxCeleb1 audio under {root}")
    collected.manifests["train"] = [u for u in utts if u.speaker not in VOX1_O_SPEAKERS]
    collected.manifests["test"] = [u for u in utts if u.speaker in VOX1_O_SPEAKERS]
    collected.manifests["all"] = utts
    collected.splittable.add("train")
    for name, path in lists.items():
        protocol, manifest = VOX1_TRIAL_LISTS[name]
        known = {u.utt_id for u in collected.manifests[manifest]}
        collected.trials[protocol] = convert_trials(
            path,
            _parse_voxceleb_line,
            known,
            out_dir=out_dir,
            protocol=protocol,
            drop_missing=drop_missing_trials,
            notes=collected.notes,
        )
    return finish(collected, out_dir, vad=vad)


def _parse_voxceleb_line(fields: list[str]) -> tuple[int, str, str] | str:
    if len(fields) != 3:
        return f"expected 3 fields 'LABEL ENROL TEST', got {len(fields)}"
    label = label_01(fields[0])
    if label is None:
        return f"label must be 0 or 1, got {fields[0]!r}"
    return label, fields[1], fields[2]


def prepare_voxceleb2(
    root: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    vad: str | None = None,
    num_workers: int = 1,
) -> PreparedCorpus:
    """Manifests of VoxCeleb2: ``train.jsonl`` from ``dev/aac`` (5,994 speakers in full, the
    usual training set) and ``test.jsonl`` from ``test/aac`` (118 speakers), whichever exist.

    The M4A files are read as they are (:func:`~speakerprint.audio.load_audio` decodes AAC with
    FFmpeg); durations come from the container header.

    Args:
        root: the VoxCeleb2 folder holding ``dev/aac`` and/or ``test/aac``.
        out_dir: where to write; created if missing.
        vad: ``"silero"`` or ``"energy"``: split both manifests into speech segments.
        num_workers: threads reading file headers.

    Raises:
        ManifestError: neither ``dev/aac`` nor ``test/aac`` under ``root``, or no readable file.
    """
    root, out_dir = Path(os.path.abspath(root)), Path(out_dir)
    require_folder(root, "VoxCeleb2 root")
    check_vad(vad)
    splits = {"train": root / "dev" / "aac", "test": root / "test" / "aac"}
    splits = {name: path for name, path in splits.items() if path.is_dir()}
    if not splits:
        raise ManifestError(
            f"no VoxCeleb2 audio under {root}: expected dev/aac/idNNNNN/<video>/<n>.m4a "
            "and/or test/aac/..."
        )
    collected = Collected("voxceleb2")
    found = _collect_voxceleb(list(splits.values()), "m4a", collected, num_workers)
    for name, path in splits.items():
        collected.manifests[name] = found[path]
        collected.splittable.add(name)
    if not any(collected.manifests.values()):
        raise ManifestError(f"no readable VoxCeleb2 audio under {root}")
    return finish(collected, out_dir, vad=vad)
