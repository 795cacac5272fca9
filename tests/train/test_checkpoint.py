import pytest
import torch

from speakerprint.errors import BundleError
from speakerprint.train.checkpoint import (
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
