"""SpeechBrain's ECAPA-TDNN (``embedding_model.ckpt`` + ``hyperparams.yaml``) converted to a bundle.

The fixture in tests/fixtures/peers/speechbrain was written by scripts/peer_fixtures/speechbrain.py
with SpeechBrain's own code (see the README there). Parity with SpeechBrain's installed code
(ECAPA_TDNN and Xvector, features included, on real speech) is in test_speechbrain_peer.py.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from typer.testing import CliRunner

from speakerprint.cli.main import app
from speakerprint.convert import convert
from speakerprint.errors import BundleError, ConfigError
from speakerprint.features import frontend_from_dict
from speakerprint.features.speechbrain import SpeechBrainFbank, SpeechBrainFbankConfig
from speakerprint.inference.encoder import SpeakerEncoder
from speakerprint.models.bundle import load_bundle

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "peers" / "speechbrain"
CHECKPOINT = FIXTURE / "embedding_model.ckpt"


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def _speech() -> np.ndarray:
    wav, sample_rate = sf.read(FIXTURE / "speech.wav", dtype="float32")
    assert sample_rate == 16000
    return wav


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> Path:
    return convert("speechbrain", CHECKPOINT, tmp_path_factory.mktemp("sb") / "bundle")


def test_fixture_gives_speechbrains_embedding(bundle):
    reference = np.load(FIXTURE / "embedding.npy")
    emb = SpeakerEncoder.from_pretrained(bundle).embed(_speech(), 16000)
    assert _cosine(emb, reference) >= 0.9999
    batch = load_bundle(bundle).embed_batch(torch.from_numpy(_speech())[None])[0].numpy()
    assert _cosine(batch, reference) >= 0.9999
    np.testing.assert_allclose(batch, reference, atol=1e-3 * np.abs(reference).max())


def test_fixture_catches_a_wrong_group_order_or_a_lost_batch_norm(bundle):
    """The fixture is sensitive enough to fail the two easiest mistakes of this conversion."""
    reference = np.load(FIXTURE / "embedding.npy")
    wav = torch.from_numpy(_speech())[None]
    loaded = load_bundle(bundle)
    block = loaded.encoder.blocks[1]
    width, channels = block.res2.width, block.res2.width * block.res2.scale
    undo = torch.cat([torch.arange(channels - width, channels), torch.arange(channels - width)])
    with torch.no_grad():  # SpeechBrain's channel order, as a converter without the fold leaves it
        for name in ["weight", "bias"]:
            getattr(block.conv_in.conv, name).copy_(getattr(block.conv_in.conv, name)[undo])
            getattr(block.conv_in.norm, name).copy_(getattr(block.conv_in.norm, name)[undo])
        for name in ["running_mean", "running_var"]:
            getattr(block.conv_in.norm, name).copy_(getattr(block.conv_in.norm, name)[undo])
        block.conv_out.conv.weight.copy_(block.conv_out.conv.weight[:, undo])
    assert _cosine(loaded.embed_batch(wav)[0].numpy(), reference) < 0.99
    loaded = load_bundle(bundle)
    loaded.encoder.blocks[2].conv_out.norm.reset_parameters()
    assert _cosine(loaded.embed_batch(wav)[0].numpy(), reference) < 0.99


def test_features_match_speechbrains(bundle):
    fbank = load_bundle(bundle).fbank
    assert isinstance(fbank, SpeechBrainFbank)
    feats, frames = fbank(torch.from_numpy(_speech())[None])
    reference = np.load(FIXTURE / "features.npy")
    assert frames.tolist() == [reference.shape[0]]
    np.testing.assert_allclose(feats[0].numpy(), reference, atol=1e-3)


def test_padding_changes_no_row(bundle):
    """Rows of a batch, padded with noise, give the features and embeddings they give alone."""
    loaded = load_bundle(bundle)
    wav = torch.from_numpy(_speech())
    lengths = torch.tensor([wav.numel(), 24000, 8001])
    batch = torch.empty(3, wav.numel()).uniform_(-0.5, 0.5)  # padding that is not silence
    for row, n in enumerate(lengths.tolist()):
        batch[row, :n] = wav[-n:]
    feats, frames = loaded.fbank(batch, lengths)
    embs = loaded.embed_batch(batch, lengths)
    for row, n in enumerate(lengths.tolist()):
        alone, alone_frames = loaded.fbank(wav[-n:][None])
        assert int(frames[row]) == int(alone_frames[0]) == 1 + n // 160
        torch.testing.assert_close(feats[row, : frames[row]], alone[0], atol=1e-4, rtol=0)
        assert bool(feats[row, frames[row] :].eq(0).all())
        torch.testing.assert_close(
            embs[row], loaded.embed_batch(wav[-n:][None])[0], atol=1e-4, rtol=1e-4
        )


def test_bundle_describes_the_peer(bundle):
    config = json.loads((bundle / "config.json").read_text())
    args = config["model"]["args"]
    assert config["model"]["family"] == "ecapa_tdnn"
    assert (args["feat_dim"], args["channels"], args["mfa_channels"], args["embed_dim"]) == (
        80,
        32,
        96,
        24,
    )
    assert (args["attention_channels"], args["se_channels"], args["res2_scale"]) == (16, 16, 8)
    assert args["dilations"] == [2, 3, 4]
    assert (args["mfa_norm"], args["attention_norm"], args["embedding_norm"]) == (
        True,
        True,
        False,
    )
    assert args["padding_mode"] == "reflect"
    assert config["features"]["kind"] == "speechbrain"
    assert config["features"]["num_mel_bins"] == 80
    info = config["info"]
    assert info["source"] == "speechbrain"
    assert info["checkpoint"] == "embedding_model.ckpt"
    assert info["checkpoint_sha256"] == hashlib.sha256(CHECKPOINT.read_bytes()).hexdigest()
    assert info["hyperparams"] == "hyperparams.yaml"
    assert info["peer_model"]["args"]["channels"] == [32, 32, 32, 32, 96]
    assert info["dropped_keys"] == []


def test_without_hyperparams_the_public_settings_are_assumed(tmp_path):
    (tmp_path / "ckpt").mkdir()
    checkpoint = shutil.copy(CHECKPOINT, tmp_path / "ckpt" / "embedding_model.ckpt")
    bundle = convert("speechbrain", checkpoint, tmp_path / "bundle")
    info = json.loads((bundle / "config.json").read_text())["info"]
    assert info["hyperparams"] is None
    emb = SpeakerEncoder.from_pretrained(bundle).embed(_speech(), 16000)
    assert _cosine(emb, np.load(FIXTURE / "embedding.npy")) >= 0.9999


def test_nested_prefixed_state_with_a_classifier(tmp_path):
    """DDP prefixes and a state dict nested under a key are read; foreign keys are dropped."""
    state = torch.load(CHECKPOINT, weights_only=True)
    nested = {"state_dict": {f"module.{k}": v for k, v in state.items()}}
    nested["state_dict"]["module.classifier.weight"] = torch.randn(10, 24)
    checkpoint = tmp_path / "model.ckpt"
    torch.save(nested, checkpoint)
    bundle = convert(
        "speechbrain", checkpoint, tmp_path / "bundle", config=FIXTURE / "hyperparams.yaml"
    )
    info = json.loads((bundle / "config.json").read_text())["info"]
    assert info["dropped_keys"] == ["classifier.weight"]
    emb = load_bundle(bundle).embed_batch(torch.from_numpy(_speech())[None])[0].numpy()
    assert _cosine(emb, np.load(FIXTURE / "embedding.npy")) >= 0.9999


def test_cli_converts_the_fixture(tmp_path):
    out = tmp_path / "bundle"
    result = CliRunner().invoke(app, ["convert", "speechbrain", str(CHECKPOINT), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert str(out) in result.output
    emb = SpeakerEncoder.from_pretrained(out).embed(_speech(), 16000)
    assert _cosine(emb, np.load(FIXTURE / "embedding.npy")) >= 0.9999


def test_cli_names_a_bad_checkpoint(tmp_path):
    bad = tmp_path / "embedding_model.ckpt"
    bad.write_text("not a checkpoint\n")
    result = CliRunner().invoke(
        app, ["convert", "speechbrain", str(bad), "--out", str(tmp_path / "b")]
    )
    assert result.exit_code != 0
    assert "embedding_model.ckpt" in result.output
    assert "Traceback" not in result.output


def _damaged(state: dict[str, torch.Tensor], damage: str) -> tuple[dict[str, torch.Tensor], str]:
    state = dict(state)
    if damage == "missing":
        key = "blocks.2.tdnn2.norm.norm.running_var"
        del state[key]
    elif damage == "renamed":
        key = "mfa.conv.conv.bias"
        state["mfa.conv.conv.offset"] = state.pop(key)
    else:
        key = "asp.conv.conv.weight"
        state[key] = torch.zeros(state[key].shape[0] + 1, *state[key].shape[1:])
    return state, key


@pytest.mark.parametrize("damage", ["missing", "renamed", "wrong_shape"])
def test_damaged_checkpoint_names_file_and_key(tmp_path, damage):
    state, key = _damaged(torch.load(CHECKPOINT, weights_only=True), damage)
    checkpoint = tmp_path / "embedding_model.ckpt"
    torch.save(state, checkpoint)
    with pytest.raises(BundleError) as excinfo:
        convert("speechbrain", checkpoint, tmp_path / "bundle")
    assert str(checkpoint) in str(excinfo.value)
    assert key in str(excinfo.value)
    if damage == "renamed":
        assert "mfa.conv.conv.offset" in str(excinfo.value)
    assert not (tmp_path / "bundle").exists()


def test_not_a_checkpoint(tmp_path):
    checkpoint = tmp_path / "embedding_model.ckpt"
    checkpoint.write_bytes(b"\x00\x01 definitely not a pickle")
    with pytest.raises(BundleError, match="not a readable PyTorch checkpoint") as excinfo:
        convert("speechbrain", checkpoint, tmp_path / "bundle")
    assert str(checkpoint) in str(excinfo.value)
    torch.save([1, 2, 3], checkpoint)
    with pytest.raises(BundleError, match="not a state dict"):
        convert("speechbrain", checkpoint, tmp_path / "bundle")


def test_hyperparams_that_disagree_with_the_weights(tmp_path):
    text = (FIXTURE / "hyperparams.yaml").read_text()
    (tmp_path / "hyperparams.yaml").write_text(text.replace("lin_neurons: 24", "lin_neurons: 192"))
    with pytest.raises(ConfigError, match="lin_neurons: 192") as excinfo:
        convert("speechbrain", CHECKPOINT, tmp_path / "b", config=tmp_path / "hyperparams.yaml")
    assert "hyperparams.yaml" in str(excinfo.value)
    (tmp_path / "hyperparams.yaml").write_text(text.replace("std_norm: False", "std_norm: True"))
    with pytest.raises(ConfigError, match="std_norm"):
        convert("speechbrain", CHECKPOINT, tmp_path / "b", config=tmp_path / "hyperparams.yaml")


def test_hyperparams_dilations_reach_the_model(tmp_path):
    text = (FIXTURE / "hyperparams.yaml").read_text()
    (tmp_path / "hyperparams.yaml").write_text(text.replace("[1, 2, 3, 4, 1]", "[1, 2, 2, 2, 1]"))
    bundle = convert(
        "speechbrain", CHECKPOINT, tmp_path / "b", config=tmp_path / "hyperparams.yaml"
    )
    assert json.loads((bundle / "config.json").read_text())["model"]["args"]["dilations"] == [
        2,
        2,
        2,
    ]
    emb = load_bundle(bundle).embed_batch(torch.from_numpy(_speech())[None])[0].numpy()
    assert _cosine(emb, np.load(FIXTURE / "embedding.npy")) < 0.9999  # not the peer's model


def test_features_config_round_trip_and_errors():
    config = SpeechBrainFbankConfig(num_mel_bins=40, f_max_hz=7600.0)
    fbank = frontend_from_dict(config.to_dict())
    assert isinstance(fbank, SpeechBrainFbank) and fbank.config == config
    with pytest.raises(ConfigError, match="unknown SpeechBrainFbankConfig keys"):
        SpeechBrainFbankConfig.from_dict({"kind": "speechbrain", "dither": 1.0})
    with pytest.raises(ConfigError, match="f_max_hz"):
        SpeechBrainFbankConfig(f_max_hz=9000.0)
