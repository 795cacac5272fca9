"""`speakerprint embed`: batch extraction of embeddings from files, folders, manifests and wav.scp.

Inputs, any mix of:
  - audio files: the key is the path as given;
  - folders: every audio file below them (recursive), keyed by the folder as given joined with
    the file's path inside it;
  - JSONL manifests (``*.jsonl``): keyed by ``utt_id``;
  - Kaldi ``wav.scp`` files (``*.scp``): ``<key> <path>`` per line, paths relative to the working
    directory as in Kaldi; piped commands (``... |``) and ark offsets are refused.

Outputs, chosen by ``--format`` or the extension of ``--out``:
  - ``npz``: one array (D,) per key;
  - ``npy``: one (N, D) float32 matrix plus ``OUT.keys.txt`` with the N keys in row order;
  - ``ark``: Kaldi binary float vectors (what ``copy-vector`` reads) plus ``OUT.scp`` with the byte
    offset of each vector;
  - ``jsonl``: ``{"key": ..., "embedding": [...]}`` per line.

Recordings are sorted by duration and packed into batches of at most ``--batch-seconds`` of padded
audio, so little compute goes to padding; padding never changes an embedding.
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
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import numpy as np
import typer

from speakerprint.cli.main import _clean_errors, app

FORMATS = ("npz", "npy", "ark", "jsonl")


@dataclass(frozen=True)
class _Item:
    key: str
    path: str
    duration_s: float | None = None  # known from a manifest; else read from the header


def _audio_files(folder: Path) -> list[Path]:
    from speakerprint.data.prepare import AUDIO_EXTENSIONS

    extensions = {"." + e for e in AUDIO_EXTENSIONS}
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in extensions and p.is_file())


def _read_wav_scp(path: Path) -> list[_Item]:
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
            items.append(_Item(parts[0], parts[1].strip()))
    raise_problems(path, problems, "wav.scp")
    return items


def collect_inputs(inputs: Sequence[Path]) -> list[_Item]:
    """Expand files, folders, manifests and wav.scp files into (key, path) items, in order.

    Raises:
        ConfigError: a folder with no audio, or a key given twice.
        ManifestError: a malformed manifest or wav.scp.
    """
    from speakerprint.data.manifest import read_manifest
    from speakerprint.data.prepare import AUDIO_EXTENSIONS
    from speakerprint.errors import ConfigError

    items: list[_Item] = []
    for given in inputs:
        if given.is_dir():
            files = _audio_files(given)
            if not files:
                raise ConfigError(
                    f"folder {given} holds no audio files ({', '.join(AUDIO_EXTENSIONS)})"
                )
            items += [_Item(str(given / f.relative_to(given)), str(f)) for f in files]
        elif given.suffix.lower() == ".jsonl":
            items += [_Item(u.utt_id, u.path, u.duration_s) for u in read_manifest(given)]
        elif given.suffix.lower() == ".scp":
            items += _read_wav_scp(given)
        else:
            items.append(_Item(str(given), str(given)))
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


def _prefetched(batches: Sequence[list[int]], load: Callable) -> Iterator:
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


def _check_keys(keys: Sequence[str], fmt: str) -> None:
    from speakerprint.errors import ConfigError

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


def _companion(out: Path, suffix: str) -> Path:
    """``emb.npy`` -> ``emb<suffix>``: the files written beside the main output."""
    return out.with_name(out.stem + suffix) if out.suffix else out.with_name(out.name + suffix)


def write_embeddings(
    out: Path, fmt: str, keys: Sequence[str], embeddings: np.ndarray
) -> list[Path]:
    """Write ``embeddings`` (N, D) under ``keys`` in format ``fmt``, atomically; returns the files."""
    from speakerprint.utils.io import atomic_write_bytes, atomic_write_text

    if fmt == "npz":
        atomic_write_bytes(out, _npz_bytes(keys, embeddings))
        return [out]
    if fmt == "npy":
        buffer = io.BytesIO()
        np.save(buffer, np.ascontiguousarray(embeddings, dtype=np.float32))
        keys_file = _companion(out, ".keys.txt")
        atomic_write_bytes(out, buffer.getvalue())
        atomic_write_text(keys_file, "".join(k + "\n" for k in keys))
        return [out, keys_file]
    if fmt == "ark":
        data, offsets = kaldi_ark_bytes(keys, embeddings)
        scp = _companion(out, ".scp")
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


# -- the command ---------------------------------------------------------------------------------


@app.command()
@_clean_errors
def embed(
    inputs: Annotated[
        list[Path],
        typer.Argument(help="Audio files, folders (recursive), JSONL manifests, Kaldi wav.scp"),
    ],
    out: Annotated[
        Path, typer.Option(help="Output file: .npz, .npy (+ .keys.txt), .ark (+ .scp), .jsonl")
    ],
    format_: Annotated[
        str | None,
        typer.Option("--format", help="npz, npy, ark or jsonl (default: from --out's extension)"),
    ] = None,
    model: Annotated[
        Path | None, typer.Option(help="Model bundle (default: the shipped model)")
    ] = None,
    batch_seconds: Annotated[
        float, typer.Option(help="Most padded audio per batch, in seconds")
    ] = 120.0,
    device: Annotated[str, typer.Option(help="cpu, cuda, cuda:1 ...")] = "cpu",
    skip_bad: Annotated[
        bool,
        typer.Option(
            "--skip-bad",
            help="Skip unreadable files (listed in OUT.skipped.txt) instead of failing",
        ),
    ] = False,
    progress: Annotated[bool, typer.Option(help="Show a progress bar")] = True,
    compile_: Annotated[
        bool,
        typer.Option(
            "--compile",
            help="Run the encoder through torch.compile: faster on long jobs, after a compile "
            "of up to a minute (needs a C++ compiler on CPU)",
        ),
    ] = False,
) -> None:
    """Embed many recordings into one file; keys are the paths as given (utt_id for manifests,
    the key for wav.scp)."""
    from tqdm import tqdm

    from speakerprint.audio import AudioLoadError, audio_info, load_audio
    from speakerprint.errors import ConfigError
    from speakerprint.inference import SpeakerEncoder
    from speakerprint.train.device import resolve_device
    from speakerprint.utils.io import atomic_write_text

    fmt = format_ if format_ is not None else out.suffix.lower().lstrip(".")
    if fmt not in FORMATS:
        where = f"--format {format_}" if format_ is not None else f"the extension of --out {out}"
        raise ConfigError(f"{where}: the output format must be one of {', '.join(FORMATS)}")
    if not batch_seconds > 0:
        raise ConfigError(f"--batch-seconds must be positive, got {batch_seconds}")
    device = str(resolve_device(device, option="--device"))  # the one check, as train's
    if out.is_dir():
        raise ConfigError(f"--out {out} is a folder; name a file")

    items = collect_inputs(inputs)
    _check_keys([i.key for i in items], fmt)
    enc = SpeakerEncoder.from_pretrained(model, device=device, compile=compile_)
    start = time.perf_counter()

    skipped: list[tuple[str, str]] = []
    readable: list[_Item] = []
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
    batches = length_batches(durations, batch_seconds)
    with tqdm(
        total=round(sum(durations), 1),
        unit="s",
        desc="embedding",
        disable=not progress,
        file=sys.stderr,
        bar_format="{l_bar}{bar}| {n:.0f}/{total:.0f} s of audio [{elapsed}<{remaining}]",
    ) as bar:
        for loaded in _prefetched(batches, load):
            good = [(i, w) for i, w, _ in loaded if w is not None]
            skipped += [(readable[i].path, reason) for i, w, reason in loaded if w is None]
            if good:
                rows = [i for i, _ in good]
                embeddings[rows] = enc.embed_batch([w for _, w in good])
                done[rows] = True
                audio_s += sum(len(w) for _, w in good) / enc.sample_rate
            bar.update(sum(durations[i] for i, _, _ in loaded))
    wall_s = time.perf_counter() - start

    keys = [item.key for item, ok in zip(readable, done) if ok]
    if not keys:
        raise ConfigError("no readable audio among the inputs: nothing to embed")
    written = write_embeddings(out, fmt, keys, embeddings[done])
    lines = [
        f"wrote {len(keys)} embeddings of dimension {enc.embed_dim} to "
        + ", ".join(str(p) for p in written)
    ]
    if skipped:
        skipped_file = _companion(out, ".skipped.txt")
        atomic_write_text(skipped_file, "".join(f"{p}\t{r}\n" for p, r in skipped))
        lines.append(f"skipped {len(skipped)} unreadable file(s), listed in {skipped_file}")
    lines.append(
        f"{audio_s:.1f} s of audio in {wall_s:.1f} s on {enc.device}: "
        f"{audio_s / max(wall_s, 1e-9):.1f} s of audio per second"
    )
    typer.echo("\n".join(lines))
