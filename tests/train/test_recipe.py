"""Recipes of several phases: merging, validation, and training one phase from another."""

from __future__ import annotations

import json

import pytest
import torch
import yaml
from safetensors.torch import load_file

from speakerprint.errors import ConfigError
from speakerprint.losses import build_loss
from speakerprint.models import create_model
from speakerprint.train.checkpoint import load_checkpoint
from speakerprint.train.config import config_to_dict, load_config, load_recipe
from speakerprint.train.loop import init_weights, train, train_recipe
from tests.conftest import tiny_config


def write_recipe(path, base: dict, phases: list[dict] | None = None):
    data = dict(base)
    if phases is not None:
        data["phases"] = phases
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


BASE = {"model": {"name": "ecapa_tdnn_c512"}, "train": {"max_steps": 100}}


def test_phases_merge_over_the_base_and_overrides_reach_every_phase(tmp_path):
    recipe = write_recipe(
        tmp_path / "r.yaml",
        {**BASE, "data": {"crop_s": 2.0, "batch_size": 64}},
        [
            {"name": "pretrain"},
            {"name": "large_margin", "data": {"crop_s": 6.0}, "loss": {"margin": 0.5}},
        ],
    )
    first, second = load_recipe(recipe, ["train.max_steps=7"])
    assert (first.name, second.name) == ("pretrain", "large_margin")
    assert (first.config.data.crop_s, second.config.data.crop_s) == (2.0, 6.0)
    assert second.config.data.batch_size == 64  # merged key by key, not replaced
    assert (first.config.loss.margin, second.config.loss.margin) == (0.2, 0.5)
    assert first.config.train.max_steps == second.config.train.max_steps == 7


def test_a_recipe_without_phases_is_one_unnamed_phase(tmp_path):
    (only,) = load_recipe(write_recipe(tmp_path / "r.yaml", BASE))
    assert only.name == "" and only.config.train.max_steps == 100


@pytest.mark.parametrize(
    "phases, match",
    [
        ([], "non-empty"),
        ([{"data": {}}], "with a name"),
        ([{"name": "a"}, {"name": "a"}], "unique"),
        ([{"name": "../up"}], "plain folder name"),
        ([{"name": "a", "loss": {"mrgin": 0.5}}], "phase a: unknown config key"),
    ],
)
def test_bad_phases_are_named_errors(tmp_path, phases, match):
    with pytest.raises(ConfigError, match=match):
        load_recipe(write_recipe(tmp_path / "r.yaml", BASE, phases))


def test_load_config_refuses_a_recipe_of_phases(tmp_path):
    recipe = write_recipe(tmp_path / "r.yaml", BASE, [{"name": "a"}])
    with pytest.raises(ConfigError, match="several phases"):
        load_config(recipe)


def _tiny_encoder():
    return create_model(
        "ecapa_tdnn",
        channels=16,
        mfa_channels=48,
        embed_dim=8,
        se_channels=8,
        attention_channels=8,
    )


def test_init_weights_takes_the_head_only_from_the_same_loss_and_speakers(tmp_path, demo_prepared):
    run = tmp_path / "run"
    cfg = tiny_config(
        demo_prepared,
        **{"train.max_steps": 1, "data.dev_manifest": "null", "data.dev_trials": "null"},
    )
    train(cfg, run, progress=False)
    speakers = sorted({json.loads(line)["speaker"] for line in open(demo_prepared / "train.jsonl")})
    model = create_model(cfg.model.name, **cfg.model.args)
    aam = build_loss("aam", embed_dim=model.embed_dim, num_classes=len(speakers))
    assert "encoder and loss head" in init_weights(run, model, aam, speakers)
    trained = load_checkpoint(next((run / "checkpoints").iterdir()))["model"]
    for name, value in model.state_dict().items():
        assert torch.equal(value, trained[name]), name
    softmax = build_loss("softmax", embed_dim=model.embed_dim, num_classes=len(speakers))
    assert "starts fresh" in init_weights(run, model, softmax, speakers)
    other_speakers = [*speakers[1:], "someone-else"]
    assert "starts fresh" in init_weights(run, model, aam, other_speakers)
    # A bundle gives the encoder only.
    assert "starts fresh" in init_weights(run / "bundle", model, aam, speakers)
    with pytest.raises(ConfigError, match="do not fit"):
        init_weights(run, _tiny_encoder(), aam, speakers)
    with pytest.raises(ConfigError, match="nor a model bundle"):
        init_weights(tmp_path / "nowhere", model, aam, speakers)


def test_phases_chain_and_a_frozen_phase_keeps_the_encoder(tmp_path, demo_prepared):
    base = config_to_dict(
        tiny_config(demo_prepared, **{"train.max_steps": 2, "train.eval_at_start": "false"})
    )
    recipe = write_recipe(
        tmp_path / "r.yaml",
        base,
        [
            {"name": "softmax", "loss": {"name": "softmax"}},
            {
                "name": "triplet",
                "loss": {"name": "triplet", "margin": 0.1, "mining": "semi_hard"},
                "data": {"sampler": "speaker_balanced", "utterances_per_speaker": 2},
            },
            {"name": "frozen", "loss": {"name": "softmax"}, "train": {"freeze_encoder": True}},
        ],
    )
    out = tmp_path / "run"
    results = train_recipe(load_recipe(recipe), out, progress=False)
    assert [r.run_dir.name for r in results] == ["softmax", "triplet", "frozen"]
    assert all(torch.isfinite(torch.tensor(r.losses)).all() for r in results)
    triplet_weights = load_file(str(out / "triplet" / "bundle" / "model.safetensors"))
    frozen_weights = load_file(str(out / "frozen" / "bundle" / "model.safetensors"))
    softmax_weights = load_file(str(out / "softmax" / "bundle" / "model.safetensors"))
    assert all(torch.equal(triplet_weights[k], frozen_weights[k]) for k in triplet_weights)
    assert not all(torch.equal(triplet_weights[k], softmax_weights[k]) for k in triplet_weights)
    saved = yaml.safe_load((out / "frozen" / "config.yaml").read_text())
    assert saved["model"]["init_from"] == str(out / "triplet")
    # Resuming a finished recipe trains nothing again.
    assert train_recipe(load_recipe(recipe), out, resume=True, progress=False) == []


@pytest.mark.parametrize(
    "overrides, match",
    [
        ({"loss.name": "triplet"}, "data.sampler=speaker_balanced"),
        (
            {
                "loss.name": "triplet",
                "data.sampler": "speaker_balanced",
                "train.freeze_encoder": "true",
            },
            "has none",
        ),
        ({"data.sampler": "speaker_balanced", "data.utterances_per_speaker": 3}, "dividing"),
        ({"data.sampler": "speaker_balanced", "data.utterances_per_speaker": 8}, "between 2"),
    ],
)
def test_inconsistent_sampler_loss_and_freezing_are_config_errors(
    tmp_path, demo_prepared, overrides, match
):
    with pytest.raises(ConfigError, match=match):
        train(tiny_config(demo_prepared, **overrides), tmp_path / "run", progress=False)


def test_speaker_balanced_batches_continue_into_the_next_epoch(
    tmp_path, demo_prepared, monkeypatch
):
    # 220 utterances make 3 batches of 64: step 4 starts the second epoch, whose sampler must
    # again see every training utterance's label (not, say, the last batch's).
    import speakerprint.train.data as train_data

    seen = []

    class Recording(train_data.SpeakerBalancedBatchSampler):
        def __init__(self, labels, *args, **kwargs):
            seen.append((kwargs["epoch"], len(labels)))
            super().__init__(labels, *args, **kwargs)

    monkeypatch.setattr(train_data, "SpeakerBalancedBatchSampler", Recording)
    cfg = tiny_config(
        demo_prepared,
        **{
            "loss.name": "triplet",
            "loss.margin": 0.1,
            "data.sampler": "speaker_balanced",
            "data.utterances_per_speaker": 4,
            "data.batch_size": 64,
            "data.crop_s": 0.5,
            "train.max_steps": 4,
            "data.dev_manifest": "null",
            "data.dev_trials": "null",
        },
    )
    result = train(cfg, tmp_path / "run", progress=False)
    assert len(result.losses) == 4
    assert seen == [(0, 220), (1, 220)]
