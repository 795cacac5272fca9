"""Calibration audio for the static int8 rows of the CPU benchmarks.

Real speech when ``../shared/data`` is there (the first utterance of each of the first speakers of
the speechocean762 train split, sorted by name), else noise with a slow random envelope; the
table says which. Speed does not depend on the ranges, but the EER figures in
docs/results/export_parity.md come from real-speech calibration, so the benchmarks use it too.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from speakerprint.audio import load_audio

SPEECH = Path(__file__).resolve().parents[2] / "shared" / "data" / "speechocean762" / "train"


def calibration_waveforms(count: int = 32, sample_rate: int = 16000) -> tuple[list, str]:
    """``count`` waveforms and a phrase naming their source."""
    speakers = sorted(SPEECH.iterdir())[:count] if SPEECH.is_dir() else []
    files = [min(s.glob("*.opus")) for s in speakers if any(s.glob("*.opus"))]
    if len(files) == count:
        waves = [load_audio(f, sample_rate, duration_s=10.0) for f in files]
        return waves, f"{count} speechocean762 train utterances"
    rng = np.random.default_rng(0)
    waves = []
    for _ in range(count):
        envelope = np.repeat(rng.uniform(0.01, 0.3, 61), 800)[: 3 * sample_rate]
        waves.append((envelope * rng.standard_normal(len(envelope))).astype(np.float32))
    return waves, f"{count} enveloped noise signals (no speech data found at {SPEECH})"
