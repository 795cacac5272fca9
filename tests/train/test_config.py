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
    assert not (tmp_path / "run").exists()  # refused before the run folder is made


@pytest.mark.parametrize(
    "sets, match",
    [
        (["data.dev_manifest=dev.jsonl"], "go together"),
        (["data.dev_trials=trials.txt"], "go together"),
        (["train.max_bad_steps_in_a_row=0"], "max_bad_steps_in_a_row must be at least 1, got 0"),
        (["data.train_manifest="], r"data.train_manifest \(or data.train_shards\) is required"),
        (["data.train_shards=shards", "data.sampler=speaker_balanced"], "stream of shards"),
        (["loss.name=triplet"], "set data.sampler=speaker_balanced"),
        (["data.sampler=speaker_balanced", "data.utterances_per_speaker=1"], ">= 2 dividing"),
        (["data.sampler=speaker_balanced", "data.utterances_per_speaker=3"], "got 3 and 64"),
        (
            ["data.sampler=speaker_balanced", "data.batch_size=8", "data.utterances_per_speaker=8"],
            "= 1 speakers per batch; it must be between 2",
        ),
    ],
)
def test_validate_refuses_settings_that_cannot_train_together(sets, match):
    cfg = load_config(None, ["data.train_manifest=train.jsonl", *sets])
    with pytest.raises(ConfigError, match=match):
        cfg.validate()


@pytest.mark.parametrize(
    "sets",
    [
        [],
        ["data.train_manifest=", "data.train_shards=shards"],
        ["loss.name=triplet", "data.sampler=speaker_balanced", "data.utterances_per_speaker=4"],
        ["data.dev_manifest=dev.jsonl", "data.dev_trials=trials.txt"],
    ],
)
def test_validate_accepts_consistent_settings(sets):
    load_config(None, ["data.train_manifest=train.jsonl", *sets]).validate()


def test_train_validates_before_it_writes_anything(tmp_path):
    from speakerprint.train.loop import train

    cfg = load_config(None, ["data.train_manifest=x.jsonl", "loss.name=triplet"])
    with pytest.raises(ConfigError, match="speaker_balanced"):
        train(cfg, tmp_path / "run", progress=False)
    assert not (tmp_path / "run").exists()
