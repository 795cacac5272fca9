"""Write a MUSAN-layout noise folder from what this machine has, for the augmentation comparison.

MUSAN and RIRS_NOISES are not on these machines, so ``scripts/augment_speechocean762.sh`` trains
with stand-ins that go through the same folder readers as the real corpora:

- ``speech/``: real speech of talkers outside the training set, for babble: the Free Spoken Digit
  Dataset's 6 speakers (8 kHz WAV, resampled when read), each speaker's 50 recordings joined with
  short pauses into two files of about 20 s, as MUSAN's speech files are long monologues;
- ``noise/``: generated noise, 16 kHz, 10 s each: white, pink, brown and blue noise, mains hum with
  harmonics over a noise floor, band-limited fan-like noise, and noise bursts, with a slow random
  level drift. Generated, not recorded: a proxy for MUSAN's free-sound noises, and named as such.

There is no ``music/``; the noise augmentation draws among the categories present. Reverberation
comes from rooms simulated by pyroomacoustics (``augment.simulate_rooms``), not from this folder.

    python scripts/make_aug_banks.py runs/aug_so762/musan
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import soundfile as sf

FSDD = Path(__file__).resolve().parents[2] / "shared" / "data" / "fsdd" / "recordings"
RATE = 16000


def coloured(rng: np.random.Generator, n: int, exponent: float) -> np.ndarray:
    """Noise whose power falls as ``f ** -exponent`` (0 white, 1 pink, 2 brown, -1 blue)."""
    spectrum = np.fft.rfft(rng.standard_normal(n))
    freqs = np.fft.rfftfreq(n, 1 / RATE)
    freqs[0] = freqs[1]
    signal = np.fft.irfft(spectrum / freqs ** (exponent / 2), n)
    return signal / np.abs(signal).max()


def hum(rng: np.random.Generator, n: int, mains: float) -> np.ndarray:
    t = np.arange(n) / RATE
    tone = sum(np.sin(2 * np.pi * mains * k * t + rng.uniform(0, 6.3)) / k for k in range(1, 8))
    floor = 0.05 * coloured(rng, n, 1.0)
    signal = tone + floor
    return signal / np.abs(signal).max()


def fan(rng: np.random.Generator, n: int) -> np.ndarray:
    spectrum = np.fft.rfft(rng.standard_normal(n))
    freqs = np.fft.rfftfreq(n, 1 / RATE)
    centre = rng.uniform(200, 1500)
    spectrum *= np.exp(-0.5 * ((freqs - centre) / (0.4 * centre)) ** 2)
    signal = np.fft.irfft(spectrum, n)
    return signal / np.abs(signal).max()


def bursts(rng: np.random.Generator, n: int) -> np.ndarray:
    envelope = np.zeros(n)
    for start in rng.integers(0, n - RATE // 4, size=12):
        width = int(rng.integers(RATE // 50, RATE // 4))
        envelope[start : start + width] = np.hanning(width)
    signal = coloured(rng, n, 0.5) * (0.05 + envelope)
    return signal / np.abs(signal).max()


def write_noise(folder: Path, seed: int = 0) -> list[Path]:
    rng = np.random.default_rng(seed)
    n = 10 * RATE
    makers = {
        "white": lambda: coloured(rng, n, 0.0),
        "pink": lambda: coloured(rng, n, 1.0),
        "brown": lambda: coloured(rng, n, 2.0),
        "blue": lambda: coloured(rng, n, -1.0),
        "hum50": lambda: hum(rng, n, 50.0),
        "hum60": lambda: hum(rng, n, 60.0),
        "fan1": lambda: fan(rng, n),
        "fan2": lambda: fan(rng, n),
        "bursts1": lambda: bursts(rng, n),
        "bursts2": lambda: bursts(rng, n),
    }
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for name, make in makers.items():
        drift = np.interp(np.arange(n), np.linspace(0, n, 6), rng.uniform(0.4, 1.0, 6))
        path = folder / f"generated-{name}.wav"
        sf.write(path, (0.5 * make() * drift).astype(np.float32), RATE, subtype="PCM_16")
        written.append(path)
    return written


def write_speech(folder: Path) -> list[Path]:
    if not FSDD.is_dir():
        sys.exit(f"{FSDD} not found: the babble talkers come from ../shared/data/fsdd")
    by_speaker: dict[str, list[Path]] = {}
    for path in sorted(FSDD.glob("*.wav")):
        by_speaker.setdefault(path.stem.split("_")[1], []).append(path)
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for speaker, files in sorted(by_speaker.items()):
        for half, chunk in enumerate((files[::2], files[1::2])):
            pieces = []
            rate = None
            for path in chunk:
                audio, rate_here = sf.read(path, dtype="float32")
                rate = rate or rate_here
                if rate_here != rate:
                    sys.exit(f"{path}: {rate_here} Hz, the others {rate} Hz")
                pieces += [audio, np.zeros(rate // 5, dtype=np.float32)]
            path = folder / f"fsdd-{speaker}-{half}.wav"
            sf.write(path, np.concatenate(pieces), rate, subtype="PCM_16")
            written.append(path)
    return written


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="the MUSAN-layout folder to write")
    args = parser.parse_args()
    noise = write_noise(args.out / "noise" / "generated")
    speech = write_speech(args.out / "speech" / "fsdd")
    print(f"{args.out}: {len(noise)} generated noise files, {len(speech)} speech files (FSDD)")


if __name__ == "__main__":
    main()
