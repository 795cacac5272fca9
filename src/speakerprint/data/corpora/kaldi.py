"""A Kaldi data directory: ``wav.scp``, ``utt2spk``, optionally ``segments``, ``spk2gender`` and
``trials``::

    wav.scp      <recording-id> <path>                 (a plain path; see below)
    utt2spk      <utt-id> <speaker>
    segments     <utt-id> <recording-id> <start_s> <end_s>    (end -1: to the end of the file)
    spk2gender   <speaker> f|m
    trials       <utt-id> <utt-id> target|nontarget

Without ``segments`` the wav.scp ids are the utterance ids. Only plain paths are read: a wav.scp
entry that is a command (``sox a.flac -t wav - |``) or an archive offset (``feats.ark:123``)
cannot be opened as a file, and every such line is reported at once with its line number (turn
them into files first, e.g. with Kaldi's ``wav-copy``). Relative paths are relative to
``path_root``, by default the current folder, as Kaldi recipes run from their top folder.

>>> r = prepare_kaldi("egs/sre/data/train", "runs/sre/data")  # doctest: +SKIP
>>> r.manifests  # doctest: +SKIP
{'train': PosixPath('runs/sre/data/train.jsonl')}
"""

from __future__ import annotations

import math
import os
import re
from pathlib import Path

from speakerprint.audio import AudioLoadError, audio_info
from speakerprint.data.corpora._common import (
    Collected,
    PreparedCorpus,
    check_vad,
    convert_trials,
    finish,
    label_01,
    require_folder,
)
from speakerprint.data.manifest import Utterance, raise_problems, read_text_file
from speakerprint.errors import ManifestError

__all__ = ["prepare_kaldi"]

_ARCHIVE_OFFSET = re.compile(r".*\.ark:\d+(\[.*\])?")


def _table(path: Path, what: str, problems: list[str], min_fields: int = 2) -> dict[str, tuple]:
    """``key -> (line number, rest of the fields...)`` of a Kaldi text table."""
    table: dict[str, tuple] = {}
    for number, line in enumerate(read_text_file(path, what).splitlines(), start=1):
        fields = line.split()
        if not fields:
            continue
        if len(fields) < min_fields:
            problems.append(f"{path}:{number}: expected at least {min_fields} fields")
        elif fields[0] in table:
            problems.append(
                f"{path}:{number}: duplicate id {fields[0]!r} (first on line {table[fields[0]][0]})"
            )
        else:
            table[fields[0]] = (number, *fields[1:])
    return table


def prepare_kaldi(
    data_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    path_root: str | os.PathLike | None = None,
    name: str | None = None,
    vad: str | None = None,
) -> PreparedCorpus:
    """One manifest, ``<name>.jsonl`` (by default the data folder's name), of the utterances of
    a Kaldi data directory, and ``trials.txt`` when it holds a ``trials`` file.

    Segments become utterances with ``offset_s``. Recordings that cannot be read go into
    ``skipped.tsv`` with their segments.

    Args:
        data_dir: the Kaldi data folder.
        out_dir: where to write; created if missing.
        path_root: what relative wav.scp paths are relative to; by default the current folder.
        name: the manifest's name.
        vad: ``"silero"`` or ``"energy"``: split the manifest into speech segments (not when a
            ``trials`` file names its utterances).

    Raises:
        ManifestError: a missing ``wav.scp`` or ``utt2spk``; or, all at once with ``FILE:LINE``,
            command or archive entries in wav.scp, malformed or duplicate lines, utterances
            without a speaker, segments naming unknown recordings or with bad times, trials
            naming unknown utterances.
    """
    data_dir, out_dir = Path(data_dir), Path(out_dir)
    require_folder(data_dir, "Kaldi data folder")
    check_vad(vad)
    base = Path(os.path.abspath(path_root if path_root is not None else os.getcwd()))
    name = name or Path(os.path.abspath(data_dir)).name
    problems: list[str] = []
    wav_scp = data_dir / "wav.scp"
    recordings: dict[str, tuple[int, Path]] = {}
    for number, line in enumerate(read_text_file(wav_scp, "wav.scp").splitlines(), start=1):
        fields = line.strip().split(None, 1)
        if not fields:
            continue
        if len(fields) < 2:
            problems.append(f"{wav_scp}:{number}: expected '<recording-id> <path>'")
            continue
        rec_id, target = fields[0], fields[1].strip()
        if target.endswith("|"):
            problems.append(
                f"{wav_scp}:{number}: a command ('... |') is not supported: convert it to a file"
            )
        elif target.startswith("-") or _ARCHIVE_OFFSET.fullmatch(target):
            problems.append(
                f"{wav_scp}:{number}: an archive or stream entry is not supported: use a file"
            )
        elif rec_id in recordings:
            problems.append(
                f"{wav_scp}:{number}: duplicate id {rec_id!r} (first on line "
                f"{recordings[rec_id][0]})"
            )
        else:
            recordings[rec_id] = (number, base / target)
    utt2spk = _table(data_dir / "utt2spk", "utt2spk", problems)
    spk2gender_path = data_dir / "spk2gender"
    spk2gender = (
        _table(spk2gender_path, "spk2gender", problems) if spk2gender_path.is_file() else {}
    )
    segments_path = data_dir / "segments"
    if segments_path.is_file():
        segments = _table(segments_path, "segments", problems, min_fields=4)
    else:
        segments = {
            rec_id: (number, rec_id, "0", "-1") for rec_id, (number, _) in recordings.items()
        }
    raise_problems(data_dir, problems, "Kaldi data folder")

    collected = Collected("kaldi")
    infos: dict[str, object] = {}
    utts: list[Utterance] = []
    where = segments_path if segments_path.is_file() else wav_scp
    for utt_id, (number, rec_id, start_text, end_text) in segments.items():
        if rec_id not in recordings:
            problems.append(f"{where}:{number}: recording {rec_id!r} is not in wav.scp")
            continue
        if utt_id not in utt2spk:
            problems.append(f"{where}:{number}: utterance {utt_id!r} is not in utt2spk")
            continue
        try:
            start, end = float(start_text), float(end_text)
        except ValueError:
            problems.append(f"{where}:{number}: start and end must be numbers")
            continue
        if rec_id not in infos:
            path = recordings[rec_id][1]
            try:
                infos[rec_id] = audio_info(path)
            except AudioLoadError as err:
                infos[rec_id] = None
                collected.skip(path, getattr(err, "reason", None) or str(err))
        info = infos[rec_id]
        if info is None:
            continue
        whole = not segments_path.is_file()
        end = info.duration_s if end < 0 else end
        if not (math.isfinite(start) and 0 <= start < end <= info.duration_s + 0.01):
            problems.append(
                f"{where}:{number}: segment {start_text}..{end_text} is not inside the "
                f"recording ({info.duration_s:.3f} s)"
            )
            continue
        speaker = utt2spk[utt_id][1]
        gender = spk2gender.get(speaker, (0, None))[1]
        utts.append(
            Utterance(
                utt_id=utt_id,
                path=str(recordings[rec_id][1]),
                speaker=speaker,
                duration_s=float(info.duration_s) if whole else round(end - start, 6),
                sample_rate=int(info.sample_rate),
                offset_s=None if whole else start,
                gender=None if gender is None else gender.lower(),
            )
        )
    raise_problems(data_dir, problems, "Kaldi data folder")
    if not utts:
        raise ManifestError(f"no readable audio in the Kaldi data folder {data_dir}")
    utts.sort(key=lambda u: u.utt_id)
    collected.manifests[name] = utts
    trials_path = data_dir / "trials"
    if trials_path.is_file():
        collected.trials["trials"] = convert_trials(
            trials_path,
            _parse_kaldi_trial,
            {u.utt_id for u in utts},
            out_dir=out_dir,
            protocol="trials",
        )
    else:
        collected.splittable.add(name)
    return finish(collected, out_dir, vad=vad)


def _parse_kaldi_trial(fields: list[str]) -> tuple[int, str, str] | str:
    if len(fields) != 3:
        return f"expected 3 fields '<utt-id> <utt-id> target|nontarget', got {len(fields)}"
    label = label_01(fields[2])
    if label is None:
        return f"the third field must be target or nontarget, got {fields[2]!r}"
    return label, fields[0], fields[1]
