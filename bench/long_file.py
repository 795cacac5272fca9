"""Memory and time of embedding one long recording: sliding windows vs one full-length pass.

Writes FLAC files of 1, 10 and 60 minutes (speechocean762 utterances end to end when
``../shared/data`` is there, else enveloped noise) and, each in a fresh process, embeds them
with the shipped model:

- ``embed_file`` (3 s windows every 1.5 s, batches of 16): the file is decoded as a stream and
  embedded as the windows complete, so the peak memory should not grow with the length;
- ``embed`` (one embedding over the whole recording): decoded whole, and the encoder's
  activations grow with the number of frames.

Reports the peak resident set of the process (``ru_maxrss``), the same after loading the model
alone, the number of windows and the wall time. ``embed_file`` runs twice: with glibc's default
malloc, whose heap fragments under the batches' large short-lived buffers so that the peak creeps
up with the length although nothing is kept, and with ``MALLOC_MMAP_THRESHOLD_=65536`` (large
buffers mapped and returned at once), which shows what the code itself holds.

    OMP_NUM_THREADS=1 PYTHONPATH=src python bench/long_file.py --out bench/long_file.md
"""

from __future__ import annotations

import argparse
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

from speakerprint.utils.io import atomic_write_text
from speakerprint.utils.machine import cpu_name

SPEECH = Path(__file__).resolve().parents[2] / "shared" / "data" / "speechocean762" / "train"
SAMPLE_RATE = 16000
MMAP = "MALLOC_MMAP_THRESHOLD_=65536"

CHILD = """
import resource, sys, time, json
import torch
torch.set_num_threads(1)
from speakerprint.inference import SpeakerEncoder
mode, path = sys.argv[1], sys.argv[2]
enc = SpeakerEncoder.from_pretrained()
loaded = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
start = time.perf_counter()
if mode == "embed_file":
    n = len(enc.embed_file(path, window_s=3.0, hop_s=1.5, batch_size=16))
elif mode == "embed":
    enc.embed(path)
    n = 1
else:
    n = 0
wall = time.perf_counter() - start
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({"loaded_mb": loaded, "peak_mb": peak, "windows": n, "wall_s": wall}))
"""


def write_long(path: Path, minutes: float) -> str:
    """A FLAC of ``minutes``, written block by block; returns what it is made of."""
    files = sorted(SPEECH.glob("*/*.opus"))[:200] if SPEECH.is_dir() else []
    if files:
        from speakerprint.audio import load_audio

        pieces = [load_audio(f, SAMPLE_RATE) for f in files]
        source = f"{len(files)} speechocean762 train utterances repeated end to end"
    else:
        rng = np.random.default_rng(0)
        pieces = [
            (np.repeat(rng.uniform(0.01, 0.3, 40), 800) * rng.standard_normal(32000)).astype(
                np.float32
            )
            for _ in range(50)
        ]
        source = "enveloped noise (no speech data found)"
    total = round(minutes * 60 * SAMPLE_RATE)
    with sf.SoundFile(path, "w", SAMPLE_RATE, 1, format="FLAC") as f:
        written, i = 0, 0
        while written < total:
            piece = pieces[i % len(pieces)][: total - written]
            f.write(piece)
            written, i = written + len(piece), i + 1
    return source


def run_child(mode: str, path: Path, env: dict | None = None) -> dict:
    import json
    import os

    out = subprocess.run(
        [sys.executable, "-c", CHILD, mode, str(path)],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, **(env or {})},
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", nargs="+", type=float, default=[1, 10, 60])
    parser.add_argument(
        "--full-length-minutes",
        nargs="+",
        type=float,
        default=[1, 10],
        help="lengths also embedded in one full-length pass (memory grows with them)",
    )
    parser.add_argument("--out", type=Path, default=None, help="Also write the table here")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        baseline = run_child("load", Path(tmp) / "none")
        for minutes in args.minutes:
            path = Path(tmp) / f"{minutes:g}min.flac"
            source = write_long(path, minutes)
            modes = [("embed_file", "default"), ("embed_file", MMAP)]
            if minutes in args.full_length_minutes:
                modes.append(("embed", "default"))
            for mode, malloc in modes:
                env = None if malloc == "default" else dict([malloc.split("=")])
                r = run_child(mode, path, env)
                rows.append(
                    f"| {minutes:g} min | {mode} | {malloc} | {r['windows']} | {r['peak_mb']:.0f} | "
                    f"{r['peak_mb'] - baseline['peak_mb']:+.0f} | {r['wall_s']:.1f} |"
                )
                print(rows[-1], flush=True)
            path.unlink()
    table = "\n".join(
        [
            "| recording | call | malloc | embeddings | peak RSS (MB) | over the loaded model (MB) "
            "| wall s |",
            "|---|---|---|---|---|---|---|",
            *rows,
            "",
            f"Shipped model (ECAPA-TDNN C=512), 1 thread, FLAC at 16 kHz made of {source}. "
            f"The process with the model loaded and nothing embedded peaks at "
            f"{baseline['peak_mb']:.0f} MB. embed_file: 3 s windows every 1.5 s, batches of 16. "
            f"Machine: {cpu_name()} ({platform.machine()}), torch {torch.__version__}, "
            f"Python {platform.python_version()}; {time.strftime('%Y-%m-%d')}.",
        ]
    )
    print()
    print(table)
    if args.out is not None:
        atomic_write_text(args.out, table + "\n")


if __name__ == "__main__":
    main()
