"""Time ``read_manifest`` on a synthetic manifest of many utterances (1,000,000 by default).

Prints the file size, the seconds taken to read and check every line, and the peak memory:
the process's peak resident set (``resource``), and with ``--trace`` also the peak of Python
allocations during a second read (``tracemalloc``, which slows the read several-fold, so it is
not timed). On Linux it then forks, as a DataLoader starts its workers, and reports the private
(copied) memory of a worker that reads every utterance's path, offset, duration and label: from
the list of Utterance objects, and from ``CropDataset``'s numpy table; and after a full garbage
collection in the worker, without and with ``fork_workers``' freeze. The manifest mixes whole files and VAD segments (``offset_s``) and relative and
absolute paths, as prepared corpora do.

    OMP_NUM_THREADS=1 PYTHONPATH=src python bench/manifest_load.py --trace --out bench/manifest_load.md
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import resource
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

from speakerprint.data.manifest import read_manifest
from speakerprint.utils.io import atomic_write_text
from speakerprint.utils.machine import cpu_name


def write_synthetic(path: Path, num_utts: int) -> None:
    """``num_utts`` lines in VoxCeleb-like naming: 1,000 speakers, every tenth entry a segment."""
    with open(path, "w", encoding="utf-8") as f:
        for i in range(num_utts):
            speaker = f"id{10000 + i % 1000:05d}"
            utt_id = f"{speaker}/video{i // 1000:05d}/{i % 1000:05d}.wav"
            record = {
                "utt_id": utt_id,
                "path": utt_id if i % 2 else f"/data/vox/{utt_id}",
                "speaker": speaker,
                "duration_s": 2.0 + (i % 997) / 100,
                "sample_rate": 16000,
            }
            if i % 10 == 0:
                record["utt_id"] += f"@{i % 7}.00-{i % 7 + 2}.00"
                record["offset_s"] = float(i % 7)
            f.write(json.dumps(record) + "\n")


def _peak_rss_mib() -> float:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 2**10  # bytes vs KiB


def _private_mib() -> float:
    """This process's private dirty memory: pages it wrote to, its own copies after a fork."""
    with open("/proc/self/smaps_rollup") as f:
        for line in f:
            if line.startswith("Private_Dirty:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no Private_Dirty in /proc/self/smaps_rollup")


def in_forked_worker(work, freeze: bool = False) -> float:
    """MiB of private memory a forked child adds by running ``work()``."""
    read, write = os.pipe()
    if freeze:
        gc.freeze()
    pid = os.fork()
    if pid == 0:
        before = _private_mib()
        work()
        os.write(write, f"{_private_mib() - before:.1f}".encode())
        os._exit(0)
    gc.unfreeze()
    os.waitpid(pid, 0)
    os.close(write)
    with os.fdopen(read) as f:
        return float(f.read())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num-utts", type=int, default=1_000_000)
    parser.add_argument("--trace", action="store_true", help="also measure with tracemalloc")
    parser.add_argument("--out", type=Path, help="also write the figures here, as Markdown")
    args = parser.parse_args()
    lines = []

    def say(line: str) -> None:
        print(line)
        lines.append(line)

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "synthetic.jsonl"
        start = time.perf_counter()
        write_synthetic(path, args.num_utts)
        write_s = time.perf_counter() - start
        size_mib = path.stat().st_size / 2**20
        say(f"wrote {args.num_utts:,} lines ({size_mib:.0f} MiB) in {write_s:.1f} s")
        rss_before = _peak_rss_mib()
        start = time.perf_counter()
        utts = read_manifest(path)
        read_s = time.perf_counter() - start
        assert len(utts) == args.num_utts
        say(f"read_manifest: {read_s:.2f} s ({1e6 * read_s / args.num_utts:.2f} us per line)")
        say(f"peak RSS: {_peak_rss_mib():.0f} MiB (before reading: {rss_before:.0f} MiB)")
        if args.trace:
            del utts
            gc.collect()
            tracemalloc.start()
            utts = read_manifest(path)
            _, peak = tracemalloc.get_traced_memory()
            tracemalloc.stop()
            say(f"tracemalloc peak during read_manifest: {peak / 2**20:.0f} MiB")
        if os.path.exists("/proc/self/smaps_rollup"):
            from speakerprint.data.dataset import CropDataset  # after: torch is 200 MB of RSS

            labels = {name: i for i, name in enumerate(sorted({u.speaker for u in utts}))}
            dataset = CropDataset(utts, speaker_to_label=labels, crop_s=2.0)
            table = dataset.table

            def from_objects() -> None:
                for u in utts:
                    (u.path, u.offset_s, u.duration_s, labels[u.speaker])

            def from_table() -> None:
                for i in range(len(table)):
                    (table.path(i), table.offset(i), table.durations[i], dataset.labels[i])

            gc.collect()
            say(
                "a forked worker's private memory after reading every utterance: "
                f"{in_forked_worker(from_objects):.0f} MiB from Utterance objects, "
                f"{in_forked_worker(from_table):.0f} MiB from CropDataset's table"
            )
            say(
                "... after a full garbage collection in the worker: "
                f"{in_forked_worker(gc.collect):.0f} MiB, "
                f"{in_forked_worker(gc.collect, freeze=True):.0f} MiB with fork_workers' freeze"
            )
    if args.out:
        command = "OMP_NUM_THREADS=1 PYTHONPATH=src python bench/manifest_load.py"
        command += f" --num-utts {args.num_utts}" + (" --trace" if args.trace else "")
        text = [
            f"# Reading a manifest of {args.num_utts:,} utterances",
            "",
            *(f"- {line}" for line in lines),
            "",
            "Synthetic VoxCeleb-like lines (1,000 speakers; every tenth a VAD segment with "
            "`offset_s`; relative and absolute paths), read and checked by `read_manifest`.",
            "",
            f"Machine: {cpu_name()}, {platform.system()} {platform.machine()}, one process, "
            f"Python {platform.python_version()}.",
            "",
            f"Re-run: `{command} --out {args.out}`",
        ]
        atomic_write_text(args.out, "\n".join(text) + "\n")


if __name__ == "__main__":
    main()
