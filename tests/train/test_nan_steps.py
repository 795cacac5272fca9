"""A step with a NaN/Inf loss or gradient is skipped, logged and counted; too many in a row stop.

Audio with NaN samples never reaches training (audio.io refuses it), so the fault is injected
with a forward hook on the encoder that the test wraps around ``create_model``.
"""

from __future__ import annotations

import json

import pytest
import torch

from speakerprint.errors import ConfigError, SpeakerprintError
from speakerprint.models import create_model
from speakerprint.train import loop
from speakerprint.train.checkpoint import load_checkpoint
from speakerprint.train.loop import TrainingDiverged, train
from tests.conftest import tiny_config


def _inject(monkeypatch, bad_calls: set[int] | None, *, where: str):
    """Make the encoder's forward calls numbered in ``bad_calls`` (0-based; None: all) bad.

    where="loss": the embeddings become NaN, so the loss is NaN.
    where="grad": the embeddings stay finite but their gradient becomes Inf.
    """
    calls = {"n": 0}

    def hook(module, inputs, output):
        n = calls["n"]
        calls["n"] += 1
        if bad_calls is not None and n not in bad_calls:
            return output
        if where == "loss":
            return output * float("nan")
        output.register_hook(lambda grad: grad * float("inf"))
        return output

    def create(name, **kwargs):
        model = create_model(name, **kwargs)
        model.register_forward_hook(hook)
        return model

    monkeypatch.setattr(loop, "create_model", create)


def _config(data, **overrides):
    sets = {
        "data.dev_manifest": "null",
        "data.dev_trials": "null",
        "train.checkpoint_every": 1,
        "train.keep_checkpoints": 10,
        "train.max_steps": 3,
    }
    sets.update(overrides)
    return tiny_config(data, **sets)


def _tensors(state: dict) -> list[torch.Tensor]:
    model = list(state["model"].values())
    moments = [t for s in state["optimizer"]["state"].values() for t in s.values()]
    return model + [t for t in moments if isinstance(t, torch.Tensor)]


@pytest.mark.parametrize("where", ["loss", "grad"])
def test_a_bad_step_changes_nothing_and_is_logged(tmp_path, demo_prepared, monkeypatch, where):
    _inject(monkeypatch, {1}, where=where)  # the second step
    # grad_clip=0: a non-finite gradient must be caught even when nothing is clipped.
    result = train(_config(demo_prepared, **{"optim.grad_clip": 0}), tmp_path, progress=False)
    assert result.bad_steps == [2]
    assert result.end_step == 3

    ckpt = tmp_path / "checkpoints"
    before, after, next_ = (load_checkpoint(ckpt / f"step_0000000{i}") for i in (1, 2, 3))
    # Weights and optimiser moments after the skipped step equal those before it...
    assert all(torch.equal(a, b) for a, b in zip(_tensors(before), _tensors(after)))
    # ...and the next good step updates them again.
    assert not all(torch.equal(a, b) for a, b in zip(_tensors(after), _tensors(next_)))

    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").open()]
    (skipped,) = [r for r in records if r.get("event") == "skipped_step"]
    assert skipped["step"] == 2 and skipped["bad_steps_in_a_row"] == 1
    assert ("loss is nan" if where == "loss" else "gradient norm is") in skipped["reason"]
    assert [r["step"] for r in records if "loss" in r] == [1, 3]
    assert (tmp_path / "bundle" / "model.safetensors").is_file()


def test_too_many_bad_steps_in_a_row_stop_the_run(tmp_path, demo_prepared, monkeypatch):
    _inject(monkeypatch, None, where="loss")
    cfg = _config(demo_prepared, **{"train.max_steps": 20, "train.max_bad_steps_in_a_row": 3})
    with pytest.raises(TrainingDiverged, match=r"3 steps in a row \(steps 1\.\.3\)") as info:
        train(cfg, tmp_path, progress=False)
    assert isinstance(info.value, SpeakerprintError)  # the CLI prints it as one line
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").open()]
    assert [r["bad_steps_in_a_row"] for r in records if r.get("event") == "skipped_step"] == [
        1,
        2,
        3,
    ]
    assert not (tmp_path / "bundle").exists()


def test_a_good_step_resets_the_count(tmp_path, demo_prepared, monkeypatch):
    # Bad, bad, good, bad, bad: never 3 in a row, so the run finishes.
    _inject(monkeypatch, {0, 1, 3, 4}, where="loss")
    cfg = _config(demo_prepared, **{"train.max_steps": 5, "train.max_bad_steps_in_a_row": 3})
    result = train(cfg, tmp_path, progress=False)
    assert result.bad_steps == [1, 2, 4, 5]
    assert result.end_step == 5


def test_max_bad_steps_must_be_positive(tmp_path, demo_prepared):
    with pytest.raises(ConfigError, match="max_bad_steps_in_a_row"):
        train(_config(demo_prepared, **{"train.max_bad_steps_in_a_row": 0}), tmp_path)
