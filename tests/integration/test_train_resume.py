"""A resumed run continues exactly: its losses equal those of an uninterrupted run."""

import shutil

import pytest

from speakerprint.errors import ConfigError
from speakerprint.train.checkpoint import list_checkpoints
from speakerprint.train.loop import train
from tests.conftest import tiny_config


def test_resume_gives_the_losses_of_an_uninterrupted_run(tmp_path, demo_prepared):
    # Dither on, so the restored RNG state matters; 2 steps into the second epoch.
    cfg = tiny_config(
        demo_prepared,
        **{
            "train.max_steps": 6,
            "train.checkpoint_every": 3,
            "train.keep_checkpoints": 5,
            "data.batch_size": 64,
            "data.dev_manifest": "null",
            "data.dev_trials": "null",
        },
    )
    full = train(cfg, tmp_path / "full", progress=False)
    assert len(full.losses) == 6

    # The same run, "killed" after the checkpoint at step 3: later checkpoints and the bundle gone.
    interrupted = tmp_path / "interrupted"
    train(cfg, interrupted, progress=False)
    for path in list_checkpoints(interrupted / "checkpoints"):
        if path.name != "step_00000003":
            shutil.rmtree(path)
    shutil.rmtree(interrupted / "bundle")
    resumed = train(cfg, interrupted, resume=True, progress=False)
    assert resumed.start_step == 3
    assert resumed.losses == full.losses[3:]  # exactly, not approximately
    assert (interrupted / "bundle" / "model.safetensors").is_file()
    steps = [
        r["step"]
        for r in map(
            __import__("json").loads, (interrupted / "metrics.jsonl").read_text().splitlines()
        )
        if "loss" in r
    ]
    assert steps == [1, 2, 3, 4, 5, 6]  # no duplicated records after resuming


def test_a_run_folder_with_checkpoints_is_not_overwritten(tmp_path, demo_prepared):
    cfg = tiny_config(demo_prepared, **{"train.max_steps": 2})
    train(cfg, tmp_path / "run", progress=False)
    with pytest.raises(ConfigError, match="--resume"):
        train(cfg, tmp_path / "run", progress=False)


def test_a_run_records_its_dev_score_means_and_its_hardware(tmp_path, demo_prepared):
    import json

    train(tiny_config(demo_prepared, **{"train.max_steps": 2}), tmp_path / "run", progress=False)
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").open()]
    (dev,) = [r for r in records if r.get("event") == "dev"]
    assert -1 <= dev["mean_nontarget_score"] <= 1 and -1 <= dev["mean_target_score"] <= 1
    (end,) = [r for r in records if r.get("event") == "end"]
    assert end["steps_run"] == 2 and end["train_wall_s"] > 0
    assert end["device"].startswith("cpu")
