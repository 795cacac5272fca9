"""The peers' original model code and front ends, for the parity tests of the converters.

The peer packages are installed with --no-deps (requirements-peers.txt); their package
``__init__``s import torchaudio and training stacks that this environment lacks, so only the
pure-torch model files are imported, under their real module names, with the packages above them
as bare namespace modules. The Kaldi fbank that the peers compute with
``torchaudio.compliance.kaldi.fbank`` is computed with kaldi-native-fbank instead.
"""

from __future__ import annotations

import importlib
import importlib.machinery
import importlib.util
import sys
import types
from pathlib import Path

import kaldi_native_fbank as knf
import numpy as np
import pytest
import torch

from speakerprint.audio import load_audio
from tests.conftest import SHARED_DATA

SHARED = SHARED_DATA / "speechocean762" / "train"
# Real speech of three speakers, a few seconds each.
UTTERANCES = [
    "SPEAKER0001/000010011.opus",
    "SPEAKER0005/000050003.opus",
    "SPEAKER0006/000060015.opus",
]


def _bare_packages(*names: str) -> None:
    """Register each dotted package name (parents first) as a module whose ``__path__`` is the
    installed folder, so that its submodules import without running the package's ``__init__``."""
    for name in names:
        if name in sys.modules:
            continue
        parent, _, last = name.rpartition(".")
        if parent:
            folder = Path(list(sys.modules[parent].__path__)[0]) / last
        else:
            spec = importlib.util.find_spec(name)
            assert spec is not None, f"peer package {name} is not installed"
            folder = Path(list(spec.submodule_search_locations)[0])
        package = types.ModuleType(name)
        package.__path__ = [str(folder)]
        # A spec like an imported package's, so that importlib.util.find_spec on it (and on its
        # submodules) still works for the tests that run after these.
        package.__spec__ = importlib.machinery.ModuleSpec(name, None, is_package=True)
        package.__spec__.submodule_search_locations = [str(folder)]
        sys.modules[name] = package


def wespeaker_module(name: str) -> types.ModuleType:
    """``wespeaker.models.<name>`` from wespeaker-unofficial, without ``wespeaker/__init__``."""
    _bare_packages("wespeaker")
    return importlib.import_module(f"wespeaker.models.{name}")


def pyannote_wespeaker_resnet() -> types.ModuleType:
    """pyannote.audio's vendored ``models/embedding/wespeaker/resnet.py`` (its ResNet34...)."""
    _bare_packages(
        "pyannote",
        "pyannote.audio",
        "pyannote.audio.models",
        "pyannote.audio.models.blocks",
        "pyannote.audio.models.embedding",
        "pyannote.audio.models.embedding.wespeaker",
        "pyannote.audio.utils",
    )
    return importlib.import_module("pyannote.audio.models.embedding.wespeaker.resnet")


def speech(relative: str, duration_s: float = 4.0) -> np.ndarray:
    """An utterance of the shared data at 16 kHz, on the int16 grid a wav file would hold."""
    if not SHARED.is_dir():
        pytest.skip(f"shared speech not found at {SHARED}")
    wav = load_audio(SHARED / relative, 16000, duration_s=duration_s)
    return np.round(wav * 32767).astype(np.float32) / 32768


def kaldi_fbank(
    wav: np.ndarray, *, window: str = "hamming", num_mel_bins: int = 80
) -> torch.Tensor:
    """(1, T, num_mel_bins): torchaudio's ``kaldi.fbank`` as WeSpeaker and pyannote call it
    (int16 scale, dither 0, no energy, snip_edges, 25/10 ms), then the utterance mean removed."""
    opts = knf.FbankOptions()
    opts.frame_opts.samp_freq = 16000
    opts.frame_opts.dither = 0.0
    opts.frame_opts.window_type = window
    opts.mel_opts.num_bins = num_mel_bins
    opts.energy_floor = 0.0
    opts.use_energy = False
    online = knf.OnlineFbank(opts)
    online.accept_waveform(16000, (wav * 32768).tolist())
    online.input_finished()
    feats = torch.tensor(np.stack([online.get_frame(i) for i in range(online.num_frames_ready)]))
    return (feats - feats.mean(dim=0)).unsqueeze(0)


def perturb_batchnorm(model: torch.nn.Module, seed: int) -> None:
    """Random BN statistics and affine parameters, so a BN the conversion forgets shows."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for bn in model.modules():
            if isinstance(bn, torch.nn.modules.batchnorm._BatchNorm):
                n = bn.num_features
                bn.running_mean.copy_(0.2 * torch.randn(n, generator=generator))
                bn.running_var.copy_(0.5 + torch.rand(n, generator=generator))
                if bn.affine:
                    bn.weight.copy_(1.0 + 0.2 * torch.randn(n, generator=generator))
                    bn.bias.copy_(0.1 * torch.randn(n, generator=generator))


def cosine(a: np.ndarray | torch.Tensor, b: np.ndarray | torch.Tensor) -> float:
    a, b = np.asarray(a, dtype=np.float64).ravel(), np.asarray(b, dtype=np.float64).ravel()
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))
