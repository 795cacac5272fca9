import pytest
import torch

from speakerprint.errors import BundleError, ConfigError
from speakerprint.train.checkpoint import (
    TrainState,
    list_checkpoints,
    load_checkpoint,
    load_latest_checkpoint,
    prune_checkpoints,
    save_checkpoint,
)


def _optimizer_state():
    model = torch.nn.Linear(3, 2)
    opt = torch.optim.Adam(model.parameters(), lr=0.1, betas=(0.8, 0.9))
    model(torch.randn(4, 3)).sum().backward()
    opt.step()
    return model, opt


def test_round_trip_keeps_types_keys_and_values(tmp_path):
    model, opt = _optimizer_state()
    state = {
        "model": model.state_dict(),
        "optimizer": opt.state_dict(),
        "rng": torch.get_rng_state(),
        "step": 12,
        "nested": {"tuple": (1, 2.5, None), "flag": True},
    }
    path = save_checkpoint(tmp_path, 12, state)
    loaded = load_checkpoint(path)
    assert loaded["step"] == 12
    assert loaded["nested"] == {"tuple": (1, 2.5, None), "flag": True}
    assert torch.equal(loaded["rng"], state["rng"])
    # Optimiser state is keyed by int parameter index: the keys must come back as ints.
    assert set(loaded["optimizer"]["state"]) == set(opt.state_dict()["state"])
    new_model, new_opt = _optimizer_state()
    new_model.load_state_dict(loaded["model"])
    new_opt.load_state_dict(loaded["optimizer"])
    for a, b in zip(new_opt.state_dict()["state"].values(), opt.state_dict()["state"].values()):
        assert torch.equal(a["exp_avg"], b["exp_avg"])
    assert new_opt.param_groups[0]["betas"] == (0.8, 0.9)


def test_corrupt_checkpoint_is_detected_and_the_previous_one_used(tmp_path):
    save_checkpoint(tmp_path, 1, {"w": torch.ones(3)})
    newest = save_checkpoint(tmp_path, 2, {"w": torch.full((3,), 2.0)})
    blob = (newest / "tensors.safetensors").read_bytes()
    (newest / "tensors.safetensors").write_bytes(blob[:-4] + b"\x00\x00\x00\x01")
    with pytest.raises(BundleError, match="checksum"):
        load_checkpoint(newest)
    path, state = load_latest_checkpoint(tmp_path)
    assert path.name == "step_00000001"
    assert torch.equal(state["w"], torch.ones(3))


def test_interrupted_write_leaves_no_checkpoint(tmp_path):
    class Boom:
        pass

    with pytest.raises(TypeError):
        save_checkpoint(tmp_path, 5, {"bad": Boom()})
    assert list_checkpoints(tmp_path) == []
    assert list(tmp_path.iterdir()) == []


def test_prune_keeps_the_newest(tmp_path):
    for step in (1, 2, 3, 4):
        save_checkpoint(tmp_path, step, {"step": step})
    prune_checkpoints(tmp_path, keep=2)
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step_00000003", "step_00000004"]


# The keys a training checkpoint holds, in order: checkpoints of earlier runs must keep loading,
# so a change here needs a loader for the old layout (and a test of it).
CHECKPOINT_KEYS = [
    "model",
    "loss",
    "optimizer",
    "scaler",
    "step",
    "num_speakers",
    "speaker_digest",
    "rng",
    "config",
    "bad_steps_in_a_row",
]


def _train_state(seed: int, **kwargs) -> TrainState:
    torch.manual_seed(seed)
    model, loss_fn = torch.nn.Linear(3, 2), torch.nn.Linear(2, 4)
    opt = torch.optim.Adam([*model.parameters(), *loss_fn.parameters()], lr=0.1)
    loss_fn(model(torch.randn(5, 3))).sum().backward()
    opt.step()
    return TrainState(
        model=model,
        loss_fn=loss_fn,
        optimizer=opt,
        scaler=None,
        speakers=["a", "b", "c"],
        config={"train": {"seed": seed}},
        device=torch.device("cpu"),
        **kwargs,
    )


def test_train_state_restores_exactly_what_it_saved(tmp_path):
    saved_state = _train_state(0, step=7, bad_steps_in_a_row=2)
    rng = torch.get_rng_state()
    path = saved_state.save(tmp_path, keep=2)
    assert path.name == "step_00000007"
    state = load_checkpoint(path)
    assert list(state) == CHECKPOINT_KEYS
    assert state["num_speakers"] == 3 and state["config"] == {"train": {"seed": 0}}

    torch.rand(10)  # the global RNG moves on; restoring must bring it back
    fresh = _train_state(1)
    fresh.load_state_dict(state, source=path)
    assert (fresh.step, fresh.bad_steps_in_a_row) == (7, 2)
    assert torch.equal(torch.get_rng_state(), rng)
    for mine, theirs in [(fresh.model, saved_state.model), (fresh.loss_fn, saved_state.loss_fn)]:
        for k, v in theirs.state_dict().items():
            assert torch.equal(mine.state_dict()[k], v)
    moments = fresh.optimizer.state_dict()["state"]
    expected = saved_state.optimizer.state_dict()["state"]
    assert moments.keys() == expected.keys()
    assert all(torch.equal(moments[i]["exp_avg"], expected[i]["exp_avg"]) for i in expected)


def test_a_checkpoint_from_before_the_bad_step_count_resumes_with_none(tmp_path):
    state = load_checkpoint(_train_state(0, step=3, bad_steps_in_a_row=4).save(tmp_path, keep=1))
    del state["bad_steps_in_a_row"]
    fresh = _train_state(1)
    fresh.load_state_dict(state)
    assert (fresh.step, fresh.bad_steps_in_a_row) == (3, 0)


def test_a_checkpoint_of_other_speakers_is_refused(tmp_path):
    path = _train_state(0, step=1).save(tmp_path, keep=1)
    other = _train_state(1)
    other.speakers = ["a", "b"]
    with pytest.raises(ConfigError, match="trained on 3 speakers, the manifest has 2"):
        other.load_state_dict(load_checkpoint(path), source=path)


def test_train_state_saves_keep_the_newest(tmp_path):
    state = _train_state(0)
    for step in (1, 2, 3):
        state.step = step
        state.save(tmp_path, keep=2)
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step_00000002", "step_00000003"]
