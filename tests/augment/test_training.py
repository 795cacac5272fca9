"""Augmentation inside training: it changes what the model sees, it resumes exactly, speed
perturbation triples the classes, and the bundle records what was used."""

from __future__ import annotations

import json
import shutil

import pytest

from speakerprint.data.manifest import read_manifest
from speakerprint.train.checkpoint import list_checkpoints, load_checkpoint
from speakerprint.train.loop import train
from tests.conftest import tiny_config


def _config(demo_prepared, musan_root, **augment):
    sets = {
        "train.max_steps": 4,
        "train.checkpoint_every": 2,
        "train.keep_checkpoints": 5,
        "data.dev_manifest": "null",
        "data.dev_trials": "null",
        **{f"augment.{k}": v for k, v in augment.items()},
    }
    return tiny_config(demo_prepared, **sets)


ALL_ON = {
    "speed_perturb": "true",
    "specaugment_prob": 0.5,
    "noise_prob": 0.5,
    "codec_prob": 0.3,
}


@pytest.fixture(scope="module")
def augmented_run(demo_prepared, musan_root, tmp_path_factory):
    cfg = _config(demo_prepared, musan_root, noise_dir=str(musan_root), **ALL_ON)
    out = tmp_path_factory.mktemp("augmented")
    return cfg, out, train(cfg, out, progress=False)


def test_augmentation_changes_the_batches_and_is_recorded(
    augmented_run, demo_prepared, musan_root, tmp_path
):
    cfg, out, result = augmented_run
    plain = train(_config(demo_prepared, musan_root), tmp_path / "plain", progress=False)
    assert result.losses[0] != plain.losses[0]  # same seed, same crops: only augmentation differs
    info = json.loads((out / "bundle" / "config.json").read_text())["info"]
    assert info["augment"]["speed_perturb"] is True
    assert info["augment"]["noise_dir"] == str(musan_root)


def test_speed_perturbation_gives_three_classes_per_speaker(augmented_run, demo_prepared):
    _, out, _ = augmented_run
    num_speakers = len({u.speaker for u in read_manifest(demo_prepared / "train.jsonl")})
    state = load_checkpoint(list_checkpoints(out / "checkpoints")[-1])
    head = [v for k, v in _tensors(state["loss"]) if v.dim() == 2]
    assert head and head[0].shape[0] == 3 * num_speakers


def _tensors(obj, prefix=""):
    if hasattr(obj, "dim"):
        yield prefix, obj
    elif isinstance(obj, dict):
        for k, v in obj.items():
            yield from _tensors(v, f"{prefix}.{k}")


def test_an_augmented_run_resumes_exactly(augmented_run, tmp_path):
    cfg, _, full = augmented_run
    interrupted = tmp_path / "interrupted"
    train(cfg, interrupted, progress=False)
    for path in list_checkpoints(interrupted / "checkpoints"):
        if path.name != "step_00000002":
            shutil.rmtree(path)
    shutil.rmtree(interrupted / "bundle")
    resumed = train(cfg, interrupted, resume=True, progress=False)
    assert resumed.start_step == 2
    assert resumed.losses == full.losses[2:]
