"""Small generated trees in the MUSAN and RIRS_NOISES layouts, and helpers for the tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

SAMPLE_RATE = 16000


def _write(path: Path, wav: np.ndarray, sample_rate: int = SAMPLE_RATE) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, wav, sample_rate, subtype="FLOAT")


def speechlike(rng: np.random.Generator, seconds: float, f0: float) -> np.ndarray:
    """Harmonics of ``f0`` under a 4 Hz syllable envelope, in [-1, 1]."""
    t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    voice = sum(np.sin(2 * np.pi * k * f0 * t + rng.uniform(0, 6)) / k for k in range(1, 8))
    envelope = 0.5 * (1 + np.sin(2 * np.pi * 4 * t + rng.uniform(0, 6)))
    return (0.2 * voice * envelope).astype(np.float32)


@pytest.fixture(scope="session")
def musan_root(tmp_path_factory) -> Path:
    """``.../musan`` with 2 noise, 2 music and 4 speech files, 0.5-1.5 s each, and a README."""
    root = tmp_path_factory.mktemp("musan_tree") / "musan"
    rng = np.random.default_rng(1)
    _write(
        root / "noise/free-sound/noise-free-sound-0000.wav",
        (0.1 * rng.standard_normal(24000)).astype(np.float32),
    )
    brown = np.cumsum(rng.standard_normal(16000))
    _write(
        root / "noise/sound-bible/noise-sound-bible-0000.wav",
        (0.5 * brown / np.abs(brown).max()).astype(np.float32),
    )
    t = np.arange(20000) / SAMPLE_RATE
    for i, f in enumerate((220.0, 330.0)):
        music = 0.2 * np.sin(2 * np.pi * f * t) + 0.1 * np.sin(2 * np.pi * 1.5 * f * t)
        _write(root / f"music/fma/music-fma-{i:04d}.wav", music.astype(np.float32))
    for i, f0 in enumerate((110.0, 140.0, 180.0, 220.0)):
        _write(root / f"speech/librivox/speech-librivox-{i:04d}.wav", speechlike(rng, 0.5, f0))
    (root / "README").write_text("generated for tests\n")
    return root


@pytest.fixture(scope="session")
def rirs_root(tmp_path_factory) -> Path:
    """``.../RIRS_NOISES`` with 2 simulated RIRs, one 2-channel real RIR, and noises that must
    not be taken for RIRs."""
    root = tmp_path_factory.mktemp("rirs_tree") / "RIRS_NOISES"
    rng = np.random.default_rng(2)
    for size, room, delay in (("smallroom", 1, 30), ("mediumroom", 2, 80)):
        _write(
            root / f"simulated_rirs/{size}/Room{room:03d}/Room{room:03d}-00001.wav",
            decaying_rir(rng, delay, 4000),
        )
    real = np.zeros((3000, 2), np.float32)
    real[10, 0], real[200:, 0] = (
        0.9,
        0.05 * rng.standard_normal(2800) * np.exp(-np.arange(2800) / 500),
    )
    real[50, 1] = 0.9  # another microphone of the array: its direct path arrives later
    _write(root / "real_rirs_isotropic_noises/RVB2014_type1_rir_largeroom1_near_angla.wav", real)
    noise = (0.3 * rng.standard_normal(8000)).astype(np.float32)
    _write(root / "real_rirs_isotropic_noises/RVB2014_type1_noise_largeroom1_1.wav", noise)
    _write(root / "pointsource_noises/noise-free-sound-0001.wav", noise)
    return root


def decaying_rir(rng: np.random.Generator, delay: int, length: int) -> np.ndarray:
    """A real-ish RIR: silence for ``delay`` samples (propagation), a direct-path peak, then
    exponentially decaying reflections."""
    rir = np.zeros(length, np.float32)
    rir[delay] = 1.0
    tail = length - delay - 1
    rir[delay + 1 :] = 0.3 * rng.standard_normal(tail) * np.exp(-np.arange(tail) / 600)
    return rir


def padded_batch(
    rng: np.random.Generator, lengths: list[int], num_samples: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(B, num_samples)`` speech-like rows, zero beyond ``lengths``."""
    wav = torch.zeros(len(lengths), num_samples)
    for b, n in enumerate(lengths):
        wav[b, :n] = torch.from_numpy(speechlike(rng, 1.0, 100 + 20 * b)[:n])
    return wav, torch.tensor(lengths)


def snr_db(clean: torch.Tensor, noisy: torch.Tensor, length: int) -> float:
    clean, noise = clean[:length].double(), (noisy - clean)[:length].double()
    return float(10 * torch.log10(clean.square().sum() / noise.square().sum()))
