"""A checkpoint in a toolkit's own layout is recognised without being told which toolkit."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from speakerprint.convert import SOURCES, recognise
from speakerprint.errors import BundleError

PEERS = Path(__file__).resolve().parents[1] / "fixtures" / "peers"


@pytest.mark.parametrize(
    "relative, source, checkpoint, config",
    [
        ("speechbrain", "speechbrain", "embedding_model.ckpt", "hyperparams.yaml"),
        (
            "speechbrain/embedding_model.ckpt",
            "speechbrain",
            "embedding_model.ckpt",
            "hyperparams.yaml",
        ),
        ("wespeaker/resnet34", "wespeaker", "avg_model.pt", "config.yaml"),
        ("wespeaker/ecapa/avg_model.pt", "wespeaker", "avg_model.pt", "config.yaml"),
    ],
)
def test_fixture_layouts_are_recognised(relative, source, checkpoint, config):
    found_source, found_checkpoint, found_config = recognise(PEERS / relative)
    assert found_source == source
    assert found_checkpoint.name == checkpoint and found_checkpoint.is_file()
    assert found_config is not None and found_config.name == config


def test_a_nemo_archive_is_recognised(tmp_path):
    archive = tmp_path / "titanet.nemo"
    archive.write_bytes(b"not read by recognise")
    assert recognise(archive) == ("nemo", archive, None)
    assert recognise(tmp_path) == ("nemo", archive, None)


def test_speechbrain_without_hyperparams(tmp_path):
    shutil.copy(PEERS / "speechbrain" / "embedding_model.ckpt", tmp_path)
    assert recognise(tmp_path) == ("speechbrain", tmp_path / "embedding_model.ckpt", None)


def test_an_unknown_layout_names_the_path_and_every_expected_layout(tmp_path):
    (tmp_path / "weights.bin").write_bytes(b"x")
    with pytest.raises(BundleError) as info:
        recognise(tmp_path)
    message = str(info.value)
    assert str(tmp_path) in message
    for source in SOURCES:
        assert f"{source}:" in message


def test_a_missing_path_is_named(tmp_path):
    with pytest.raises(BundleError, match="does not exist"):
        recognise(tmp_path / "nowhere")


def test_a_wespeaker_checkpoint_without_its_config_is_not_taken_for_one(tmp_path):
    shutil.copy(PEERS / "wespeaker" / "resnet34" / "avg_model.pt", tmp_path)
    with pytest.raises(BundleError, match="known toolkit"):
        recognise(tmp_path)


def test_the_hubs_wespeaker_layout_pairs_a_checkpoint_with_the_yaml_of_its_stem(tmp_path):
    shutil.copy(
        PEERS / "wespeaker" / "resnet34" / "avg_model.pt", tmp_path / "voxceleb_resnet221_LM.pt"
    )
    shutil.copy(
        PEERS / "wespeaker" / "resnet34" / "config.yaml", tmp_path / "voxceleb_resnet221_LM.yaml"
    )
    source, checkpoint, config = recognise(tmp_path)
    assert source == "wespeaker" and checkpoint.name == "voxceleb_resnet221_LM.pt"
    assert config == tmp_path / "voxceleb_resnet221_LM.yaml"
