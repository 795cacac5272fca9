"""Training records mirrored to TensorBoard / W&B, and the curves.png of every run."""

import json
import math
import sys
import types

import numpy as np
import pytest

from speakerprint.errors import ConfigError
from speakerprint.train.tracking import RunLog, scalars_of
from tests.conftest import tiny_config


def _tb_scalars(log_dir):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(log_dir))
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def test_scalars_of_names_train_and_dev_numbers_and_drops_the_rest():
    assert scalars_of({"step": 3, "loss": 2.5, "accuracy": 0.5, "lr": 1e-3, "margin": 0.2}) == {
        "train/loss": 2.5,
        "train/accuracy": 0.5,
        "train/lr": 1e-3,
        "train/margin": 0.2,
    }
    dev = scalars_of({"step": 4, "event": "dev", "eer": 0.1, "min_dcf": 0.5, "trials": "x.txt"})
    assert dev == {"dev/eer": 0.1, "dev/min_dcf": 0.5}
    assert scalars_of({"step": 5, "event": "skipped_step", "bad_steps_in_a_row": 2}) == {
        "train/bad_steps_in_a_row": 2.0
    }
    assert scalars_of({"step": 5, "event": "end", "train_wall_s": 3.0}) == {}
    assert scalars_of({"step": 1, "loss": math.nan, "accuracy": True}) == {}


def test_training_writes_tensorboard_events_equal_to_metrics_jsonl(tmp_path, demo_prepared):
    pytest.importorskip("tensorboard")
    pytest.importorskip("matplotlib")
    from speakerprint.train.loop import train

    run = tmp_path / "run"
    train(tiny_config(demo_prepared, **{"train.eval_every": 2}), run, progress=False)
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    scalars = _tb_scalars(run / "tensorboard")
    losses = [(r["step"], r["loss"]) for r in records if "loss" in r and "event" not in r]
    assert [s for s, _ in scalars["train/loss"]] == [s for s, _ in losses] == [1, 2, 3, 4]
    np.testing.assert_allclose([v for _, v in scalars["train/loss"]], [v for _, v in losses])
    devs = [(r["step"], r["eer"]) for r in records if r.get("event") == "dev"]
    assert [s for s, _ in scalars["dev/eer"]] == [s for s, _ in devs] == [2, 4]
    np.testing.assert_allclose([v for _, v in scalars["dev/eer"]], [v for _, v in devs])
    assert {"train/lr", "train/margin", "train/accuracy", "dev/min_dcf"} <= set(scalars)

    from PIL import Image

    with Image.open(run / "curves.png") as image:
        pixels = np.asarray(image.convert("L"), dtype=float)
    assert pixels.shape[0] > 200 and pixels.shape[1] > 300
    assert pixels.std() > 5, "curves.png is blank"


def test_curves_png_and_tensorboard_can_be_turned_off(tmp_path, demo_prepared):
    from speakerprint.train.loop import train

    run = tmp_path / "run"
    cfg = tiny_config(
        demo_prepared,
        **{"train.curves_png": "false", "train.tensorboard": "false", "train.max_steps": 2},
    )
    train(cfg, run, progress=False)
    assert (run / "metrics.jsonl").is_file()
    assert not (run / "curves.png").exists()
    assert not (run / "tensorboard").exists()


def test_resume_drops_the_records_past_the_resumed_step(tmp_path):
    run = tmp_path / "run"
    first = RunLog(run, None, tensorboard=True)
    for step in range(1, 7):
        first.write({"step": step, "loss": float(step)})
    first.close(curves=False)
    again = RunLog(run, 3, tensorboard=True)
    for step in (4, 5):
        again.write({"step": step, "loss": 10.0 * step})
    again.close(curves=False)
    assert _tb_scalars(run / "tensorboard")["train/loss"] == [
        (1, 1.0),
        (2, 2.0),
        (3, 3.0),
        (4, 40.0),
        (5, 50.0),
    ]
    steps = [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4, 5]


def test_a_fresh_run_starts_its_records_afresh(tmp_path):
    run = tmp_path / "run"
    old = RunLog(run, None, tensorboard=False)
    old.write({"step": 9, "loss": 1.0})
    old.close(curves=False)
    RunLog(run, None, tensorboard=False).write({"step": 1, "loss": 2.0})
    assert [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()] == [
        {"step": 1, "loss": 2.0}
    ]


def test_required_tensorboard_without_the_package_is_a_config_error(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)
    with pytest.raises(ConfigError, match=r"speakerprint\[tensorboard\]"):
        RunLog(tmp_path, None, tensorboard=True)
    # auto quietly does without; the records still go to metrics.jsonl.
    run_log = RunLog(tmp_path, None, tensorboard="auto")
    run_log.write({"step": 1, "loss": 1.0})
    assert not (tmp_path / "tensorboard").exists()
    assert (tmp_path / "metrics.jsonl").read_text().strip() == '{"step": 1, "loss": 1.0}'


def test_wandb_without_the_package_is_a_config_error(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "wandb", None)
    with pytest.raises(ConfigError, match=r"speakerprint\[wandb\]"):
        RunLog(tmp_path, None, tensorboard=False, wandb=True)


class _FakeWandb(types.ModuleType):
    """Records what RunLog asks of the wandb module (the real one needs an account or a server)."""

    def __init__(self):
        super().__init__("wandb")
        self.inits, self.logged, self.finished, self.metrics = [], [], 0, []
        self.util = types.SimpleNamespace(generate_id=lambda: f"id{len(self.inits)}")

    def init(self, **kwargs):
        self.inits.append(kwargs)
        fake = self

        class Run:
            def define_metric(self, name, **kw):
                fake.metrics.append((name, kw))

            def log(self, data):
                fake.logged.append(data)

            def finish(self):
                fake.finished += 1

        return Run()


def test_wandb_gets_the_scalars_against_the_training_step_and_one_run_per_folder(
    tmp_path, monkeypatch
):
    fake = _FakeWandb()
    monkeypatch.setitem(sys.modules, "wandb", fake)
    run = tmp_path / "run"
    first = RunLog(run, None, tensorboard=False, wandb=True, wandb_project="p", config={"a": 1})
    first.write({"step": 10, "loss": 1.5, "lr": 0.1})
    first.write({"step": 10, "event": "end", "train_wall_s": 2.0})
    first.close(curves=False)
    assert fake.logged == [{"step": 10, "train/loss": 1.5, "train/lr": 0.1}]
    assert fake.finished == 1
    assert ("*", {"step_metric": "step"}) in fake.metrics
    assert fake.inits[0]["project"] == "p" and fake.inits[0]["config"] == {"a": 1}
    # A resumed run continues the same W&B run.
    RunLog(run, 10, tensorboard=False, wandb=True).close(curves=False)
    assert fake.inits[1]["id"] == fake.inits[0]["id"]
    assert fake.inits[1]["resume"] == "allow"
    # Another run folder is another W&B run.
    RunLog(tmp_path / "other", None, tensorboard=False, wandb=True).close(curves=False)
    assert fake.inits[2]["id"] != fake.inits[0]["id"]


def test_other_ranks_write_nothing(tmp_path):
    run_log = RunLog(tmp_path / "run", None, enabled=False, tensorboard=True)
    run_log.write({"step": 1, "loss": 1.0})
    assert run_log.close() is None
    assert not (tmp_path / "run").exists()
