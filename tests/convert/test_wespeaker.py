"""WeSpeaker checkpoints (``avg_model.pt`` + ``config.yaml``) converted to bundles.

The fixtures in tests/fixtures/peers/wespeaker were written by scripts/peer_fixtures/wespeaker.py
with WeSpeaker's own model code (see the README there). The parity tests at the end build
WeSpeaker's architectures with its own code (wespeaker-unofficial, requirements-peers.txt), with
random weights and BN statistics, and compare embeddings of real speech: the published ECAPA and
ResNet34 at full size, ResNet152/221/293 at their real depths but narrow.
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
import yaml
from typer.testing import CliRunner

from speakerprint.cli.main import app
from speakerprint.convert import convert, recognise
from speakerprint.errors import BundleError
from speakerprint.inference.encoder import SpeakerEncoder
from speakerprint.models import count_parameters, create_model
from speakerprint.models.bundle import load_bundle
from tests.convert import peers

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "peers" / "wespeaker"
MODELS = ["ecapa", "resnet34"]


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def _speech() -> np.ndarray:
    wav, sample_rate = sf.read(FIXTURES / "speech.wav", dtype="float32")
    assert sample_rate == 16000
    return wav


def _peer_copy(tmp_path: Path, name: str) -> tuple[Path, dict[str, torch.Tensor]]:
    """A writable copy of a fixture folder; returns its checkpoint path and state dict."""
    folder = tmp_path / name
    shutil.copytree(FIXTURES / name, folder)
    checkpoint = folder / "avg_model.pt"
    return checkpoint, torch.load(checkpoint, weights_only=True)


@pytest.mark.parametrize("name", MODELS)
def test_fixture_gives_wespeakers_embedding(tmp_path, name):
    bundle = convert("wespeaker", FIXTURES / name / "avg_model.pt", tmp_path / "bundle")
    emb = SpeakerEncoder.from_pretrained(bundle).embed(_speech(), 16000)
    assert _cosine(emb, np.load(FIXTURES / f"{name}_embedding.npy")) >= 0.9999

    config = json.loads((bundle / "config.json").read_text())
    info = config["info"]
    assert info["source"] == "wespeaker"
    assert info["dropped_keys"] == ["projection.weight"]
    digest = hashlib.sha256((FIXTURES / name / "avg_model.pt").read_bytes()).hexdigest()
    assert info["checkpoint_sha256"] == digest
    features = config["features"]
    assert features["window"] == "hamming" and features["mean_norm"] and features["dither"] == 0.0


def test_a_forgotten_batchnorm_would_be_caught(tmp_path):
    """The fixture's BN statistics matter: resetting them moves the embedding far away."""
    bundle = load_bundle(convert("wespeaker", FIXTURES / "ecapa" / "avg_model.pt", tmp_path / "b"))
    bundle.encoder.pool_norm.reset_running_stats()
    emb = bundle.embed_batch(torch.from_numpy(_speech())[None])[0].numpy()
    assert _cosine(emb, np.load(FIXTURES / "ecapa_embedding.npy")) < 0.999


def test_resnet_uses_wespeakers_unbiased_std(tmp_path):
    bundle = load_bundle(convert("wespeaker", FIXTURES / "resnet34" / "avg_model.pt", tmp_path))
    assert bundle.encoder.hparams["unbiased_std"] is True
    wav = torch.from_numpy(_speech()[:8000])[None]  # 0.5 s: 13 frames after three strides
    unbiased = bundle.embed_batch(wav)
    bundle.encoder.unbiased_std = False
    assert not torch.allclose(unbiased, bundle.embed_batch(wav), atol=1e-6)


def test_cli_converts_with_a_config_elsewhere(tmp_path):
    checkpoint = tmp_path / "avg_model.pt"
    shutil.copy(FIXTURES / "resnet34" / "avg_model.pt", checkpoint)
    out = tmp_path / "bundle"
    result = CliRunner().invoke(
        app,
        [
            "convert",
            "wespeaker",
            str(checkpoint),
            "--out",
            str(out),
            "--config",
            str(FIXTURES / "resnet34" / "config.yaml"),
        ],
    )
    assert result.exit_code == 0, result.output
    assert str(out) in result.output
    emb = load_bundle(out).embed_batch(torch.from_numpy(_speech())[None])[0].numpy()
    assert _cosine(emb, np.load(FIXTURES / "resnet34_embedding.npy")) >= 0.9999


def test_cli_reports_a_missing_config_in_one_line(tmp_path):
    checkpoint = tmp_path / "avg_model.pt"
    shutil.copy(FIXTURES / "ecapa" / "avg_model.pt", checkpoint)
    result = CliRunner().invoke(
        app, ["convert", "wespeaker", str(checkpoint), "--out", str(tmp_path / "b")]
    )
    assert result.exit_code != 0
    assert "config.yaml" in result.output and "Traceback" not in result.output


def test_ddp_prefix_and_nested_state_dict_are_accepted(tmp_path):
    checkpoint, state = _peer_copy(tmp_path, "ecapa")
    torch.save({"state_dict": {f"module.{k}": v for k, v in state.items()}}, checkpoint)
    bundle = load_bundle(convert("wespeaker", checkpoint, tmp_path / "b"))
    emb = bundle.embed_batch(torch.from_numpy(_speech())[None])[0].numpy()
    assert _cosine(emb, np.load(FIXTURES / "ecapa_embedding.npy")) >= 0.9999


@pytest.mark.parametrize(
    ("name", "key"),
    [
        ("ecapa", "layer3.se_res2block.1.bns.2.running_var"),
        ("resnet34", "layer2.0.shortcut.1.bias"),
    ],
)
def test_missing_tensor_is_named(tmp_path, name, key):
    checkpoint, state = _peer_copy(tmp_path, name)
    del state[key]
    torch.save(state, checkpoint)
    with pytest.raises(BundleError, match="missing") as err:
        convert("wespeaker", checkpoint, tmp_path / "b")
    assert str(checkpoint) in str(err.value) and key in str(err.value)
    assert not (tmp_path / "b").exists()


def test_renamed_tensor_is_named(tmp_path):
    checkpoint, state = _peer_copy(tmp_path, "ecapa")
    state["pool.linear2.weights"] = state.pop("pool.linear2.weight")
    torch.save(state, checkpoint)
    with pytest.raises(BundleError) as err:
        convert("wespeaker", checkpoint, tmp_path / "b")
    message = str(err.value)
    assert str(checkpoint) in message
    assert "'pool.linear2.weight'" in message and "'pool.linear2.weights'" in message


def test_wrong_shape_is_named(tmp_path):
    checkpoint, state = _peer_copy(tmp_path, "resnet34")
    state["layer3.1.conv2.weight"] = state["layer3.1.conv2.weight"][:, :-1]
    torch.save(state, checkpoint)
    with pytest.raises(BundleError, match="shape") as err:
        convert("wespeaker", checkpoint, tmp_path / "b")
    assert str(checkpoint) in str(err.value) and "layer3.1.conv2.weight" in str(err.value)


@pytest.mark.parametrize("content", [b"not a checkpoint\n", b""])
def test_not_a_checkpoint(tmp_path, content):
    checkpoint = tmp_path / "avg_model.pt"
    checkpoint.write_bytes(content)
    shutil.copy(FIXTURES / "ecapa" / "config.yaml", tmp_path / "config.yaml")
    with pytest.raises(BundleError, match="not a readable PyTorch checkpoint") as err:
        convert("wespeaker", checkpoint, tmp_path / "b")
    assert str(checkpoint) in str(err.value)


def test_a_state_dict_of_other_things_is_refused(tmp_path):
    checkpoint, _ = _peer_copy(tmp_path, "ecapa")
    torch.save({"epoch": 3}, checkpoint)
    with pytest.raises(BundleError, match="not tensors") as err:
        convert("wespeaker", checkpoint, tmp_path / "b")
    assert "epoch" in str(err.value)


def _edit_config(tmp_path: Path, name: str, edit) -> Path:
    checkpoint, _ = _peer_copy(tmp_path, name)
    path = checkpoint.parent / "config.yaml"
    config = yaml.safe_load(path.read_text())
    edit(config)
    path.write_text(yaml.safe_dump(config))
    return checkpoint


@pytest.mark.parametrize(
    ("name", "edit", "message"),
    [
        ("ecapa", lambda c: c.update(model="CAMPPlus"), "'CAMPPlus' is not supported"),
        ("ecapa", lambda c: c["model_args"].update(pooling_func="MQMHASTP"), "MQMHASTP"),
        ("resnet34", lambda c: c["model_args"].update(two_emb_layer=True), "two_emb_layer"),
        ("resnet34", lambda c: c.update(model="ResNet50"), "'ResNet50' is not supported"),
        ("ecapa", lambda c: c["model_args"].update(embed_dim=192), "model_args.embed_dim"),
        (
            "ecapa",
            lambda c: c["dataset_args"]["fbank_args"].update(num_mel_bins=40),
            "num_mel_bins",
        ),
        ("resnet34", lambda c: c.pop("model"), "no 'model' name"),
    ],
)
def test_config_problems_are_named(tmp_path, name, edit, message):
    checkpoint = _edit_config(tmp_path, name, edit)
    with pytest.raises(BundleError, match=message) as err:
        convert("wespeaker", checkpoint, tmp_path / "b")
    assert "config.yaml" in str(err.value) or str(checkpoint) in str(err.value)


def test_emb_bn_and_no_global_context_map_onto_the_layout(tmp_path):
    """ECAPA_TDNN_c512-style (no global context) with emb_bn: the converter builds that layout."""
    checkpoint, state = _peer_copy(tmp_path, "ecapa")
    # Without global context the attention's first conv sees the frames only (in_dim, not 3 in_dim).
    weight = state["pool.linear1.weight"]
    state["pool.linear1.weight"] = weight[:, : weight.shape[1] // 3].clone()
    embed_dim = state["linear.weight"].shape[0]
    state.update(
        {
            "bn2.weight": torch.ones(embed_dim),
            "bn2.bias": torch.zeros(embed_dim),
            "bn2.running_mean": torch.zeros(embed_dim),
            "bn2.running_var": torch.ones(embed_dim),
            "bn2.num_batches_tracked": torch.tensor(0),
        }
    )
    torch.save(state, checkpoint)
    config_path = checkpoint.parent / "config.yaml"
    config = yaml.safe_load(config_path.read_text())
    config["model_args"].update(global_context_att=False, emb_bn=True)
    config_path.write_text(yaml.safe_dump(config))
    hparams = load_bundle(convert("wespeaker", checkpoint, tmp_path / "b")).encoder.hparams
    assert hparams["global_context"] is False and hparams["embedding_norm"] is True
    assert hparams["mfa_norm"] is False and hparams["attention_norm"] is False


# --- parity with WeSpeaker's own model code (wespeaker-unofficial) on real speech ---------------


def _save_wespeaker(folder: Path, model: torch.nn.Module, name: str, model_args: dict) -> Path:
    """``model`` saved as WeSpeaker publishes it: avg_model.pt (with its AAM head) + config.yaml."""
    projections = peers.wespeaker_module("projections")
    model.add_module("projection", projections.ArcMarginProduct(model_args["embed_dim"], 7))
    folder.mkdir()
    torch.save(model.state_dict(), folder / "avg_model.pt")
    config = {
        "model": name,
        "model_args": model_args,
        "dataset_args": {
            "resample_rate": 16000,
            "fbank_args": {
                "num_mel_bins": 80,
                "frame_shift": 10,
                "frame_length": 25,
                "dither": 1.0,
            },
        },
    }
    (folder / "config.yaml").write_text(yaml.safe_dump(config))
    return folder


def _parity(model: torch.nn.Module, bundle) -> list[float]:
    """Cosines between WeSpeaker's embeddings (its model on its features) and the bundle's (our
    features and encoder, from the waveform), over the shared utterances."""
    cosines = []
    for utterance in peers.UTTERANCES:
        wav = peers.speech(utterance)
        with torch.no_grad():
            expected = model(peers.kaldi_fbank(wav))[-1][0]
        emb = bundle.embed_batch(torch.from_numpy(wav)[None])[0]
        cosines.append(peers.cosine(emb, expected))
    return cosines


@pytest.mark.parametrize(
    ("model_name", "module", "model_args", "num_params"),
    [
        # WeSpeaker's VoxCeleb tables: ECAPA_TDNN_GLOB_c1024-ASTP-emb192 14.65M,
        # ResNet34-TSTP-emb256 6.63M.
        (
            "ECAPA_TDNN_GLOB_c1024",
            "ecapa_tdnn",
            {"feat_dim": 80, "embed_dim": 192, "pooling_func": "ASTP"},
            14_657_088,
        ),
        (
            "ResNet34",
            "resnet",
            {"feat_dim": 80, "embed_dim": 256, "pooling_func": "TSTP", "two_emb_layer": False},
            6_634_336,
        ),
    ],
)
def test_full_size_wespeaker_model(tmp_path, model_name, module, model_args, num_params):
    torch.manual_seed(0)
    model = getattr(peers.wespeaker_module(module), model_name)(**model_args).eval()
    assert sum(p.numel() for p in model.parameters()) == num_params
    peers.perturb_batchnorm(model, seed=1)
    folder = _save_wespeaker(tmp_path / "peer", model, model_name, model_args)
    assert recognise(folder)[0] == "wespeaker"
    bundle = load_bundle(convert("wespeaker", folder / "avg_model.pt", tmp_path / "bundle"))
    assert sum(p.numel() for p in bundle.encoder.parameters()) == num_params
    cosines = _parity(model, bundle)
    print(f"\n{model_name} ({num_params} parameters): min cosine {min(cosines):.9f}")
    assert min(cosines) >= 0.9999


# WeSpeaker's deep ResNets at their real depths, narrow (m_channels 8 instead of 32) for speed.
DEEP_RESNETS = {
    "ResNet152": [3, 8, 36, 3],
    "ResNet221": [6, 16, 48, 3],
    "ResNet293": [10, 20, 64, 3],
}


def _narrow_deep_resnet(name: str) -> tuple[torch.nn.Module, dict]:
    resnet = peers.wespeaker_module("resnet")
    model_args = {"feat_dim": 80, "embed_dim": 64, "pooling_func": "TSTP", "two_emb_layer": False}
    torch.manual_seed(0)
    model = resnet.ResNet(resnet.Bottleneck, DEEP_RESNETS[name], m_channels=8, **model_args)
    peers.perturb_batchnorm(model.eval(), seed=2)
    return model, model_args


@pytest.mark.parametrize("name", sorted(DEEP_RESNETS))
def test_deep_resnet_gives_wespeakers_embeddings(tmp_path, name):
    model, model_args = _narrow_deep_resnet(name)
    folder = _save_wespeaker(tmp_path / "peer", model, name, model_args)
    source, checkpoint, config = recognise(folder)
    bundle = load_bundle(convert(source, checkpoint, tmp_path / "bundle", config=config))
    assert bundle.encoder.hparams["block"] == "bottleneck"
    assert bundle.encoder.hparams["blocks"] == DEEP_RESNETS[name]
    peer_count = sum(p.numel() for p in model.parameters()) - model.projection.weight.numel()
    assert sum(p.numel() for p in bundle.encoder.parameters()) == peer_count
    cosines = _parity(model, bundle)
    print(f"\n{name} (m_channels 8): min cosine {min(cosines):.9f}")
    assert min(cosines) >= 0.9999


def test_a_wrong_deep_resnet_conversion_fails_the_bound(tmp_path):
    """The parity bound catches a conversion that forgets one BN deep in the network."""
    model, model_args = _narrow_deep_resnet("ResNet152")
    folder = _save_wespeaker(tmp_path / "peer", model, "ResNet152", model_args)
    bundle = load_bundle(convert("wespeaker", folder / "avg_model.pt", tmp_path / "bundle"))
    bundle.encoder.stages[2][20].conv3.norm.reset_running_stats()
    assert min(_parity(model, bundle)) < 0.9999


@pytest.mark.parametrize(
    ("name", "factory", "published_millions"),
    # examples/voxceleb/v2/README.md of wenet-e2e/wespeaker: ResNet221-TSTP-emb256 23.79M,
    # ResNet293-TSTP-emb256 28.62M (truncated, as its 14.65M for 14,657,088).
    [
        ("ResNet152", "resnet152", None),
        ("ResNet221", "resnet221", 23.79),
        ("ResNet293", "resnet293", 28.62),
    ],
)
def test_full_size_deep_resnet_matches_wespeakers_parameters(name, factory, published_millions):
    resnet = peers.wespeaker_module("resnet")
    with torch.device("meta"):
        peer = getattr(resnet, name)(feat_dim=80, embed_dim=256)
        ours = create_model(factory)
    peer_count = sum(p.numel() for p in peer.parameters())
    assert count_parameters(ours) == peer_count
    assert sorted(v.shape for v in ours.state_dict().values()) == sorted(
        v.shape for v in peer.state_dict().values()
    )
    if published_millions is not None:
        assert int(peer_count / 1e4) / 100 == published_millions


def test_unbiased_std_layout_is_torch_var_and_ignores_padding():
    from speakerprint.models import create_model, script_encoder
    from speakerprint.models.utils import masked_mean_std

    x = torch.randn(2, 6, 9)
    mask = torch.ones(2, 1, 9, dtype=torch.bool)
    _, std = masked_mean_std(x, mask, 1e-7, True)
    torch.testing.assert_close(std, torch.sqrt(torch.var(x, dim=-1) + 1e-7))

    model = create_model("resnet", base_channels=4, blocks=[1, 1], embed_dim=8, unbiased_std=True)
    model.eval()
    feats = torch.randn(2, 40, 80)
    alone = model(feats[:1, :23])
    padded = model(feats, torch.tensor([23, 40]))
    torch.testing.assert_close(padded[:1], alone, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(script_encoder(model)(feats, torch.tensor([23, 40])), padded)
