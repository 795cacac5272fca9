"""Batch extraction of embeddings: inputs to (key, path) items, batches by length, the writers.

This is the library under ``speakerprint embed`` (and every other command that embeds files):

- :func:`collect_inputs` expands audio files, folders (recursive), JSONL manifests and Kaldi
  ``wav.scp`` files into keyed items; :func:`length_batches` packs them by duration;
- :func:`extract_embeddings` embeds the items with a :class:`SpeakerEncoder`, decoding the next
  batch in a thread while this one runs, and :func:`write_embeddings` writes them (npz, npy,
  Kaldi ark, jsonl);
- :func:`embed_recording` embeds one file; a recording longer than :data:`LONG_RECORDING_S` goes
  through the streaming path of :meth:`SpeakerEncoder.embed_file`, so memory stays bounded
  whatever its length (a full-length pass over 10 minutes takes about 1.5 GB);
  :func:`embed_speech` does the same once the file has passed the speech check of
  :mod:`speakerprint.inference.speech` (what ``verify``, ``enroll`` and ``identify`` embed);
- :func:`embed_manifest` embeds a manifest's utterances with a bundle, through the evaluation's
  embedding code and its on-disk cache.

>>> enc = SpeakerEncoder.from_pretrained()  # doctest: +SKIP
>>> result = extract_embeddings(enc, collect_inputs([Path("clips/")]))  # doctest: +SKIP
>>> write_embeddings(Path("emb.npy"), "npy", result.keys, result.embeddings)  # doctest: +SKIP
"""

from __future__ import annotations

import io
import json
import os
import struct
import sys
import time
import zipfile
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from speakerprint.audio import AudioLoadError, audio_info, load_audio, stream_audio
from speakerprint.errors import ConfigError
from speakerprint.inference.speech import DEFAULT_MIN_SPEECH_S, require_speech

if TYPE_CHECKING:  # pragma: no cover
    from speakerprint.data.manifest import Utterance
    from speakerprint.inference.encoder import SpeakerEncoder
    from speakerprint.inference.result import VerificationResult

__all__ = [
    "FORMATS",
    "LONG_RECORDING_S",
    "ExtractionResult",
    "InputItem",
    "SpeechEmbedding",
    "collect_inputs",
    "companion_path",
    "embed_manifest",
    "embed_recording",
    "embed_speech",
    "extract_embeddings",
    "kaldi_ark_bytes",
    "length_batches",
    "prefetched",
    "verify_recordings",
    "write_embeddings",
]

FORMATS = ("npz", "npy", "ark", "jsonl")
#: Recordings longer than this (seconds) are embedded from streamed windows, not in one pass:
#: one pass holds the encoder's activations for every frame (+1.5 GB at 10 minutes).
LONG_RECORDING_S = 60.0
#: Window (and hop) of a long recording's embedding, in seconds, and windows per forward pass:
#: at most 40 s of audio in the encoder at a time, less than one pass over LONG_RECORDING_S.
LONG_WINDOW_S = 10.0
LONG_BATCH_SIZE = 4


@dataclass(frozen=True)
class InputItem:
    """One recording to embed: its key in the output, its path, its duration if known."""

    key: str
    path: str
    duration_s: float | None = None  # known from a manifest; else read from the header


def _audio_files(folder: Path) -> list[Path]:
    from speakerprint.data.prepare import AUDIO_EXTENSIONS

    extensions = {"." + e for e in AUDIO_EXTENSIONS}
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in extensions and p.is_file())


def _read_wav_scp(path: Path) -> list[InputItem]:
    from speakerprint.data.manifest import raise_problems, read_text_file

    items, problems = [], []
    for number, line in enumerate(read_text_file(path, "wav.scp").splitlines(), start=1):
        if not line.strip():
            continue
        parts = line.strip().split(maxsplit=1)
        if len(parts) != 2:
            problems.append(f"{path}:{number}: expected '<key> <audio path>', got {line.strip()!r}")
        elif parts[1].rstrip().endswith("|"):
            problems.append(
                f"{path}:{number}: piped commands are not supported; convert the audio to files "
                "first (e.g. with sox) and list their paths"
            )
        else:
            items.append(InputItem(parts[0], parts[1].strip()))
    raise_problems(path, problems, "wav.scp")
    return items


def collect_inputs(inputs: Sequence[Path]) -> list[InputItem]:
    """Expand files, folders, manifests and wav.scp files into (key, path) items, in order.

    Keys: a file's path as given; a folder's files, the folder as given joined with the file's
    path inside it; a manifest's ``utt_id``; a wav.scp's key (paths relative to the working
    directory, as in Kaldi; piped commands are refused).

    Raises:
        ConfigError: a folder with no audio, or a key given twice.
        ManifestError: a malformed manifest or wav.scp.
    """
    from speakerprint.data.manifest import read_manifest
    from speakerprint.data.prepare import AUDIO_EXTENSIONS

    items: list[InputItem] = []
    for given in inputs:
        if given.is_dir():
            files = _audio_files(given)
            if not files:
                raise ConfigError(
                    f"folder {given} holds no audio files ({', '.join(AUDIO_EXTENSIONS)})"
                )
            items += [InputItem(str(given / f.relative_to(given)), str(f)) for f in files]
        elif given.suffix.lower() == ".jsonl":
            items += [InputItem(u.utt_id, u.path, u.duration_s) for u in read_manifest(given)]
        elif given.suffix.lower() == ".scp":
            items += _read_wav_scp(given)
        else:
            items.append(InputItem(str(given), str(given)))
    seen: dict[str, int] = {}
    duplicates = []
    for item in items:
        seen[item.key] = seen.get(item.key, 0) + 1
        if seen[item.key] == 2:
            duplicates.append(item.key)
    if duplicates:
        shown = ", ".join(duplicates[:5]) + (" ..." if len(duplicates) > 5 else "")
        raise ConfigError(f"{len(duplicates)} key(s) appear more than once in the inputs: {shown}")
    return items


def length_batches(durations: Sequence[float], batch_seconds: float) -> list[list[int]]:
    """Indices sorted by duration (longest first) and packed into batches whose padded length
    (size x longest) stays within ``batch_seconds``; a longer recording is a batch of its own."""
    order = np.argsort(-np.asarray(durations, dtype=np.float64), kind="stable").tolist()
    batches: list[list[int]] = []
    for index in order:
        if batches and (len(batches[-1]) + 1) * durations[batches[-1][0]] <= batch_seconds:
            batches[-1].append(index)
        else:
            batches.append([index])
    return batches


def prefetched(batches: Sequence[list[int]], load: Callable) -> Iterator:
    """``load(batch)`` for each batch, the next one decoding in a thread while this one is used."""
    if not batches:
        return
    with ThreadPoolExecutor(max_workers=1) as pool:
        pending = pool.submit(load, batches[0])
        for i in range(len(batches)):
            result = pending.result()
            if i + 1 < len(batches):
                pending = pool.submit(load, batches[i + 1])
            yield result


# -- one recording -------------------------------------------------------------------------------


def _mean_of_unit_rows(emb: np.ndarray) -> np.ndarray:
    from speakerprint.eval.normalization import unit_rows

    return unit_rows(emb.astype(np.float64)).mean(axis=0).astype(np.float32)


def embed_recording(
    enc: SpeakerEncoder, path: str | os.PathLike, *, duration_s: float | None = None
) -> np.ndarray:
    """The embedding of one file, (embed_dim,) float32, with memory bounded by its length.

    A recording of at most :data:`LONG_RECORDING_S` seconds is embedded in one pass
    (:meth:`SpeakerEncoder.embed`); a longer one is decoded as a stream and embedded as the mean
    of the L2-normalised embeddings of its :data:`LONG_WINDOW_S` windows
    (:meth:`SpeakerEncoder.embed_file`), as the ``multi_crop`` test condition averages crops.

    Raises:
        AudioLoadError: the file is missing or not audio.
    """
    if duration_s is None:
        duration_s = audio_info(path).duration_s
    if duration_s <= LONG_RECORDING_S:
        return enc.embed(path)
    segments = enc.embed_file(
        path, window_s=LONG_WINDOW_S, hop_s=LONG_WINDOW_S, batch_size=LONG_BATCH_SIZE
    )
    if not len(segments):
        raise AudioLoadError(path, "the file holds no audio samples")
    return _mean_of_unit_rows(segments.embeddings)


@dataclass(frozen=True)
class SpeechEmbedding:
    """One recording's embedding, (embed_dim,) float32, and the seconds of speech found in it."""

    embedding: np.ndarray
    speech_s: float


def embed_speech(
    enc: SpeakerEncoder, path: str | os.PathLike, *, min_speech_s: float = DEFAULT_MIN_SPEECH_S
) -> SpeechEmbedding:
    """:func:`embed_recording` of a file that holds at least ``min_speech_s`` seconds of speech
    (:func:`~speakerprint.inference.speech.require_speech`), checked before it is embedded.

    A file of at most :data:`LONG_RECORDING_S` is decoded once for both; a longer one is
    measured block by block as it streams, then embedded from streamed windows.

    Raises:
        TooLittleSpeechError: less speech than ``min_speech_s``, naming the file.
        AudioLoadError: the file is missing or not audio.
    """
    duration_s = audio_info(path).duration_s
    if duration_s <= LONG_RECORDING_S:
        wav = load_audio(path, enc.sample_rate)
        speech_s = require_speech(wav, enc.sample_rate, source=str(path), min_speech_s=min_speech_s)
        return SpeechEmbedding(enc.embed(wav), speech_s)
    speech_s = require_speech(
        stream_audio(path, enc.sample_rate),
        enc.sample_rate,
        source=str(path),
        min_speech_s=min_speech_s,
    )
    return SpeechEmbedding(embed_recording(enc, path, duration_s=duration_s), speech_s)


def verify_recordings(
    enc: SpeakerEncoder,
    a: str | os.PathLike,
    b: str | os.PathLike,
    *,
    threshold: float | None = None,
    min_speech_s: float = DEFAULT_MIN_SPEECH_S,
) -> VerificationResult:
    """:meth:`SpeakerEncoder.verify` of two files, each embedded by :func:`embed_speech` (so
    memory stays bounded for long ones).

    Raises:
        TooLittleSpeechError: a file with less than ``min_speech_s`` of speech.
    """
    enc.bundle.decision_threshold(threshold)  # a bad or missing threshold fails before embedding
    first = embed_speech(enc, a, min_speech_s=min_speech_s)
    second = embed_speech(enc, b, min_speech_s=min_speech_s)
    return enc.verify_embeddings(
        first.embedding,
        second.embedding,
        threshold=threshold,
        speech_s=(first.speech_s, second.speech_s),
    )


# -- many recordings -----------------------------------------------------------------------------


@dataclass
class ExtractionResult:
    """What :func:`extract_embeddings` embedded.

    Attributes:
        keys: the keys of the embedded items, in input order.
        embeddings: (len(keys), embed_dim) float32, row i the embedding of ``keys[i]``.
        skipped: ``(path, reason)`` of each unreadable file left out (with ``skip_bad``).
        audio_s: seconds of audio embedded.
        wall_s: seconds the extraction took.
    """

    keys: list[str]
    embeddings: np.ndarray
    skipped: list[tuple[str, str]] = field(default_factory=list)
    audio_s: float = 0.0
    wall_s: float = 0.0


def _readable(
    items: Sequence[InputItem], skip_bad: bool
) -> tuple[list[InputItem], list[float], list[tuple[str, str]]]:
    """The items whose header reads, their durations, and the others with the reason."""
    skipped: list[tuple[str, str]] = []
    readable: list[InputItem] = []
    durations: list[float] = []
    for item in items:
        if item.duration_s is not None:
            readable.append(item)
            durations.append(item.duration_s)
            continue
        try:
            durations.append(audio_info(item.path).duration_s)
            readable.append(item)
        except AudioLoadError as e:
            skipped.append((item.path, e.reason))
    if skipped and not skip_bad:
        lines = [f"{p}: {r}" for p, r in skipped[:20]]
        more = f"\n  ... and {len(skipped) - 20} more" if len(skipped) > 20 else ""
        raise AudioLoadError(
            f"{len(skipped)} unreadable file(s) (--skip-bad skips them):\n  "
            + "\n  ".join(lines)
            + more
        )
    return readable, durations, skipped


def extract_embeddings(
    enc: SpeakerEncoder,
    items: Sequence[InputItem],
    *,
    batch_seconds: float = 120.0,
    skip_bad: bool = False,
    progress: bool = False,
) -> ExtractionResult:
    """Embed every item: recordings sorted by duration and packed into batches of at most
    ``batch_seconds`` of padded audio (padding never changes an embedding), the next batch
    decoded while this one runs; recordings over :data:`LONG_RECORDING_S` one by one through
    :func:`embed_recording`, never decoded whole.

    Raises:
        ConfigError: ``batch_seconds`` is not positive, or nothing readable is left.
        AudioLoadError: an unreadable file, unless ``skip_bad`` (then it is listed in
            ``skipped``).
    """
    from tqdm import tqdm

    if not batch_seconds > 0:
        raise ConfigError(f"--batch-seconds must be positive, got {batch_seconds}")
    start = time.perf_counter()
    readable, durations, skipped = _readable(items, skip_bad)
    short = [i for i, d in enumerate(durations) if d <= LONG_RECORDING_S]
    long = [i for i, d in enumerate(durations) if d > LONG_RECORDING_S]

    def load(batch: list[int]) -> list[tuple[int, np.ndarray | None, str]]:
        loaded = []
        for index in batch:
            try:
                loaded.append((index, load_audio(readable[index].path, enc.sample_rate), ""))
            except AudioLoadError as e:
                if not skip_bad:
                    raise
                loaded.append((index, None, e.reason))
        return loaded

    embeddings = np.zeros((len(readable), enc.embed_dim), dtype=np.float32)
    done = np.zeros(len(readable), dtype=bool)
    audio_s = 0.0
    batches = [
        [short[i] for i in b] for b in length_batches([durations[i] for i in short], batch_seconds)
    ]
    with tqdm(
        total=round(sum(durations), 1),
        unit="s",
        desc="embedding",
        disable=not progress,
        file=sys.stderr,
        bar_format="{l_bar}{bar}| {n:.0f}/{total:.0f} s of audio [{elapsed}<{remaining}]",
    ) as bar:
        for loaded in prefetched(batches, load):
            good = [(i, w) for i, w, _ in loaded if w is not None]
            skipped += [(readable[i].path, reason) for i, w, reason in loaded if w is None]
            if good:
                rows = [i for i, _ in good]
                embeddings[rows] = enc.embed_batch([w for _, w in good])
                done[rows] = True
                audio_s += sum(len(w) for _, w in good) / enc.sample_rate
            bar.update(sum(durations[i] for i, _, _ in loaded))
        for index in long:
            try:
                embeddings[index] = embed_recording(
                    enc, readable[index].path, duration_s=durations[index]
                )
                done[index] = True
                audio_s += durations[index]
            except AudioLoadError as e:
                if not skip_bad:
                    raise
                skipped.append((readable[index].path, e.reason))
            bar.update(durations[index])
    keys = [item.key for item, ok in zip(readable, done) if ok]
    if not keys:
        raise ConfigError("no readable audio among the inputs: nothing to embed")
    return ExtractionResult(keys, embeddings[done], skipped, audio_s, time.perf_counter() - start)


def embed_manifest(
    bundle_path: str | os.PathLike,
    utts: Sequence[Utterance],
    *,
    cache_dir: str | os.PathLike | None = None,
    batch_size: int = 16,
    device: str = "cpu",
    progress: bool = False,
) -> dict[str, np.ndarray]:
    """Full-length embeddings ``{utt_id: (D,)}`` of a manifest's utterances with a bundle,
    through the evaluation's embedding code and, given ``cache_dir``, its embedding cache (the
    one ``speakerprint eval --cache`` uses, so a figure after an evaluation re-embeds nothing)."""
    from speakerprint.eval.cache import EmbeddingCache, bundle_fingerprint
    from speakerprint.eval.conditions import FULL
    from speakerprint.eval.scoring import embed_with_cache
    from speakerprint.models.bundle import load_bundle

    bundle = load_bundle(bundle_path, device=device)
    cache = (
        None if cache_dir is None else EmbeddingCache(cache_dir, bundle_fingerprint(bundle_path))
    )
    embeddings, _, _ = embed_with_cache(
        bundle, list(utts), FULL, cache, batch_size=batch_size, progress=progress
    )
    return embeddings


# -- writers -------------------------------------------------------------------------------------


def _npz_bytes(keys: Sequence[str], embeddings: np.ndarray) -> bytes:
    # As np.savez writes it, without its keyword-argument API (a key named "file" would clash).
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED, allowZip64=True) as archive:
        for key, vector in zip(keys, embeddings):
            with archive.open(key + ".npy", "w", force_zip64=True) as member:
                np.lib.format.write_array(member, np.ascontiguousarray(vector))
    return buffer.getvalue()


def kaldi_ark_bytes(keys: Sequence[str], embeddings: np.ndarray) -> tuple[bytes, list[int]]:
    """Kaldi binary archive of float vectors and the byte offset of each vector's ``\\0B``.

    Each entry: ``<key> \\0B FV <\\4><int32 dim little-endian><dim float32 little-endian>``,
    as Kaldi's ``Vector<float>::Write`` in binary mode writes it after the table writer's key.
    """
    out = bytearray()
    offsets = []
    for key, vector in zip(keys, embeddings):
        out += key.encode("utf-8") + b" "
        offsets.append(len(out))
        data = np.ascontiguousarray(vector, dtype="<f4")
        out += b"\0B" + b"FV " + b"\x04" + struct.pack("<i", data.size) + data.tobytes()
    return bytes(out), offsets


def check_keys(keys: Sequence[str], fmt: str) -> None:
    """Refuse keys the format cannot hold, before any embedding is done.

    Raises:
        ConfigError: whitespace in a Kaldi key, a line break in a .keys.txt key.
    """
    if fmt == "ark":
        bad = [k for k in keys if not k or any(c.isspace() for c in k)]
        if bad:
            raise ConfigError(
                f"Kaldi keys cannot contain whitespace: {bad[0]!r}"
                + (f" and {len(bad) - 1} more" if len(bad) > 1 else "")
                + "; give the files ids with a manifest or a wav.scp"
            )
    elif fmt == "npy":
        bad = [k for k in keys if "\n" in k or "\r" in k]
        if bad:
            raise ConfigError(f"a key of the .keys.txt cannot contain a line break: {bad[0]!r}")


def companion_path(out: Path, suffix: str) -> Path:
    """``emb.npy`` -> ``emb<suffix>``: the files written beside the main output."""
    return out.with_name(out.stem + suffix) if out.suffix else out.with_name(out.name + suffix)


def write_embeddings(
    out: Path, fmt: str, keys: Sequence[str], embeddings: np.ndarray
) -> list[Path]:
    """Write ``embeddings`` (N, D) under ``keys`` in format ``fmt``, atomically; returns the files.

    ``npz``: one array (D,) per key; ``npy``: one (N, D) float32 matrix plus ``OUT.keys.txt``
    with the keys in row order; ``ark``: Kaldi binary float vectors (what ``copy-vector`` reads)
    plus ``OUT.scp`` with each vector's byte offset; ``jsonl``: ``{"key", "embedding"}`` lines.
    """
    from speakerprint.utils.io import atomic_write_bytes, atomic_write_text

    if fmt == "npz":
        atomic_write_bytes(out, _npz_bytes(keys, embeddings))
        return [out]
    if fmt == "npy":
        buffer = io.BytesIO()
        np.save(buffer, np.ascontiguousarray(embeddings, dtype=np.float32))
        keys_file = companion_path(out, ".keys.txt")
        atomic_write_bytes(out, buffer.getvalue())
        atomic_write_text(keys_file, "".join(k + "\n" for k in keys))
        return [out, keys_file]
    if fmt == "ark":
        data, offsets = kaldi_ark_bytes(keys, embeddings)
        scp = companion_path(out, ".scp")
        ark_path = os.path.abspath(out)
        atomic_write_bytes(out, data)
        atomic_write_text(scp, "".join(f"{k} {ark_path}:{o}\n" for k, o in zip(keys, offsets)))
        return [out, scp]
    lines = [
        json.dumps({"key": k, "embedding": [float(x) for x in v]}, ensure_ascii=False) + "\n"
        for k, v in zip(keys, embeddings)
    ]
    atomic_write_text(out, "".join(lines))
    return [out]
