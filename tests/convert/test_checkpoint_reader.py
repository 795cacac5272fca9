"""The one checkpoint reader every converter uses: safe loading, unwrapping, one prefix rule."""

from __future__ import annotations

import pytest
import torch

from speakerprint.convert._checkpoint import read_state_dict, strip_wrapper_prefixes
from speakerprint.errors import BundleError


def test_a_nested_ddp_state_dict_is_unwrapped_and_its_prefix_dropped(tmp_path):
    state = {"fc.weight": torch.randn(2, 3), "fc.bias": torch.randn(2)}
    path = tmp_path / "c.pt"
    torch.save({"epoch": 3, "state_dict": {f"module.{k}": v for k, v in state.items()}}, path)
    got = read_state_dict(path, str(path))
    assert set(got) == set(state)
    assert all(torch.equal(got[k], state[k]) for k in state)
    assert set(read_state_dict(path.read_bytes(), "member")) == set(state)


def test_prefixes_go_only_when_every_key_has_them():
    assert strip_wrapper_prefixes({"module.model.a": 1, "module.model.b": 2}) == {"a": 1, "b": 2}
    assert strip_wrapper_prefixes({"module.module.a": 1}) == {"a": 1}
    mixed = {"module.a": 1, "b": 2}
    assert strip_wrapper_prefixes(mixed) == mixed


def test_code_in_a_pickle_is_refused(tmp_path):
    """weights_only=True: a checkpoint that would run code on load is not loaded."""
    path = tmp_path / "evil.pt"
    torch.save({"fc.weight": torch.zeros(1), "hook": print}, path)
    with pytest.raises(BundleError, match=f"{path.name}: not a readable PyTorch checkpoint"):
        read_state_dict(path, str(path))


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ([1, 2, 3], "holds a list, not a state dict of tensors"),
        ({}, "holds a dict, not a state dict of tensors"),
        ({"epoch": 3}, "entries that are not tensors: 'epoch'"),
    ],
)
def test_what_is_not_a_state_dict_is_named(tmp_path, content, message):
    path = tmp_path / "c.pt"
    torch.save(content, path)
    with pytest.raises(BundleError, match=message):
        read_state_dict(path, str(path))


def test_a_missing_file_is_named(tmp_path):
    with pytest.raises(BundleError, match="nothing.pt: no such checkpoint file"):
        read_state_dict(tmp_path / "nothing.pt", str(tmp_path / "nothing.pt"))
