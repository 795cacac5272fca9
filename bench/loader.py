"""Training-crop throughput of one loader worker, per audio format, from files and from tar shards.

Takes ``--num-utts`` utterances of real speech (speechocean762 Opus from ../shared/data), writes
each as 16 kHz wav, flac, opus (the originals) and m4a (AAC, through PyAV), packs each set into tar
shards too, and times how many training crops (``--crop-s`` seconds, random offset, the path
training takes: decode the window, resample, repeat-to-length) one process produces per second:
``CropDataset`` over the files and ``ShardCropStream`` over the shards. A loader worker is one such
process, so a GPU step of B crops every t seconds needs B / (t x crops/s) workers.

    OMP_NUM_THREADS=1 PYTHONPATH=src python bench/loader.py --num-utts 200 --out bench/loader.md

Timings are wall clock on whatever else the machine is doing: run it on a quiet machine.
"""

from __future__ import annotations

import argparse
import dataclasses
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf

from speakerprint.audio import load_audio
from speakerprint.data.dataset import CropDataset
from speakerprint.data.manifest import Utterance, read_manifest
from speakerprint.data.prepare import prepare_folder
from speakerprint.data.shards import ShardCropStream, write_shards
from speakerprint.utils.io import atomic_write_text
from speakerprint.utils.machine import cpu_name

SOURCE = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "speechocean762" / "train"


def _write_m4a(path: Path, wav: np.ndarray, sample_rate: int) -> None:
    import av

    with av.open(str(path), "w", format="mp4") as container:
        stream = container.add_stream("aac", rate=sample_rate)
        stream.layout = "mono"
        frame = av.AudioFrame.from_ndarray(
            (wav * 32767).astype(np.int16)[None, :], format="s16", layout="mono"
        )
        frame.sample_rate = sample_rate
        for packet in stream.encode(frame):
            container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)


def make_sets(utts: list[Utterance], root: Path) -> dict[str, list[Utterance]]:
    """The same utterances as wav, flac, opus (the originals) and m4a."""
    sets: dict[str, list[Utterance]] = {"opus": utts}
    for fmt in ("wav", "flac", "m4a"):
        (root / fmt).mkdir(parents=True)
        converted = []
        for i, utt in enumerate(utts):
            wav = load_audio(utt.path, 16000)
            path = root / fmt / f"{i:06d}.{fmt}"
            if fmt == "m4a":
                _write_m4a(path, wav, 16000)
            else:
                sf.write(path, wav, 16000, subtype="PCM_16")
            converted.append(dataclasses.replace(utt, path=str(path), sample_rate=16000))
        sets[fmt] = converted
    return sets


def crops_per_second(items, count: int) -> float:
    start = time.perf_counter()
    n = 0
    for _ in items:
        n += 1
        if n == count:
            break
    return n / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num-utts", type=int, default=200)
    parser.add_argument("--crop-s", type=float, default=2.0)
    parser.add_argument("--source", type=Path, default=SOURCE)
    parser.add_argument("--out", type=Path, help="also write the table here (Markdown)")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        prepare_folder(args.source, tmp / "manifest", dev_speakers=0, seed=0)
        utts = read_manifest(tmp / "manifest" / "train.jsonl")
        utts = [utts[i] for i in np.random.default_rng(0).permutation(len(utts))[: args.num_utts]]
        sets = make_sets(utts, tmp / "audio")
        speakers = sorted({u.speaker for u in utts})
        labels = {s: i for i, s in enumerate(speakers)}
        rows = []
        for fmt, members in sets.items():
            size_mb = sum(Path(u.path).stat().st_size for u in members) / 1e6
            dataset = CropDataset(members, speaker_to_label=labels, crop_s=args.crop_s)
            keys = ((i, 1000 + i) for i in np.random.default_rng(1).permutation(len(members)))
            files = crops_per_second((dataset[k] for k in keys), len(members))
            index = write_shards(members, tmp / f"shards_{fmt}", utterances_per_shard=50)
            shard_stream = ShardCropStream(
                index, speaker_to_label=labels, crop_s=args.crop_s, buffer_size=100
            )
            shards = crops_per_second(iter(shard_stream), len(members))
            hours = sum(u.duration_s for u in members) / 3600
            rows.append((fmt, size_mb, hours, files, shards))

    lines = [
        f"# Loader throughput: {args.crop_s:g} s training crops per second, one worker",
        "",
        "| format | MB | hours | files: crops/s | tar shards: crops/s |",
        "|---|---:|---:|---:|---:|",
        *(f"| {f} | {mb:.1f} | {h:.2f} | {a:.0f} | {b:.0f} |" for f, mb, h, a, b in rows),
        "",
        f"{args.num_utts} speechocean762 utterances (mean "
        f"{rows[0][2] * 3600 / args.num_utts:.1f} s), each format decoded and resampled to 16 kHz "
        "as training does; files are on a local disk, so the shards' advantage on a network file "
        "system (one open per shard) does not show here.",
        "",
        f"Machine: {cpu_name()}, {platform.system()} {platform.machine()}, one process "
        "(OMP_NUM_THREADS=1), Python " + platform.python_version() + ".",
        "",
        f"Re-run: `OMP_NUM_THREADS=1 PYTHONPATH=src python bench/loader.py --num-utts "
        f"{args.num_utts} --crop-s {args.crop_s:g}`",
    ]
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(args.out, text)


if __name__ == "__main__":
    main()
