"""Extraction throughput: how much audio ``speakerprint embed`` turns into embeddings per second.

Two rows per setting, over the same manifest (default: the speechocean762 dev split that
``make demo`` prepares, 520 Opus files, 36.6 minutes):

- ``speakerprint embed`` end to end, in a fresh process as a user runs it: reading the
  inputs, decoding and resampling (one prefetch thread), length-bucketed batches through the
  model, writing the ``.npy``. The figure is the one the command prints (audio seconds over the
  wall time after the model is loaded); the process's whole wall time, start-up included, is
  beside it.
- ``model only``: the same length-bucketed batches of waveforms decoded beforehand, through
  ``SpeakerEncoder.embed_batch``: what the device can do when decoding is not in the way.

On a CPU, ``--cores`` limits each row to that many cores (process affinity and torch threads
together), so a row says what a machine of that size gets. On a GPU (``--device cuda``) the
figure that matters is hours of audio per GPU-minute; ``--repeat-manifest`` makes the work
long enough to time.

    OMP_NUM_THREADS=1 PYTHONPATH=src python bench/extract.py --out bench/extract.md
    PYTHONPATH=src python bench/extract.py --device cuda --repeat-manifest 20 --batch-seconds 600
    PYTHONPATH=src python bench/extract.py --cores 1 --repeats 1 --limit 40   # a quick check
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from speakerprint.utils.io import atomic_write_text
from speakerprint.utils.machine import device_name

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_MANIFEST = ROOT / "runs" / "so762" / "data" / "dev.jsonl"
PRINTED = re.compile(r"([\d.]+) s of audio in ([\d.]+) s on (\S+): ([\d.]+) s of audio per second")


def _limited(cores: int | None, device: str) -> dict:
    """Environment and pre-exec hook that hold a child process to ``cores`` CPUs."""
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT / "src") + os.pathsep + env.get("PYTHONPATH", "")
    if cores is None or device != "cpu":
        return {"env": env}
    allowed = sorted(os.sched_getaffinity(0))[:cores]
    env["OMP_NUM_THREADS"] = str(cores)
    return {"env": env, "preexec_fn": lambda: os.sched_setaffinity(0, allowed)}


def run_cli(manifest: Path, args, cores: int | None, workdir: Path) -> dict:
    """One ``speakerprint embed`` in a fresh process; the figures it printed and its wall time."""
    out = workdir / "emb.npy"
    command = [sys.executable, "-m", "speakerprint", "embed", str(manifest), "--out", str(out),
               "--no-progress", "--batch-seconds", str(args.batch_seconds),
               "--device", args.device]  # fmt: skip
    if args.model:
        command += ["--model", str(args.model)]
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, **_limited(cores, args.device))
    process_s = time.perf_counter() - start
    if done.returncode != 0:
        sys.exit(f"speakerprint embed failed ({done.returncode}):\n{done.stderr}{done.stdout}")
    found = PRINTED.search(done.stdout)
    if not found:
        sys.exit(f"speakerprint embed printed no throughput line:\n{done.stdout}")
    audio_s, wall_s = float(found.group(1)), float(found.group(2))
    return {"audio_s": audio_s, "wall_s": wall_s, "process_s": process_s}


MODEL_ONLY = """
import json, sys, time
import numpy as np, torch
from speakerprint.audio import load_audio
from speakerprint.inference.extract import collect_inputs, length_batches
from speakerprint.inference import SpeakerEncoder
manifest, model, device, batch_seconds, repeats, repeat_manifest, limit = sys.argv[1:8]
if device == "cpu":
    torch.set_num_threads(int(sys.argv[8]))
enc = SpeakerEncoder.from_pretrained(model or None, device=device)
items = collect_inputs([__import__("pathlib").Path(manifest)])[: int(limit) or None]
waves = [load_audio(i.path, enc.sample_rate) for i in items] * int(repeat_manifest)
batches = length_batches([len(w) / enc.sample_rate for w in waves], float(batch_seconds))
def once():
    for batch in batches:
        enc.embed_batch([waves[i] for i in batch])
    if device.startswith("cuda"):
        torch.cuda.synchronize()
enc.embed_batch([waves[i] for i in batches[0]])  # warm-up: allocator, kernels
times = []
for _ in range(int(repeats)):
    start = time.perf_counter()
    once()
    times.append(time.perf_counter() - start)
audio_s = sum(len(w) for w in waves) / enc.sample_rate
print(json.dumps({"audio_s": audio_s, "times": times, "batches": len(batches)}))
"""


def run_model_only(manifest: Path, args, cores: int | None) -> dict:
    command = [sys.executable, "-c", MODEL_ONLY, str(manifest), str(args.model or ""), args.device,
               str(args.batch_seconds), str(args.repeats), str(args.repeat_manifest),
               str(args.limit), str(cores or 1)]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, **_limited(cores, args.device))
    if done.returncode != 0:
        sys.exit(f"model-only run failed ({done.returncode}):\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def repeated_manifest(manifest: Path, repeat: int, limit: int, workdir: Path) -> Path:
    """The manifest's first ``limit`` lines (0: all), ``repeat`` times with distinct ids."""
    lines = [json.loads(line) for line in manifest.read_text().splitlines() if line.strip()]
    lines = lines[: limit or None]
    if repeat == 1 and not limit:
        return manifest
    out = workdir / "manifest.jsonl"
    rows = []
    for r in range(repeat):
        for entry in lines:
            rows.append(json.dumps({**entry, "utt_id": f"{r}/{entry['utt_id']}"}))
    out.write_text("\n".join(rows) + "\n")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--manifest", type=Path, default=DEFAULT_MANIFEST)
    parser.add_argument("--model", type=Path, default=None, help="bundle (default: shipped)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--cores", type=int, nargs="+", default=[1, 2],
                        help="CPU rows: cores per row (ignored on a GPU)")  # fmt: skip
    parser.add_argument("--batch-seconds", type=float, default=120.0)
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per row")
    parser.add_argument("--repeat-manifest", type=int, default=1)
    parser.add_argument("--limit", type=int, default=0, help="first N utterances only (0: all)")
    parser.add_argument("--out", type=Path, default=None, help="also write the table here")
    args = parser.parse_args()
    if not args.manifest.is_file():
        sys.exit(
            f"{args.manifest} not found: run `make demo` (or `speakerprint prepare folder "
            "../shared/data/speechocean762/train --out runs/so762/data --dev-speakers 25 --seed 0`)"
        )
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        sys.exit(f"--device {args.device}: CUDA is not available")

    on_cpu = args.device == "cpu"
    settings = args.cores if on_cpu else [None]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        manifest = repeated_manifest(args.manifest, args.repeat_manifest, args.limit, workdir)
        for cores in settings:
            where = f"{cores} core{'s' if cores != 1 else ''}" if on_cpu else args.device
            cli = [run_cli(manifest, args, cores, workdir) for _ in range(args.repeats)]
            speeds = [r["audio_s"] / r["wall_s"] for r in cli]
            rows.append((where, "speakerprint embed", cli[0]["audio_s"], speeds,
                         statistics.median(r["process_s"] for r in cli)))  # fmt: skip
            model = run_model_only(args.manifest, args, cores)
            speeds = [model["audio_s"] / t for t in model["times"]]
            rows.append((where, "model only", model["audio_s"], speeds, None))
            print(f"{where}: done", file=sys.stderr)

    header = (
        "| setting | what | audio (min) | audio s per s (median) | min-max | "
        "hours of audio per minute | process wall s (start-up incl.) |\n"
        "|---|---|---:|---:|---|---:|---:|\n"
    )
    body = ""
    for where, what, audio_s, speeds, process_s in rows:
        med = statistics.median(speeds)
        body += (
            f"| {where} | {what} | {audio_s / 60:.1f} | {med:.0f} | "
            f"{min(speeds):.0f}-{max(speeds):.0f} | {med / 60:.2f} | "
            f"{'' if process_s is None else f'{process_s:.1f}'} |\n"
        )
    machine = (
        f"Machine: {device_name(args.device)} ({platform.machine()}), torch {torch.__version__}, "
        f"Python {platform.python_version()}; {time.strftime('%Y-%m-%d')}."
    )
    text = (
        "# Extraction throughput\n\n"
        f"Manifest: {args.manifest.name} ({'first ' + str(args.limit) + ' lines, ' if args.limit else ''}"
        f"x{args.repeat_manifest}), model: {args.model or 'the shipped model'}, "
        f"--batch-seconds {args.batch_seconds:g}, device {args.device}, "
        f"{args.repeats} timed runs per row.\n\n"
        + header
        + body
        + "\n*speakerprint embed*: the command end to end (decode in one prefetch thread, batches "
        "sorted by length, write); its figure is the one it prints. *model only*: the same "
        "batches of waveforms decoded beforehand through `embed_batch`. On a CPU a row's "
        "process is held to that many cores (affinity and torch threads).\n\n"
        + machine
        + "\n\nRe-run: `"
        + " ".join(["python bench/extract.py", *sys.argv[1:]])
        + "`\n"
    )
    print(text)
    if args.out:
        atomic_write_text(args.out, text)


if __name__ == "__main__":
    main()
