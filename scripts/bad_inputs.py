"""Try every bad input of the reliability issue and write what happened to docs/reliability.md.

Each audio input goes through ``load_audio`` and ``SpeakerEncoder.embed`` (the shipped model);
each manifest goes through ``speakerprint check`` (``check_manifest`` with ``--scan``). A row
records the error message or the result. The outcomes are pinned by tests
(tests/audio/test_io.py, tests/audio/test_bad_inputs.py, tests/data/test_check.py).

    PYTHONPATH=src python scripts/bad_inputs.py            # writes docs/reliability.md
    PYTHONPATH=src python scripts/bad_inputs.py --stdout   # prints it instead
"""

from __future__ import annotations

import argparse
import json
import struct
import sys
import tempfile
import zlib
from pathlib import Path

import numpy as np
import soundfile as sf

from speakerprint.audio import load_audio
from speakerprint.data.check import check_manifest
from speakerprint.errors import SpeakerprintError
from speakerprint.inference import SpeakerEncoder

SR = 16000
REPO = Path(__file__).resolve().parent.parent


def speech_like(seconds: float, sr: int = SR, channels: int = 1) -> np.ndarray:
    """A chirp with a slow envelope; (N,) or (N, C)."""
    t = np.arange(int(seconds * sr)) / sr
    wav = 0.3 * np.sin(2 * np.pi * (150 * t + 400 * t**2 % 3000)) * (0.6 + 0.4 * np.sin(3 * t))
    wav = wav.astype(np.float32)
    return wav if channels == 1 else np.repeat(wav[:, None], channels, axis=1)


def png_bytes() -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    header = struct.pack(">IIBBBBB", 1, 1, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0\0"))


def write_hour(path: Path) -> None:
    """One hour at 8 kHz, 8-bit (29 MB), written in blocks."""
    block = (speech_like(10.0, 8000) * 0.5).astype(np.float32)
    with sf.SoundFile(path, "w", samplerate=8000, channels=1, subtype="PCM_U8") as f:
        for _ in range(360):
            f.write(block)


def audio_cases(root: Path) -> list[tuple[str, Path]]:
    cases: list[tuple[str, Path]] = []

    def add(name: str, filename: str, make) -> None:
        path = root / filename
        if make is not None:
            make(path)
        cases.append((name, path))

    add("missing file", "missing.wav", None)
    add("empty file (0 bytes)", "empty.wav", lambda p: p.write_bytes(b""))
    add("zero samples (valid header)", "zero.wav", lambda p: sf.write(p, np.zeros(0), SR))

    def truncated(p: Path) -> None:
        sf.write(p, speech_like(1.0), SR)
        p.write_bytes(p.read_bytes()[:20000])

    add("truncated WAV (data chunk cut)", "truncated.wav", truncated)
    add(
        "header only (cut inside the header)",
        "header.wav",
        lambda p: p.write_bytes(b"RIFF\x24\0\0\0WAVEfmt "),
    )
    add(
        "wrong extension: FLAC named .wav",
        "flac_inside.wav",
        lambda p: sf.write(p, speech_like(2.0), SR, format="FLAC"),
    )
    add(
        "wrong extension: WAV named .mp3",
        "wav_inside.mp3",
        lambda p: sf.write(p, speech_like(2.0), SR, format="WAV"),
    )
    add("text renamed to .wav", "notes.wav", lambda p: p.write_text("not audio\n" * 50))
    add("PNG image renamed to .wav", "picture.wav", lambda p: p.write_bytes(png_bytes()))

    def with_value(value: float):
        def make(p: Path) -> None:
            wav = speech_like(2.0)
            wav[1000] = value
            sf.write(p, wav, SR, subtype="FLOAT")

        return make

    add("NaN sample (float WAV)", "nan.wav", with_value(float("nan")))
    add("Inf sample (float WAV)", "inf.wav", with_value(float("inf")))
    add(
        "full-scale clipping (square wave at +-1)",
        "clipped.wav",
        lambda p: sf.write(p, np.sign(speech_like(2.0) + 1e-9), SR),
    )
    add(
        "beyond full scale (float WAV at +-4)",
        "loud.wav",
        lambda p: sf.write(p, 4 * np.sign(speech_like(2.0) + 1e-9), SR, subtype="FLOAT"),
    )
    add("8 channels", "eight.wav", lambda p: sf.write(p, speech_like(2.0, channels=8), SR))
    add(
        "8 channels decoded by FFmpeg (WAV named .m4a)",
        "eight.m4a",
        lambda p: sf.write(p, speech_like(2.0, channels=8), SR, format="WAV"),
    )
    add("8 kHz", "8k.wav", lambda p: sf.write(p, speech_like(2.0, 8000), 8000))
    add("48 kHz", "48k.wav", lambda p: sf.write(p, speech_like(2.0, 48000), 48000))
    add(
        "10 ms (shorter than the model's minimum)",
        "short.wav",
        lambda p: sf.write(p, speech_like(0.01), SR),
    )
    add("silence (all zeros)", "silence.wav", lambda p: sf.write(p, np.zeros(2 * SR), SR))
    add("one hour (8 kHz, 29 MB)", "hour.wav", write_hour)
    (root / "dossier é 名前").mkdir()
    add(
        "unicode and spaces in the path",
        "dossier é 名前/voix 1 ü.wav",
        lambda p: sf.write(p, speech_like(2.0), SR),
    )
    return cases


def outcome(fn) -> str:
    try:
        return fn()
    except SpeakerprintError as e:
        return f"{type(e).__name__}: {e}"
    except Exception as e:  # anything else is a bug, and the table must show it
        return f"**unexpected {type(e).__name__}**: {e}"


def describe_wav(wav: np.ndarray) -> str:
    return f"{len(wav)} samples at 16 kHz ({len(wav) / SR:.2f} s), peak {np.abs(wav).max():.2f}"


def manifest_cases(root: Path, audio: dict[str, Path]) -> list[tuple[str, Path, list[Path]]]:
    good = audio["8 kHz"]
    other = audio["48 kHz"]

    def line(utt_id: str, path: Path, speaker: str = "s1", sr: int = 8000, dur: float = 2.0):
        return json.dumps(
            {
                "utt_id": utt_id,
                "path": str(path),
                "speaker": speaker,
                "duration_s": dur,
                "sample_rate": sr,
            }
        )

    base = [line("a", good), line("b", other, "s2", 48000)]
    cases = []

    def add(name: str, lines: list[str], trials: str | None = None) -> None:
        path = root / f"case{len(cases) + 1}.jsonl"
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")
        trial_paths = []
        if trials is not None:
            trial_path = path.with_suffix(".trials.txt")
            trial_path.write_text(trials, encoding="utf-8")
            trial_paths.append(trial_path)
        cases.append((name, path, trial_paths))

    add("manifest: missing audio files", base + [line("c", root / "gone.wav")])
    add("manifest: duplicate ids", base + [line("a", other, "s2", 48000)])
    add("manifest: malformed JSON", base + ['{"utt_id": "c", "path": '])
    add("manifest: wrong sample rate and duration", base + [line("c", good, sr=16000, dur=9.0)])
    add(
        "manifest: a silent and an undecodable file",
        base
        + [
            line("c", audio["silence (all zeros)"], sr=16000),
            line("d", audio["text renamed to .wav"], sr=16000),
        ],
    )
    add("trials: unknown speaker's utterances", base, "1 a b\n0 a spk9/u1.wav\n")
    add(
        "trials: a line naming a file not in the manifest", base, "0 a b\n1 a /data/x/missing.wav\n"
    )
    return cases


KILL_RESUME = """\
## Killed training runs

`tests/integration/test_kill_resume.py` runs `speakerprint train` on the demo data (tiny ECAPA,
batch 8, 16 steps, a checkpoint every step, fixed seeds, one thread) as a subprocess and stops it
three ways in turn, resuming with `--resume` after each; `tests/train/test_nan_steps.py` and
`tests/train/test_distributed.py` cover NaN steps and torchrun.

| interruption | what is left | steps lost | losses after `--resume` |
|---|---|---|---|
| SIGTERM (pre-emption notice) or SIGINT (Ctrl-C) | a checkpoint of the last finished step, written at the step boundary; exit status 2 and `error: stopped by SIGTERM after step N; checkpoint written to .../step_0000000N; continue with the same command and --resume` | 0 | equal to the uninterrupted run's, exactly |
| SIGTERM to the whole process group, DataLoader workers too (SLURM, `kill -- -PGID`) | as for SIGTERM: the workers leave the stop to the main process (they ignore a first SIGTERM and exit at a second); before, a worker's death made the main process fail with `DataLoader worker ... is killed by signal` and no checkpoint | 0 | as for SIGTERM |
| SIGKILL during a step | the checkpoints written so far | the step in progress plus those since the last checkpoint (at most `train.checkpoint_every`; 0 or 1 in the test) | equal, exactly |
| SIGKILL during a checkpoint write | a temporary `.step_N.xxxx` folder, ignored (a checkpoint is renamed into place only when complete and flushed) and removed on resume; a half-pruned old checkpoint fails its checksum and the newer one is used | since the previous checkpoint | equal, exactly |
| a NaN/Inf loss or gradient norm | the step is skipped: no weight, optimiser or BatchNorm-statistics change; a `skipped_step` record in metrics.jsonl | 1 step's update | `train.max_bad_steps_in_a_row` (10) in a row stop the run with `TrainingDiverged` |

Exactness needs one more thing that the resume test of whole epochs had not caught: a DataLoader
draws its workers' base seed from the global RNG when iterated, which shifted the dither noise of a
run resumed mid-epoch. The loader now has its own generator.
"""


#: Where the hand-written sections of docs/reliability.md begin.
HAND_WRITTEN = "## The HTTP service"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "reliability.md")
    parser.add_argument("--stdout", action="store_true")
    args = parser.parse_args()

    encoder = SpeakerEncoder.from_pretrained()
    min_s = encoder.bundle.min_samples / encoder.sample_rate
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        cases = audio_cases(root)
        for name, path in cases:
            loaded = outcome(lambda p=path: describe_wav(load_audio(p, SR)))
            if name.startswith("one hour"):
                loaded = outcome(
                    lambda p=path: (
                        "window start_s=3599, duration_s=1: "
                        + describe_wav(load_audio(p, SR, start_s=3599.0, duration_s=1.0))
                    )
                )

            def embedded(p=path) -> str:
                emb = encoder.embed(p)
                finite = "finite" if np.isfinite(emb).all() else "NOT FINITE"
                return f"embedding ({emb.shape[0]},), {finite}, norm {np.linalg.norm(emb):.1f}"

            rows.append((name, loaded, outcome(embedded)))
        audio = dict(cases)
        manifest_rows = []
        for name, manifest, trials in manifest_cases(root, audio):
            report = check_manifest(manifest, trials=trials, scan=True)
            text = "<br>".join([*report.problems, report.summary()]).replace(tmp, "$TMP")
            manifest_rows.append((name, f"exit status {0 if report.ok else 1}: {text}"))
    rows = [tuple(c.replace(str(root), "$TMP").replace("|", "\\|") for c in r) for r in rows]

    lines = [
        "# Reliability: bad inputs and killed runs",
        "",
        "Generated by `PYTHONPATH=src python scripts/bad_inputs.py`. Audio goes through "
        "`load_audio(path, 16000)` and `SpeakerEncoder.embed(path)` with the shipped model "
        "(`speakerprint embed` does the same per file); manifests and trial lists through "
        "`speakerprint check MANIFEST --trials T --scan`. `$TMP` is the scratch folder. "
        "Every outcome is pinned by a test (tests/audio/test_io.py, "
        "tests/audio/test_bad_inputs.py, tests/data/test_check.py).",
        "",
        f"Short inputs: the model needs {encoder.bundle.min_samples} samples "
        f"({1000 * min_s:.1f} ms); shorter ones are repeated up to that length before "
        "embedding (the policy of `Bundle.embed_batch`).",
        "",
        "## Audio files",
        "",
        "| input | `load_audio` | `SpeakerEncoder.embed` |",
        "|---|---|---|",
        *[f"| {a} | {b} | {c} |" for a, b, c in rows],
        "",
        "## Manifests and trial lists",
        "",
        "| input | `speakerprint check --scan` |",
        "|---|---|",
        *[f"| {a} | {b.replace('|', chr(92) + '|')} |" for a, b in manifest_rows],
        "",
        KILL_RESUME,
    ]
    text = "\n".join(lines)
    # The service's sections (hostile clients, crashes) are written by hand after the generated
    # ones and pinned by their own tests: a regeneration keeps them as they are.
    kept = args.out.read_text(encoding="utf-8") if args.out.exists() else ""
    if HAND_WRITTEN in kept:
        text = text.rstrip("\n") + "\n\n" + kept[kept.index(HAND_WRITTEN) :]
    if args.stdout:
        sys.stdout.write(text)
    else:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text, encoding="utf-8")
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
