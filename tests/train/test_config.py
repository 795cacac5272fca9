import pytest

from speakerprint.errors import ConfigError
from speakerprint.features import FbankConfig
from speakerprint.train.config import (
    ExperimentConfig,
    config_from_dict,
    config_to_dict,
    load_config,
    save_config,
)


def test_defaults_and_round_trip(tmp_path):
    cfg = load_config(None, ["optim.lr=0.01", "model.args={channels: 256}", "train.max_steps=7"])
    assert cfg.optim.lr == 0.01 and isinstance(cfg.optim.lr, float)
    assert cfg.model.args == {"channels": 256}
    assert cfg.train.max_steps == 7
    assert isinstance(cfg.features, FbankConfig)
    save_config(cfg, tmp_path / "c.yaml")
    again = load_config(tmp_path / "c.yaml")
    assert again == cfg
    assert config_from_dict(config_to_dict(cfg)) == cfg


def test_int_is_accepted_for_float_but_not_the_reverse():
    assert load_config(None, ["optim.lr=1"]).optim.lr == 1.0
    with pytest.raises(ConfigError, match="train.max_steps: expected an integer"):
        load_config(None, ["train.max_steps=1.5"])


@pytest.mark.parametrize(
    "override, message",
    [
        ("optim.lrr=0.1", "unknown config key.*optim.lrr"),
        ("nosuch.key=1", "unknown config key.*nosuch"),
        ("loss.name=focal", "'focal' is not one of"),
        ("train.eval_at_start=maybe", "expected true/false"),
        ("features.num_mel_bins=eighty", "expected an integer"),
        ("optim.lr", "not of the form key=value"),
    ],
)
def test_bad_overrides_are_errors(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(None, [override])


def test_yaml_errors_name_the_file(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("optim: {lr: [}\n")
    with pytest.raises(ConfigError, match="bad.yaml"):
        load_config(bad)
    code = tmp_path / "code.yaml"
    code.write_text("optim: !!python/object/apply:os.system ['echo hacked']\n")
    with pytest.raises(ConfigError, match="code.yaml"):
        load_config(code)
    with pytest.raises(ConfigError, match="cannot read config"):
        load_config(tmp_path / "missing.yaml")


def test_nullable_fields():
    cfg = load_config(None, ["data.dev_manifest=null"])
    assert cfg.data.dev_manifest is None
    assert ExperimentConfig().data.dev_manifest is None


def test_dev_manifest_without_trials_is_an_error(tmp_path):
    from speakerprint.train.loop import train

    cfg = load_config(None, ["data.train_manifest=x.jsonl", "data.dev_manifest=dev.jsonl"])
    with pytest.raises(ConfigError, match="go together"):
        train(cfg, tmp_path / "run", progress=False)
