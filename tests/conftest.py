"""Shared fixtures: paths to the real speech in ../shared/data and the demo data in the repo."""

from __future__ import annotations

import getpass
import os
import tempfile
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parent.parent
# The shared speech sits beside the repository (../shared/data); SPEAKERPRINT_SHARED_DATA points
# elsewhere, for a checkout made somewhere else. Tests that need it skip when it is absent.
SHARED_DATA = Path(os.environ.get("SPEAKERPRINT_SHARED_DATA") or REPO.parent / "shared" / "data")
DEMO_DATA = REPO / "data" / "demo" / "speechocean762"

# torch.compile's on-disk cache does not key on the kernels torch was told to use
# (ATEN_CPU_CAPABILITY): code cached by a run with AVX2 kernels made a later native run abort in a
# convolution (torch 2.13). `make test` runs the suite both ways, so each kind gets its own cache.
os.environ.setdefault(
    "TORCHINDUCTOR_CACHE_DIR",
    str(
        Path(tempfile.gettempdir())
        / f"torchinductor_{getpass.getuser()}_{torch.backends.cpu.get_cpu_capability().lower()}"
    ),
)


@pytest.fixture(scope="session")
def demo_root() -> Path:
    assert DEMO_DATA.is_dir(), f"demo data missing at {DEMO_DATA}"
    return DEMO_DATA


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared data not found at {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture(scope="session")
def demo_prepared(tmp_path_factory, demo_root):
    """The demo data prepared once: 22 training speakers, 10 dev speakers with a trial list."""
    from speakerprint.data.prepare import prepare_folder

    out = tmp_path_factory.mktemp("demo_prepared")
    prepare_folder(demo_root, out, dev_speakers=10, seed=0)
    return out


def tiny_config(data_dir, **overrides):
    """A config small enough for a few CPU steps in a test."""
    from speakerprint.train.config import load_config

    sets = [
        f"data.train_manifest={data_dir / 'train.jsonl'}",
        f"data.dev_manifest={data_dir / 'dev.jsonl'}",
        f"data.dev_trials={data_dir / 'dev_trials.txt'}",
        "data.batch_size=8",
        "data.crop_s=1.0",
        "data.num_workers=0",
        "model.name=ecapa_tdnn",
        "model.args={channels: 32, mfa_channels: 96, embed_dim: 32, se_channels: 16, attention_channels: 16}",
        "train.max_steps=4",
        "train.checkpoint_every=2",
        "train.eval_at_start=false",
        "train.log_every=1",
    ]
    sets += [f"{k}={v}" for k, v in overrides.items()]
    return load_config(None, sets)


@pytest.fixture(scope="session")
def tiny_bundle(tmp_path_factory, demo_prepared):
    """A bundle trained for a few steps: enough to exercise everything that reads bundles."""
    from speakerprint.train.loop import train

    run = tmp_path_factory.mktemp("tiny_run")
    result = train(tiny_config(demo_prepared), run, progress=False)
    return result.bundle_path
