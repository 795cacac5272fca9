"""One function turns a device name into a device, with one-line errors for every caller."""

import pytest
import torch

from speakerprint.errors import ConfigError
from speakerprint.train import distributed
from speakerprint.train.device import resolve_device, resolve_precision


def test_names_become_devices():
    assert resolve_device("cpu") == torch.device("cpu")
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device("auto").type == expected


@pytest.mark.parametrize("name", ["gpu", "cuda:x", ""])
def test_a_name_that_is_not_a_device_is_one_config_error(name):
    with pytest.raises(ConfigError, match=f"train.device={name}: not a device"):
        resolve_device(name)


def test_cuda_without_cuda_is_a_config_error_naming_the_option(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ConfigError, match="train.device=cuda: CUDA is not available"):
        resolve_device("cuda")
    with pytest.raises(ConfigError, match="--device=cuda:1: CUDA is not available"):
        resolve_device("cuda:1", option="--device")
    assert resolve_device("auto") == torch.device("cpu")


def test_distributed_setup_resolves_through_it(monkeypatch):
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert distributed.setup("auto").device == torch.device("cpu")
    with pytest.raises(ConfigError, match="train.device=cuda: CUDA is not available"):
        distributed.setup("cuda")
    with pytest.raises(ConfigError, match="not a device"):
        distributed.setup("tpu0")


def test_train_refuses_a_bad_device_before_it_writes_anything(tmp_path):
    from speakerprint.train.config import load_config
    from speakerprint.train.loop import train

    cfg = load_config(None, ["data.train_manifest=x.jsonl", "train.device=gpu"])
    with pytest.raises(ConfigError, match="train.device=gpu: not a device"):
        train(cfg, tmp_path / "run", progress=False)
    assert not (tmp_path / "run").exists()


def test_precision_auto_is_bf16_on_cuda_only():
    assert resolve_precision("auto", torch.device("cpu")) is None
    assert resolve_precision("auto", torch.device("cuda")) == torch.bfloat16
    assert resolve_precision("fp16", torch.device("cpu")) == torch.float16
