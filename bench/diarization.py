"""Diarization error (DER) and CPU real-time factor of ``speakerprint.diarize``.

Sets: conversations simulated from the speechocean762 speakers the shipped model never saw (the
25 dev speakers of ``prepare_folder(..., dev_speakers=25, seed=0)``), 2 to 4 speakers, at 0% and
10% overlap; and pyannote.audio's real two-speaker sample (``sample.wav`` / ``sample.rttm``, read
from the installed wheel's files, never imported). DER through ``eval.diarization`` (pyannote.metrics),
NIST collar 0.25 s on each side and no collar, overlap scored. Real-time factor: wall time of
``diarize`` (decoding, VAD, embeddings, clustering, resegmentation) over audio duration, one thread.

    OMP_NUM_THREADS=1 PYTHONPATH=src python bench/diarization.py --out bench/diarization.md
"""

from __future__ import annotations

import argparse
import importlib.metadata
import subprocess
import tempfile
import time
from pathlib import Path

import soundfile as sf
import torch
from _machine import describe

from speakerprint.data.conversations import SimulationConfig, write_conversations
from speakerprint.data.prepare import prepare_folder
from speakerprint.data.rttm import read_rttm
from speakerprint.diarize import diarize
from speakerprint.eval.diarization import diarization_error_files
from speakerprint.inference import SpeakerEncoder

SPEECH = Path(__file__).resolve().parents[2] / "shared" / "data" / "speechocean762" / "train"


def _run(files: dict[str, Path], reference: dict, encoder, method: str) -> tuple[dict, float]:
    hypothesis, seconds, audio_s = {}, 0.0, 0.0
    for file_id, path in files.items():
        audio_s += sf.info(str(path)).duration
        start = time.perf_counter()
        result = diarize(path, encoder=encoder, method=method)
        seconds += time.perf_counter() - start
        hypothesis[file_id] = [
            t.__class__(file_id, t.start_s, t.duration_s, t.speaker) for t in result.turns
        ]
    scores = {
        collar: diarization_error_files(reference, hypothesis, collar_s=collar).total
        for collar in (0.25, 0.0)
    }
    return scores, seconds / audio_s


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=Path("bench/diarization.md"))
    parser.add_argument("--num", type=int, default=50, help="conversations per overlap setting")
    parser.add_argument("--methods", nargs="+", default=["ahc", "spectral"])
    args = parser.parse_args()
    torch.set_num_threads(1)
    encoder = SpeakerEncoder.from_pretrained()
    sets: list[tuple[str, dict[str, Path], dict]] = []
    tmp = Path(tempfile.mkdtemp(prefix="diarization-bench-"))
    dev = prepare_folder(SPEECH, tmp / "prepared", dev_speakers=25, seed=0).dev_manifest
    for overlap in (0.0, 0.1):
        out = tmp / f"sim_{overlap}"
        config = SimulationConfig(num_conversations=args.num, overlap=overlap, seed=0)
        write_conversations(dev, out, config)
        reference = read_rttm(out / "reference.rttm")
        files = {fid: out / "audio" / f"{fid}.wav" for fid in reference}
        sets.append(
            (f"{args.num} simulated, 2-4 speakers, {overlap:.0%} overlap", files, reference)
        )
    try:  # the installed wheel's files, never imported
        sample = Path(
            importlib.metadata.distribution("pyannote.audio").locate_file("pyannote/audio/sample")
        )
    except importlib.metadata.PackageNotFoundError:
        sample = None
    if sample is not None and (sample / "sample.rttm").is_file():
        reference = read_rttm(sample / "sample.rttm")
        (file_id,) = reference
        sets.append(
            (
                "pyannote.audio sample.wav (real, 2 speakers)",
                {file_id: sample / "sample.wav"},
                reference,
            )
        )
    rows = []
    for name, files, reference in sets:
        for method in args.methods:
            scores, rtf = _run(files, reference, encoder, method)
            rows.append((name, method, scores[0.25], scores[0.0], rtf))
            print(
                name,
                method,
                f"DER {scores[0.25].der:.2%} / {scores[0.0].der:.2%}, RTF {rtf:.3f}",
                flush=True,
            )
    lines = [
        "# Diarization: DER and real-time factor of the shipped model",
        "",
        "Written by `bench/diarization.py` (its docstring says what each set and column is). Model: the",
        "shipped ECAPA-TDNN C=512 (100 speechocean762 speakers); simulated conversations use the 25",
        "speakers it never saw. DER = missed + false alarm + confusion over reference speech, overlap",
        "scored, through pyannote.metrics; collar 0.25 s on each side (NIST) and none.",
        "",
        "| set | clustering | DER (collar 0.25) | missed | false alarm | confusion | DER (no collar) | RTF (1 thread) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, method, c25, c0, rtf in rows:
        lines.append(
            f"| {name} | {method} | {c25.der:.1%} | {c25.missed:.1%} | {c25.false_alarm:.1%} | "
            f"{c25.confusion:.1%} | {c0.der:.1%} | {rtf:.3f} |"
        )
    load = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    lines += [
        "",
        "For context only (other data, other systems): pyannote 3.1 reports 18.8% on AMI and 11.3% on",
        "VoxConverse in its own benchmark.",
        "",
        "Command:",
        "",
        "    OMP_NUM_THREADS=1 PYTHONPATH=src python bench/diarization.py --out bench/diarization.md",
        "",
        f"Machine: {describe()}. Load at the end (`uptime`): {load}.",
        "",
    ]
    args.out.write_text("\n".join(lines))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
