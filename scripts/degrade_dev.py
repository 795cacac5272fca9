"""Write a noisy or a reverberant copy of an evaluation manifest, for testing robustness.

The copy keeps every ``utt_id`` (so the same trial list scores it) and points at new FLAC files:

- ``noise``: generated noise (``scripts/make_aug_banks.py``'s kinds, drawn with another seed than
  training uses, so new realisations) mixed in at ``--snr-db`` over each utterance, through the
  training augmentation's own ``add_noise``;
- ``reverb``: rooms simulated by pyroomacoustics with another seed than training's (new rooms,
  RT60 ``--rt60`` range), convolved through the training augmentation's ``reverberate``.

    python scripts/degrade_dev.py runs/so762/data/dev.jsonl --condition noise --snr-db 5 \\
        --out runs/aug_so762/dev_noise5
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from make_aug_banks import RATE, write_noise  # noqa: E402

from speakerprint.audio import load_audio  # noqa: E402
from speakerprint.augment import add_noise, reverberate, simulate_rirs  # noqa: E402
from speakerprint.data.manifest import read_manifest  # noqa: E402
from speakerprint.utils.io import atomic_write_text  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("manifest", type=Path)
    parser.add_argument("--condition", choices=["noise", "reverb"], required=True)
    parser.add_argument("--out", type=Path, required=True, help="folder: audio/ and dev.jsonl")
    parser.add_argument("--snr-db", type=float, default=5.0)
    parser.add_argument("--rt60", type=float, nargs=2, default=[0.4, 1.0])
    parser.add_argument("--rooms", type=int, default=50)
    parser.add_argument("--seed", type=int, default=1, help="training uses 0")
    parser.add_argument("--rir-cache", type=Path, default=None)
    args = parser.parse_args()

    rng = np.random.default_rng(args.seed)
    if args.condition == "noise":
        with tempfile.TemporaryDirectory() as tmp:
            noises = [sf.read(p, dtype="float32")[0] for p in write_noise(Path(tmp), args.seed)]
    else:
        rirs = simulate_rirs(
            args.rooms, RATE, rt60_s=tuple(args.rt60), seed=args.seed, cache_dir=args.rir_cache
        )
    audio_dir = args.out / "audio"
    lines = []
    for utt in read_manifest(args.manifest):
        wav = torch.from_numpy(load_audio(utt.path, RATE))[None]
        lengths = torch.tensor([wav.shape[1]])
        if args.condition == "noise":
            source = noises[rng.integers(len(noises))]
            start = int(rng.integers(len(source)))
            noise = np.resize(np.roll(source, -start), wav.shape[1])  # wraps round
            out = add_noise(
                wav, lengths, torch.from_numpy(noise)[None], torch.tensor([args.snr_db])
            )
        else:
            rir = torch.from_numpy(rirs[rng.integers(len(rirs))])[None]
            out = reverberate(wav, lengths, rir)
        out = out[0].numpy()
        peak = float(np.abs(out).max())
        if peak > 0.99:  # scaling keeps the SNR and avoids clipping
            out = out * (0.99 / peak)
        path = audio_dir / (utt.utt_id.rsplit(".", 1)[0] + ".flac")
        path.parent.mkdir(parents=True, exist_ok=True)
        sf.write(path, out, RATE, subtype="PCM_16")
        entry = {
            "utt_id": utt.utt_id,
            "path": str(path.resolve()),
            "speaker": utt.speaker,
            "duration_s": round(len(out) / RATE, 4),
            "sample_rate": RATE,
        }
        lines.append(json.dumps(entry) + "\n")
    atomic_write_text(args.out / "dev.jsonl", "".join(lines))
    what = f"{args.snr_db:g} dB SNR" if args.condition == "noise" else f"{args.rooms} rooms"
    print(f"{args.out / 'dev.jsonl'}: {len(lines)} utterances, {args.condition} ({what})")


if __name__ == "__main__":
    main()
