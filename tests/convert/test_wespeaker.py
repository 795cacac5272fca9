"""WeSpeaker checkpoints (``avg_model.pt`` + ``config.yaml``) converted to bundles.

The fixtures in tests/fixtures/peers/wespeaker were written by scripts/peer_fixtures/wespeaker.py
with WeSpeaker's own model code (see the README there); the CI tests need no peer package. The
full-size tests at the end build WeSpeaker's public architectures and run only where
``wespeaker-unofficial`` and ``kaldi-native-fbank`` are installed.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import json
import shutil
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
import yaml
from typer.testing import CliRunner

from speakerprint.cli.main import app
from speakerprint.convert import convert
from speakerprint.errors import BundleError
from speakerprint.inference.encoder import SpeakerEncoder
from speakerprint.models.bundle import load_bundle

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


# --- full-size public architectures, built with WeSpeaker's code (local only) -------------------


def _wespeaker_models(module: str) -> types.ModuleType:
    """``wespeaker.models.<module>`` without the package __init__ (which imports torchaudio)."""
    if "wespeaker" not in sys.modules:
        spec = importlib.util.find_spec("wespeaker")
        package = types.ModuleType("wespeaker")
        package.__path__ = list(spec.submodule_search_locations)
        sys.modules["wespeaker"] = package
    return importlib.import_module(f"wespeaker.models.{module}")


_PEER_MISSING = [
    package
    for package in ("wespeaker", "kaldi_native_fbank")
    if importlib.util.find_spec(package) is None
]


def _wespeaker_features(samples: np.ndarray) -> torch.Tensor:
    """WeSpeaker's test-time features (torchaudio's kaldi.fbank, as kaldi-native-fbank) + CMN."""
    import kaldi_native_fbank as knf

    opts = knf.FbankOptions()
    opts.frame_opts.samp_freq = 16000
    opts.frame_opts.dither = 0.0
    opts.frame_opts.window_type = "hamming"
    opts.mel_opts.num_bins = 80
    opts.energy_floor = 0.0
    opts.use_energy = False
    online = knf.OnlineFbank(opts)
    online.accept_waveform(16000, (samples * 32768).tolist())
    online.input_finished()
    feats = torch.tensor(np.stack([online.get_frame(i) for i in range(online.num_frames_ready)]))
    return (feats - feats.mean(dim=0)).unsqueeze(0)


@pytest.mark.skipif(
    bool(_PEER_MISSING), reason=f"peer packages not installed: {', '.join(_PEER_MISSING)}"
)
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
def test_full_size_wespeaker_model(tmp_path, demo_root, model_name, module, model_args, num_params):
    torch.manual_seed(0)
    model = getattr(_wespeaker_models(module), model_name)(**model_args).eval()
    assert sum(p.numel() for p in model.parameters()) == num_params
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for bn in model.modules():
            if isinstance(bn, torch.nn.modules.batchnorm._BatchNorm):
                n = bn.num_features
                bn.running_mean.copy_(0.2 * torch.randn(n, generator=generator))
                bn.running_var.copy_(0.5 + torch.rand(n, generator=generator))
                bn.weight.copy_(1.0 + 0.2 * torch.randn(n, generator=generator))
                bn.bias.copy_(0.1 * torch.randn(n, generator=generator))
    projections = _wespeaker_models("projections")
    model.add_module("projection", projections.ArcMarginProduct(model_args["embed_dim"], 7))
    folder = tmp_path / "peer"
    folder.mkdir()
    torch.save(model.state_dict(), folder / "avg_model.pt")
    config = {
        "model": model_name,
        "model_args": model_args,
        "dataset_args": {"fbank_args": {"num_mel_bins": 80, "frame_shift": 10, "frame_length": 25}},
    }
    (folder / "config.yaml").write_text(yaml.safe_dump(config))

    from speakerprint.audio import load_audio

    clip = demo_root / "SPEAKER0036"
    wav = load_audio(sorted(clip.glob("*.opus"))[0], 16000, duration_s=4.0)
    wav = np.round(wav * 32767).astype(np.float32) / 32768  # the int16 samples a wav would hold
    with torch.no_grad():
        expected = model(_wespeaker_features(wav))[-1][0].numpy()

    bundle = load_bundle(convert("wespeaker", folder / "avg_model.pt", tmp_path / "bundle"))
    assert sum(p.numel() for p in bundle.encoder.parameters()) == num_params
    emb = bundle.embed_batch(torch.from_numpy(wav)[None])[0].numpy()
    print(f"\nWeSpeaker full size ({num_params} parameters): cosine {_cosine(emb, expected):.7f}")
    assert _cosine(emb, expected) >= 0.9999


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
