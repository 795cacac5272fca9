"""Per-batch cost of each training augmentation on a device, next to the fbank for scale.

Every augmentation is applied to every utterance (probability 1), so the figures are upper
bounds of what a step pays. Without ``--musan``/``--rirs`` the banks are synthetic (random noise,
decaying RIRs) of the sizes the recipes use: the cost depends on their shapes, not their sound.
Codec and telephone-channel simulation runs per utterance on the CPU in the data loader workers;
its lines are the CPU time of one utterance (16 kbit/s where a bitrate applies), to be divided by
the number of workers.

    python bench/augment.py --device cuda                  # batch 128 x 2 s
    python bench/augment.py --device cpu --batch 4 --repeats 2   # a quick check
    OMP_NUM_THREADS=1 PYTHONPATH=src python bench/augment.py --device cpu --batch 32 \
        --out bench/augment_cpu.md                         # the training recipes' CPU batch
"""

from __future__ import annotations

import argparse
import dataclasses
import platform
import time
from pathlib import Path

import numpy as np
import torch

from speakerprint.augment import (
    AdditiveNoise,
    AugmentConfig,
    NoiseBank,
    Reverb,
    RirBank,
    SpecAugment,
    SpeedPerturb,
    encode_decode,
)
from speakerprint.augment.codec import CHANNELS, CODECS
from speakerprint.errors import ConfigError
from speakerprint.features import Fbank, FbankConfig
from speakerprint.utils.io import atomic_write_text
from speakerprint.utils.machine import device_name


def synthetic_noise_bank(files: int, seconds: float, sample_rate: int) -> NoiseBank:
    width = int(seconds * sample_rate)
    audio = {k: (0.1 * torch.randn(files, width)).half() for k in ("noise", "music", "speech")}
    lengths = {k: torch.full((files,), width) for k in audio}
    return NoiseBank(audio, lengths, {k: [] for k in audio}, sample_rate)


def synthetic_rir_bank(count: int, seconds: float, sample_rate: int) -> RirBank:
    width = int(seconds * sample_rate)
    decay = torch.exp(-torch.arange(width) / (0.1 * sample_rate))
    rirs = torch.randn(count, width) * decay
    rirs[:, 0] = 3.0
    rirs /= rirs.square().sum(dim=1, keepdim=True).sqrt()
    return RirBank(rirs, [], sample_rate)


def timed(fn, device: torch.device, repeats: int) -> float:
    """Median milliseconds of ``fn()`` over ``repeats`` runs after one warm-up."""
    fn()
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - start)
    return 1000 * float(np.median(times))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--sample-rate", type=int, default=16000)
    parser.add_argument("--musan", help="a MUSAN folder (default: a synthetic bank)")
    parser.add_argument("--rirs", help="a RIRS_NOISES folder (default: synthetic RIRs)")
    parser.add_argument("--noise-files", type=int, default=400, help="synthetic bank, per category")
    parser.add_argument("--rir-count", type=int, default=2000, help="synthetic RIRs")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's)")
    parser.add_argument("--out", type=Path, help="also write the table here, as Markdown")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    device = torch.device(args.device)
    sr = args.sample_rate
    num_samples = int(args.seconds * sr)
    config = AugmentConfig(noise_dir="-", noise_prob=1.0, reverb_prob=1.0, rir_dir="-")
    if args.musan:
        bank = NoiseBank.from_folder(args.musan, sr, segment_s=config.noise_bank_s)
    else:
        bank = synthetic_noise_bank(args.noise_files, config.noise_bank_s, sr)
    bank = bank.to(device)
    if args.rirs:
        rirs = RirBank.from_folder(args.rirs, sr, max_files=config.rir_bank_max_files)
    else:
        rirs = synthetic_rir_bank(args.rir_count, config.rir_max_s, sr)
    rirs = rirs.to(device)

    g = torch.Generator().manual_seed(0)
    wav = (0.1 * torch.randn(args.batch, num_samples)).to(device)
    lengths = torch.full((args.batch,), num_samples, device=device)
    labels = torch.zeros(args.batch, dtype=torch.long, device=device)
    fbank = Fbank(FbankConfig(sample_rate=sr)).to(device).eval()
    feats, frames = fbank(wav, lengths)

    def noise_only(**weights) -> AdditiveNoise:
        return AdditiveNoise(bank, dataclasses.replace(config, **weights))

    rows = [
        ("fbank (for scale)", lambda: fbank(wav, lengths)),
        ("speed 0.9/1.0/1.1", lambda: SpeedPerturb(1)(wav, lengths, labels, g)),
        ("reverb (FFT, 1 s RIRs)", lambda: Reverb(rirs, 1.0)(wav, lengths, g)),
    ]
    for name, weights in (
        ("noise (MUSAN noise)", {"music_weight": 0.0, "babble_weight": 0.0}),
        ("noise (music)", {"noise_weight": 0.0, "babble_weight": 0.0}),
        ("noise (babble, 3-7 talkers)", {"noise_weight": 0.0, "music_weight": 0.0}),
    ):
        augment = noise_only(**weights)
        rows.append((name, lambda a=augment: a(wav, lengths, g)))
    spec = SpecAugment(1.0)
    rows.append(("SpecAugment", lambda: spec(feats, frames, g)))

    where = device_name(device)
    header = (
        f"batch {args.batch} x {args.seconds:g} s at {sr} Hz on {where} "
        f"({torch.get_num_threads()} CPU threads), median of {args.repeats}"
    )
    print(header)
    print(f"{'augmentation':32s} {'ms / batch':>10s}")
    table = []
    with torch.no_grad():
        for name, fn in rows:
            table.append((name, timed(fn, device, args.repeats)))
            print(f"{name:32s} {table[-1][1]:10.2f}")
    one = wav[0].cpu().numpy()
    for codec in CHANNELS:
        name = f"codec {codec} (CPU, per utterance)"
        try:
            ms = timed(
                lambda c=codec: encode_decode(one, sr, c, 16), torch.device("cpu"), args.repeats
            )
        except ConfigError:  # an FFmpeg encoder this PyAV lacks: say so in the table
            table.append((name, f"no {CODECS[codec][0]} encoder"))
            print(f"{name:32s} {table[-1][1]:>10s}")
            continue
        table.append((name, ms))
        print(f"{name:32s} {ms:10.2f}")
    if args.out:
        banks = (
            f"noise: {args.musan or f'synthetic, {args.noise_files} files per category'}; "
            f"RIRs: {args.rirs or f'{args.rir_count} synthetic'}"
        )
        command = (
            f"PYTHONPATH=src python bench/augment.py --device {device.type} --batch {args.batch} "
            f"--seconds {args.seconds:g} --repeats {args.repeats}"
            + (f" --threads {args.threads}" if args.threads else "")
        )
        lines = [
            f"# Augmentation cost per batch on {device.type}",
            "",
            "| augmentation | ms |",
            "|---|---:|",
            *(f"| {name} | {ms if isinstance(ms, str) else f'{ms:.2f}'} |" for name, ms in table),
            "",
            f"{header}; every augmentation applied to every utterance (an upper bound of what a "
            f"step pays: the recipes draw each with a probability); {banks}. The codec rows are "
            "one utterance on the CPU, in a loader worker.",
            "",
            f"Machine: {where}, {platform.system()} {platform.machine()}, torch {torch.__version__}, "
            f"Python {platform.python_version()}.",
            "",
            f"Re-run: `{command} --out {args.out}`",
        ]
        atomic_write_text(args.out, "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
