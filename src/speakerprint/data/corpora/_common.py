"""What every corpus preparer shares: probing files, skipped files, official trial lists, VAD
segmentation, and writing it all out."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path

from speakerprint.audio import AudioLoadError, audio_info, load_audio
from speakerprint.data.manifest import Utterance, raise_problems, read_text_file, write_manifest
from speakerprint.data.prepare import _audio_files, _one_field
from speakerprint.data.trials import Trial, write_trials
from speakerprint.errors import ManifestError
from speakerprint.utils.io import atomic_open

logger = logging.getLogger("speakerprint.data.corpora")

# VAD runs at this rate whatever the file's; segment times are in seconds, so they hold for any.
VAD_SAMPLE_RATE = 16000


@dataclass(frozen=True)
class PreparedCorpus:
    """What a corpus preparer wrote, and how much.

    Attributes:
        corpus: the preparer's name (``"voxceleb1"``, ...).
        manifests: manifest name (``"train"``, ``"test"``, a subset) -> path of its JSONL file.
        num_utts: manifest name -> utterances (segments, with VAD) in it.
        num_speakers: manifest name -> distinct speakers in it.
        trials: protocol name (``"vox1_O"``, ...) -> path of its trial list.
        num_trials: protocol name -> trials in it.
        skipped: ``skipped.tsv``: ``path<TAB>reason`` for every file left out.
        num_skipped: lines in it.
        notes: what the preparer found odd but handled (a speaker without transcripts, ...).
    """

    corpus: str
    manifests: dict[str, Path]
    num_utts: dict[str, int]
    num_speakers: dict[str, int]
    trials: dict[str, Path]
    num_trials: dict[str, int]
    skipped: Path
    num_skipped: int
    notes: tuple[str, ...] = ()

    def summary(self) -> str:
        """A few lines for people: each manifest and trial list with its counts."""
        lines = [
            f"{name}: {self.num_utts[name]} utterances of {self.num_speakers[name]} speakers "
            f"-> {path}"
            for name, path in self.manifests.items()
        ]
        lines += [
            f"{name} trials: {self.num_trials[name]} -> {path}"
            for name, path in self.trials.items()
        ]
        lines += [f"note: {note}" for note in self.notes]
        if self.num_skipped:
            lines.append(f"skipped {self.num_skipped} files, listed in {self.skipped}")
        return "\n".join(lines)


@dataclass
class Collected:
    """A preparer's work in progress: manifests, trial lists, skipped files and notes."""

    corpus: str
    manifests: dict[str, list[Utterance]] = field(default_factory=dict)
    # Manifests that VAD may split into segments: training sets, never those trials name.
    splittable: set[str] = field(default_factory=set)
    trials: dict[str, list[Trial]] = field(default_factory=dict)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def skip(self, path: str | os.PathLike, reason: str) -> None:
        logger.warning("skipping %s: %s", path, reason)
        self.skipped.append((os.fspath(path), reason))


@dataclass(frozen=True)
class FileToProbe:
    """An audio file found in a corpus, with the names the corpus gives it."""

    path: Path
    utt_id: str
    speaker: str
    gender: str | None = None


def find_audio(root: Path, extensions: Iterable[str]) -> list[Path]:
    """Audio files under ``root`` with these extensions, sorted by relative path."""
    return list(_audio_files(root, {e.lower().lstrip(".") for e in extensions}))


def probe_files(
    files: Sequence[FileToProbe], collected: Collected, *, num_workers: int = 1
) -> list[Utterance]:
    """Utterances of the files whose header reads, in the order given; the rest are skipped.

    ``num_workers`` threads read headers at once (worth it on network file systems).
    """

    def probe(item: FileToProbe) -> Utterance | str:
        if any(c.isspace() for c in item.utt_id):
            return "path holds whitespace, which a trial list cannot hold"
        try:
            info = audio_info(item.path)
        except AudioLoadError as err:
            return getattr(err, "reason", None) or str(err)
        return Utterance(
            utt_id=item.utt_id,
            path=str(item.path),
            speaker=item.speaker,
            duration_s=float(info.duration_s),
            sample_rate=int(info.sample_rate),
            gender=item.gender,
        )

    if num_workers > 1:
        with ThreadPoolExecutor(num_workers) as pool:
            results = list(pool.map(probe, files))
    else:
        results = [probe(item) for item in files]
    utts = []
    for item, result in zip(files, results):
        if isinstance(result, str):
            collected.skip(item.path, result)
        else:
            utts.append(result)
    return utts


def speaker_count(utts: Iterable[Utterance]) -> int:
    return len({u.speaker for u in utts})


def convert_trials(
    path: Path,
    parse: Callable[[list[str]], tuple[int, str, str] | str],
    known_ids: Mapping[str, str] | set[str],
    *,
    out_dir: Path,
    protocol: str,
    drop_missing: bool = False,
    notes: list[str] | None = None,
) -> list[Trial]:
    """Read an official trial list line by line into :class:`Trial` s named by manifest ids.

    ``parse`` turns a line's fields into ``(label, enrol, test)`` or returns a problem in words.
    ``known_ids`` maps the list's names to manifest utt ids (or is the set of ids, named as is).
    Every line naming an utterance that is not in the manifest is reported at once, with its
    line number, in ``out_dir/<protocol>.missing.txt`` and (the first ones) in the error.

    Raises:
        ManifestError: malformed lines; or lines naming missing utterances, unless
            ``drop_missing``, which leaves those trials out (and says so in ``notes``).
    """
    text = read_text_file(path, "trial list")
    trials: list[Trial] = []
    malformed: list[str] = []
    missing: list[str] = []
    mapping = known_ids if isinstance(known_ids, Mapping) else None
    for line_number, line in enumerate(text.splitlines(), start=1):
        fields = line.split()
        if not fields:
            continue
        parsed = parse(fields)
        if isinstance(parsed, str):
            malformed.append(f"{path}:{line_number}: {parsed}")
            continue
        label, enrol, test = parsed
        names = [enrol, test]
        ids = [mapping.get(n) for n in names] if mapping is not None else names
        absent = [
            n for n, i in zip(names, ids) if i is None or (mapping is None and i not in known_ids)
        ]
        if absent:
            listed = " and ".join(repr(n) for n in dict.fromkeys(absent))
            missing.append(f"{path}:{line_number}: {listed} not in the prepared manifest")
            continue
        trials.append(Trial(label, ids[0], ids[1]))
    raise_problems(path, malformed, "trial list")
    if missing:
        report = out_dir / f"{protocol}.missing.txt"
        with atomic_open(report, "w", encoding="utf-8") as f:
            f.writelines(line + "\n" for line in missing)
        if not drop_missing:
            problems = [f"every line is listed in {report}", *missing]
            raise_problems(
                path, problems, f"trial list {protocol} (utterances missing or unreadable)"
            )
        if notes is not None:
            notes.append(
                f"{protocol}: left out {len(missing)} trials naming missing utterances "
                f"(listed in {report})"
            )
    return trials


def label_01(text: str) -> int | None:
    """A trial label as 1 or 0, from ``1``/``0`` or ``target``/``nontarget``; None otherwise."""
    return {"1": 1, "0": 0, "target": 1, "nontarget": 0}.get(text.lower())


def split_with_vad(utts: Sequence[Utterance], method: str, collected: Collected) -> list[Utterance]:
    """Each utterance cut into its speech segments, ``<utt_id>@<start>-<end>`` (seconds in the
    file, 2 decimals), with ``offset_s`` and ``duration_s`` rounded to the millisecond. Files
    with no speech, or unreadable, are skipped."""
    from speakerprint.audio.vad import make_vad

    vad = make_vad(method)
    segments: list[Utterance] = []
    for utt in utts:
        base = utt.offset_s or 0.0
        try:
            wav = load_audio(
                utt.path,
                VAD_SAMPLE_RATE,
                start_s=base,
                duration_s=utt.duration_s if utt.offset_s is not None else None,
            )
        except AudioLoadError as err:
            collected.skip(utt.path, getattr(err, "reason", None) or str(err))
            continue
        found = vad(wav, VAD_SAMPLE_RATE)
        if not found:
            collected.skip(utt.path, f"no speech found by the {method} VAD")
            continue
        for seg in found:
            start, end = base + seg.start_s, base + seg.end_s
            segments.append(
                replace(
                    utt,
                    utt_id=f"{utt.utt_id}@{start:.2f}-{end:.2f}",
                    offset_s=round(start, 3),
                    duration_s=round(end - start, 3),
                )
            )
    return segments


def finish(collected: Collected, out_dir: Path, *, vad: str | None = None) -> PreparedCorpus:
    """Apply VAD to the splittable manifests, then write manifests, trial lists, skipped.tsv."""
    manifests: dict[str, Path] = {}
    num_utts: dict[str, int] = {}
    num_speakers: dict[str, int] = {}
    for name, utts in collected.manifests.items():
        if vad is not None and name in collected.splittable:
            utts = split_with_vad(utts, vad, collected)
        path = out_dir / f"{name}.jsonl"
        write_manifest(path, utts)
        manifests[name] = path
        num_utts[name] = len(utts)
        num_speakers[name] = speaker_count(utts)
    trials: dict[str, Path] = {}
    for name, items in collected.trials.items():
        trials[name] = out_dir / f"{name}.txt"
        write_trials(trials[name], items)
    skipped = out_dir / "skipped.tsv"
    with atomic_open(skipped, "w", encoding="utf-8") as f:
        f.write("path\treason\n")
        for path, reason in collected.skipped:
            f.write(f"{_one_field(path)}\t{_one_field(reason)}\n")
    return PreparedCorpus(
        corpus=collected.corpus,
        manifests=manifests,
        num_utts=num_utts,
        num_speakers=num_speakers,
        trials=trials,
        num_trials={name: len(items) for name, items in collected.trials.items()},
        skipped=skipped,
        num_skipped=len(collected.skipped),
        notes=tuple(collected.notes),
    )


def require_folder(path: Path, what: str) -> None:
    if not path.is_dir():
        raise ManifestError(f"{what} is not a folder: {path}")


def check_vad(vad: str | None) -> None:
    from speakerprint.audio.vad import VAD_METHODS

    if vad is not None and vad not in VAD_METHODS:
        raise ValueError(f"unknown VAD method {vad!r}; choose one of {', '.join(VAD_METHODS)}")
