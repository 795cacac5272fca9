"""Tar shards: a training set as a few large files read front to back, for network file systems.

A million small files cost a million opens and seeks; a shard is one sequential read. The layout
(written by :func:`write_shards`, ``speakerprint shard``)::

    DIR/shards.json            index: format, speakers, per-shard utterance counts and hours
    DIR/shard-000000.tar       per utterance: NNNNNNNNN.json (utt_id, speaker, duration_s,
    DIR/shard-000001.tar       sample_rate), then NNNNNNNNN.<ext>, the audio file's own bytes
    ...

Audio is stored as it was encoded (opus, m4a, flac, wav: no re-encoding, no growth); a segment of
a longer file (a manifest line with ``offset_s``) is cut out and stored as 16-bit FLAC. Utterances
are dealt to shards in a seeded random order, so each shard mixes speakers.

:class:`ShardCropStream` reads them back as a stream of training crops: each (rank, loader worker)
owns a fixed set of shards, reads them in an order drawn per epoch, takes one random crop per
utterance and passes it through a shuffle buffer. Everything random is drawn from generators
seeded by ``(seed, epoch, rank, worker)``, so a run is reproducible and a resumed run can replay
an epoch exactly.
"""

from __future__ import annotations

import io
import json
import os
import tarfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf
from torch.utils.data import IterableDataset, get_worker_info

from speakerprint.audio import AudioLoadError, fit_to_length, load_audio, load_audio_bytes
from speakerprint.data.manifest import Utterance
from speakerprint.errors import ConfigError, ManifestError
from speakerprint.utils.io import atomic_write_text

__all__ = ["SHARD_FORMAT", "ShardCropStream", "ShardIndex", "read_shard_index", "write_shards"]

SHARD_FORMAT = "speakerprint-shards"
INDEX_FILE = "shards.json"


@dataclass(frozen=True)
class ShardIndex:
    """What ``shards.json`` says: the shard files (absolute paths), their utterance counts, and
    the sorted speaker list (the label order a training run uses)."""

    root: Path
    files: list[Path]
    counts: list[int]
    speakers: list[str]
    hours: float

    @property
    def num_utterances(self) -> int:
        return sum(self.counts)


def read_shard_index(root: str | os.PathLike) -> ShardIndex:
    """Read and check ``ROOT/shards.json``; every shard it lists must exist."""
    root = Path(root)
    path = root / INDEX_FILE
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ManifestError(
            f"{path}: no shard index (write shards with `speakerprint shard`)"
        ) from None
    except (OSError, ValueError) as e:
        raise ManifestError(f"{path}: unreadable shard index: {e}") from None
    if not isinstance(data, dict) or data.get("format") != SHARD_FORMAT:
        raise ManifestError(f"{path}: not a speakerprint shard index (format != {SHARD_FORMAT})")
    try:
        shards = data["shards"]
        files = [root / s["file"] for s in shards]
        counts = [int(s["utterances"]) for s in shards]
        speakers = [str(s) for s in data["speakers"]]
        hours = float(data["hours"])
    except (KeyError, TypeError, ValueError) as e:
        raise ManifestError(f"{path}: malformed shard index: {e!r}") from None
    missing = [str(f) for f in files if not f.is_file()]
    if missing:
        raise ManifestError(f"{path}: {len(missing)} listed shard(s) missing, e.g. {missing[0]}")
    return ShardIndex(root, files, counts, speakers, hours)


def _member_bytes(utt: Utterance) -> tuple[bytes, str]:
    """The audio of one utterance as stored in a shard: the file's bytes, or a FLAC segment."""
    path = Path(utt.path)
    if utt.offset_s is None:
        try:
            return path.read_bytes(), path.suffix.lower() or ".bin"
        except OSError as e:
            raise AudioLoadError(utt.path, f"cannot read: {e.strerror or e}") from None
    wav = load_audio(utt.path, utt.sample_rate, start_s=utt.offset_s, duration_s=utt.duration_s)
    buf = io.BytesIO()
    sf.write(buf, wav, utt.sample_rate, format="FLAC", subtype="PCM_16")
    return buf.getvalue(), ".flac"


def _add(tar: tarfile.TarFile, name: str, payload: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(payload)
    info.mode = 0o644
    tar.addfile(info, io.BytesIO(payload))


def write_shards(
    utts: Sequence[Utterance],
    out: str | os.PathLike,
    *,
    utterances_per_shard: int = 1000,
    seed: int = 0,
    progress: Callable[[int], None] | None = None,
) -> ShardIndex:
    """Write ``utts`` as tar shards plus ``shards.json`` into ``out``.

    Each shard is written beside its final name and renamed into place, and the index is written
    last (atomically), so an interrupted run leaves no index that lists a partial shard.
    ``progress(n)`` is called after each utterance.
    """
    if isinstance(utterances_per_shard, bool) or utterances_per_shard < 1:
        raise ConfigError(f"utterances_per_shard must be >= 1, got {utterances_per_shard}")
    if not utts:
        raise ConfigError("no utterances to shard")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    order = np.random.default_rng(seed).permutation(len(utts))
    shards: list[dict[str, Any]] = []
    for first in range(0, len(order), utterances_per_shard):
        chunk = order[first : first + utterances_per_shard]
        name = f"shard-{len(shards):06d}.tar"
        tmp = out / f".{name}.partial"
        seconds = 0.0
        with tarfile.open(tmp, "w") as tar:
            for position, i in enumerate(chunk):
                utt = utts[int(i)]
                payload, ext = _member_bytes(utt)
                key = f"{first + position:09d}"
                meta = {
                    "utt_id": utt.utt_id,
                    "speaker": utt.speaker,
                    "duration_s": utt.duration_s,
                    "sample_rate": utt.sample_rate,
                }
                _add(tar, f"{key}.json", json.dumps(meta).encode())
                _add(tar, f"{key}{ext}", payload)
                seconds += utt.duration_s
                if progress is not None:
                    progress(1)
        os.replace(tmp, out / name)
        shards.append({"file": name, "utterances": len(chunk), "hours": seconds / 3600})
    index = {
        "format": SHARD_FORMAT,
        "version": 1,
        "num_utterances": len(utts),
        "hours": sum(s["hours"] for s in shards),
        "speakers": sorted({u.speaker for u in utts}),
        "seed": seed,
        "shards": shards,
    }
    atomic_write_text(out / INDEX_FILE, json.dumps(index, indent=1) + "\n")
    return read_shard_index(out)


def _read_pairs(path: Path) -> Iterator[tuple[dict[str, Any], bytes, str]]:
    """(metadata, audio bytes, member name) of each utterance of a shard, in order, streamed."""
    meta: dict[str, Any] | None = None
    key = None
    try:
        with tarfile.open(path, "r|") as tar:
            for member in tar:
                if not member.isfile():
                    continue
                f = tar.extractfile(member)
                data = f.read() if f is not None else b""
                stem = member.name.split(".", 1)[0]
                if member.name.endswith(".json"):
                    meta, key = json.loads(data), stem
                    continue
                if meta is None or stem != key:
                    raise ManifestError(
                        f"{path}: {member.name} has no metadata member ({stem}.json) before it"
                    )
                yield meta, data, member.name
                meta = key = None
    except (tarfile.TarError, EOFError, ValueError) as e:
        raise ManifestError(f"{path}: corrupt shard: {e}") from None


class ShardCropStream(IterableDataset):
    """One random crop of every utterance of this (rank, worker)'s shards, shuffled, per epoch.

    Shard ``i`` belongs to slot ``i mod (world_size * num_workers)``; slot ``rank * num_workers +
    worker``'s shards are read in an order drawn for the epoch. Yields ``(wav (crop,) float32,
    label)`` like :class:`~speakerprint.data.dataset.CropDataset`. ``buffer_size`` crops are held
    and one drawn at random as each new one arrives, so consecutive crops rarely share a shard.
    """

    def __init__(
        self,
        index: ShardIndex,
        *,
        speaker_to_label: dict[str, int],
        crop_s: float,
        sample_rate: int = 16000,
        buffer_size: int = 1000,
        seed: int = 0,
        epoch: int = 0,
        rank: int = 0,
        world_size: int = 1,
        num_workers: int = 0,
        transform: Callable[[np.ndarray, np.random.Generator], np.ndarray] | None = None,
    ) -> None:
        super().__init__()
        slots = world_size * max(num_workers, 1)
        if len(index.files) < slots:
            raise ConfigError(
                f"{index.root}: {len(index.files)} shard(s) for {world_size} process(es) x "
                f"{max(num_workers, 1)} loader worker(s): write at least {slots} shards "
                "(speakerprint shard --utterances-per-shard smaller)"
            )
        self.index = index
        self.speaker_to_label = speaker_to_label
        self.crop_samples = int(round(crop_s * sample_rate))
        self.crop_s = crop_s
        self.sample_rate = sample_rate
        self.buffer_size = max(int(buffer_size), 1)
        self.seed, self.epoch = seed, epoch
        self.rank, self.world_size, self.num_workers = rank, world_size, num_workers
        self.transform = transform

    def slot_shards(self, worker: int) -> list[int]:
        """Indices of the shards that (this rank, ``worker``) reads."""
        slots = self.world_size * max(self.num_workers, 1)
        slot = self.rank * max(self.num_workers, 1) + worker
        return list(range(slot, len(self.index.files), slots))

    def items_per_worker(self) -> list[int]:
        """Utterances each of this rank's workers yields per epoch (one crop each)."""
        return [
            sum(self.index.counts[i] for i in self.slot_shards(w))
            for w in range(max(self.num_workers, 1))
        ]

    def batches_per_epoch(self, batch_size: int) -> int:
        """Full batches this rank gets per epoch: each worker batches its own crops."""
        return sum(n // batch_size for n in self.items_per_worker())

    def __iter__(self) -> Iterator[tuple[np.ndarray, int]]:
        info = get_worker_info()
        worker = 0 if info is None else info.id
        rng = np.random.default_rng([self.seed, self.epoch, self.rank, worker])
        shards = self.slot_shards(worker)
        buffer: list[tuple[np.ndarray, int]] = []
        for i in rng.permutation(len(shards)):
            path = self.index.files[shards[int(i)]]
            for meta, data, name in _read_pairs(path):
                item = self._crop(meta, data, f"{path}:{name}", rng)
                if len(buffer) < self.buffer_size:
                    buffer.append(item)
                    continue
                j = int(rng.integers(len(buffer)))
                buffer[j], item = item, buffer[j]
                yield item
        for j in rng.permutation(len(buffer)):
            yield buffer[int(j)]

    def _crop(
        self, meta: dict[str, Any], data: bytes, name: str, rng: np.random.Generator
    ) -> tuple[np.ndarray, int]:
        try:
            label = self.speaker_to_label[meta["speaker"]]
            duration = float(meta["duration_s"])
        except KeyError as e:
            raise ManifestError(f"{name}: metadata lacks or has an unknown {e}") from None
        max_start = max(duration - self.crop_s, 0.0)
        start = float(rng.uniform(0.0, max_start)) if max_start > 0 else 0.0
        wav = load_audio_bytes(
            data, name, self.sample_rate, start_s=start, duration_s=min(self.crop_s, duration)
        )
        wav = fit_to_length(wav, self.crop_samples)
        if self.transform is not None:
            wav = self.transform(wav, rng)
        return wav, label
