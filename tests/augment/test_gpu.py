"""The augmentation on CUDA gives what it gives on the CPU for the same seed. Marked `gpu`;
skipped where no CUDA device exists (CI)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from speakerprint.augment import AugmentConfig, build_augmentation
from speakerprint.features import Fbank
from tests.augment.conftest import SAMPLE_RATE, padded_batch

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]


def test_cuda_matches_cpu_for_the_same_seed(musan_root, rirs_root):
    config = AugmentConfig(
        noise_dir=str(musan_root),
        noise_prob=0.7,
        rir_dir=str(rirs_root),
        reverb_prob=0.5,
        speed_perturb=True,
        specaugment_prob=0.8,
    )
    wav, lengths = padded_batch(np.random.default_rng(0), [16000, 12000, 6000, 16000] * 8, 16000)
    labels = torch.arange(32) % 10
    results = {}
    for device in ("cpu", "cuda"):
        aug = build_augmentation(config, SAMPLE_RATE, device, num_speakers=10)
        assert aug.noise.bank.audio["noise"].device.type == device
        g = torch.Generator().manual_seed(3)
        w, n, y = aug.waveform(wav.to(device), lengths.to(device), labels.to(device), g)
        feats, frames = Fbank().eval().to(device)(w, n)
        feats = aug.features(feats, frames, g)
        assert w.device.type == device and feats.device.type == device
        results[device] = [t.cpu() for t in (w, n, y, feats)]
    cpu, cuda = results["cpu"], results["cuda"]
    assert torch.equal(cpu[1], cuda[1]) and torch.equal(cpu[2], cuda[2])
    assert torch.allclose(cpu[0], cuda[0], atol=1e-4)
    assert torch.equal(cpu[3] == 0, cuda[3] == 0)  # the same SpecAugment masks
    assert torch.allclose(cpu[3], cuda[3], atol=1e-2)
