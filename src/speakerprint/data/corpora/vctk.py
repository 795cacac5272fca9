"""VCTK in both published versions.

0.80 (``VCTK-Corpus``, WAV at 48 kHz)::

    ROOT/wav48/p225/p225_001.wav
    ROOT/txt/p225/p225_001.txt
    ROOT/speaker-info.txt            (ID AGE GENDER ACCENTS REGION; IDs without the "p": 225)

0.92 (``VCTK-Corpus-0.92``, FLAC at 48 kHz, two microphones, silence trimmed)::

    ROOT/wav48_silence_trimmed/p225/p225_001_mic1.flac
    ROOT/wav48_silence_trimmed/p225/p225_001_mic2.flac
    ROOT/txt/p225/p225_001.txt
    ROOT/speaker-info.txt            (IDs with the "p": p225)

ROOT may also be the folder holding ``VCTK-Corpus``. The odd cases are handled, not refused: p315
has no transcripts (speaker recognition does not need them: a note says so), speaker ``s5`` is
not named ``pNNN``, and p280 has no mic2 files in 0.92 (a note when mic2 is asked for). The
speaker is the folder name; the utt_id is the path under ``wav48*/``, ``p225/p225_001_mic1.flac``.

>>> r = prepare_vctk("/data/VCTK-Corpus-0.92", "runs/vctk/data", mic="both")  # doctest: +SKIP
"""

from __future__ import annotations

import os
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
from speakerprint.errors import ManifestError

__all__ = ["VCTK_MICS", "prepare_vctk", "read_vctk_speakers"]

VCTK_MICS: tuple[str, ...] = ("mic1", "mic2", "both")


def read_vctk_speakers(path: str | os.PathLike) -> dict[str, str]:
    """Speaker -> gender (``"f"``/``"m"``) from ``speaker-info.txt`` of either version.

    The first line is the header; each other line starts ``ID AGE GENDER``. 0.80 writes the id
    without its ``p`` (``225``), which is added back. Lines that do not fit are ignored (some
    carry only comments).
    """
    genders: dict[str, str] = {}
    lines = Path(path).read_text(encoding="utf-8", errors="replace").splitlines()
    for line in lines[1:]:
        fields = line.split()
        if len(fields) >= 3 and fields[2].upper() in ("F", "M"):
            speaker = f"p{fields[0]}" if fields[0].isdigit() else fields[0]
            genders[speaker] = fields[2].lower()
    return genders


def prepare_vctk(
    root: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    mic: str | None = None,
    vad: str | None = None,
    num_workers: int = 1,
) -> PreparedCorpus:
    """One manifest, ``all.jsonl``, of every VCTK speaker (VCTK has no official split), with
    genders from ``speaker-info.txt``.

    Args:
        root: the VCTK folder (0.80 or 0.92), or the folder holding ``VCTK-Corpus``.
        out_dir: where to write; created if missing.
        mic: 0.92 only: ``"mic1"`` (the default), ``"mic2"`` or ``"both"`` (both recordings of
            each sentence, as two utterances of the same speaker).
        vad: ``"silero"`` or ``"energy"``: split the manifest into speech segments.
        num_workers: threads reading file headers.

    Raises:
        ManifestError: neither ``wav48`` nor ``wav48_silence_trimmed`` under ``root``, or no
            readable file.
        ValueError: an unknown ``mic``, or ``mic`` given for 0.80 (one microphone).
    """
    root, out_dir = Path(os.path.abspath(root)), Path(out_dir)
    require_folder(root, "VCTK root")
    check_vad(vad)
    if mic is not None and mic not in VCTK_MICS:
        raise ValueError(f"mic must be one of {', '.join(VCTK_MICS)}, got {mic!r}")
    if not any((root / d).is_dir() for d in ("wav48", "wav48_silence_trimmed")):
        if (root / "VCTK-Corpus").is_dir():
            root = root / "VCTK-Corpus"
    if (root / "wav48_silence_trimmed").is_dir():
        audio_dir, version = root / "wav48_silence_trimmed", "0.92"
        mics = {"mic1": ("mic1",), "mic2": ("mic2",), "both": ("mic1", "mic2")}[mic or "mic1"]
    elif (root / "wav48").is_dir():
        audio_dir, version, mics = root / "wav48", "0.80", ()
        if mic is not None:
            raise ValueError("VCTK 0.80 (wav48/) has one microphone: leave out mic")
    else:
        raise ManifestError(
            f"no VCTK audio under {root}: expected wav48/pNNN/pNNN_NNN.wav (0.80) or "
            "wav48_silence_trimmed/pNNN/pNNN_NNN_mic1.flac (0.92)"
        )
    info = root / "speaker-info.txt"
    genders = read_vctk_speakers(info) if info.is_file() else {}

    collected = Collected("vctk")
    files = []
    mics_of: dict[str, set[str]] = {}
    for file in find_audio(audio_dir, ["flac"] if version == "0.92" else ["wav"]):
        relative = file.relative_to(audio_dir).as_posix()
        parts = relative.split("/")
        stem = file.name.rsplit(".", 1)[0]
        speaker = parts[0]
        if len(parts) != 2 or not stem.startswith(f"{speaker}_"):
            collected.skip(file, "not in the layout <speaker>/<speaker>_<n>[_micN].<ext>")
            continue
        if version == "0.92":
            file_mic = stem.rsplit("_", 1)[-1]
            if file_mic not in ("mic1", "mic2"):
                collected.skip(file, "0.92 file name without _mic1 or _mic2")
                continue
            mics_of.setdefault(speaker, set()).add(file_mic)
            if file_mic not in mics:
                continue
        files.append(FileToProbe(file, relative, speaker, genders.get(speaker)))
    for speaker in sorted(mics_of):
        lacking = [m for m in mics if m not in mics_of[speaker]]
        if lacking:
            collected.notes.append(f"{speaker}: no {' or '.join(lacking)} files")
    speakers = sorted({f.speaker for f in files} | set(mics_of))
    no_text = [s for s in speakers if not (root / "txt" / s).is_dir()]
    if no_text:
        collected.notes.append(
            f"no transcripts (txt/<speaker>) for {', '.join(no_text)}: audio used as it is"
        )
    no_gender = [s for s in speakers if s not in genders]
    if no_gender:
        collected.notes.append(f"not in speaker-info.txt, so no gender: {', '.join(no_gender)}")
    utts = probe_files(files, collected, num_workers=num_workers)
    if not utts:
        raise ManifestError(f"no readable VCTK audio ({', '.join(mics) or 'wav'}) in {audio_dir}")
    collected.manifests["all"] = utts
    collected.splittable.add("all")
    return finish(collected, out_dir, vad=vad)
