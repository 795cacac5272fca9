"""Parity with SpeechBrain's own code: its Xvector and ECAPA_TDNN, with random weights, saved as
the hub folders ``spkrec-xvect-voxceleb`` / ``spkrec-ecapa-voxceleb`` are laid out, converted, and
compared with SpeechBrain's embeddings of real speech (its Fbank and InputNormalization included).

SpeechBrain (pinned in requirements-peers.txt) imports torchaudio, which has no build for this
torch, in modules these models never call into: ``_speechbrain_classes`` imports the few modules
needed without the package ``__init__``, and executes the three that name torchaudio at import
time (``nnet.CNN``, ``processing.vocal_features``, ``dataio.dataio``) from their installed files
with those top-level statements left out. No torchaudio, real or stand-in, is ever importable.

The peer embedding is what ``EncoderClassifier.encode_batch(wavs)`` computes (speechbrain/inference/
classifiers.py): ``compute_features``, ``mean_var_norm(feats, ones)``, ``embedding_model(feats,
ones)``; its default ``normalize=False`` leaves ``mean_var_norm_emb`` out.
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
import json
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch

from speakerprint.audio import load_audio
from speakerprint.convert import convert, recognise
from speakerprint.errors import BundleError, ConfigError
from speakerprint.features.speechbrain import SpeechBrainFbank, SpeechBrainFbankConfig
from speakerprint.models import count_parameters, create_model
from speakerprint.models.bundle import load_bundle

# Three speakers of speechocean762, 3 s each (the parity bound is per utterance).
UTTERANCES = [
    "train/SPEAKER0001/000010011.opus",
    "train/SPEAKER0005/000050003.opus",
    "train/SPEAKER0026/000260011.opus",
]
SECONDS = 3.0

XVECTOR_YAML = """\
# Small random-init stand-in for speechbrain/spkrec-xvect-voxceleb: the hub file's entries, with
# small widths (published: tdnn_channels [512, 512, 512, 512, 1500], lin_neurons 512).
n_mels: 24
out_n_neurons: 10

compute_features: !new:speechbrain.lobes.features.Fbank
    n_mels: !ref <n_mels>

mean_var_norm: !new:speechbrain.processing.features.InputNormalization
    norm_type: sentence
    std_norm: False

embedding_model: !new:speechbrain.lobes.models.Xvector.Xvector
    in_channels: !ref <n_mels>
    activation: !name:torch.nn.LeakyReLU
    tdnn_blocks: 5
    tdnn_channels: [32, 32, 32, 32, 48]
    tdnn_kernel_sizes: [5, 3, 3, 1, 1]
    tdnn_dilations: [1, 2, 3, 1, 1]
    lin_neurons: 24

classifier: !new:speechbrain.lobes.models.Xvector.Classifier
    input_shape: [null, null, 24]
    activation: !name:torch.nn.LeakyReLU
    lin_blocks: 1
    lin_neurons: 24
    out_neurons: !ref <out_n_neurons>

mean_var_norm_emb: !new:speechbrain.processing.features.InputNormalization
    norm_type: global
    std_norm: False
"""

ECAPA_YAML = """\
# Small random-init stand-in for speechbrain/spkrec-ecapa-voxceleb (published: channels
# [1024, 1024, 1024, 1024, 3072], attention_channels 128, lin_neurons 192).
n_mels: 80

compute_features: !new:speechbrain.lobes.features.Fbank
    n_mels: !ref <n_mels>

mean_var_norm: !new:speechbrain.processing.features.InputNormalization
    norm_type: sentence
    std_norm: False

embedding_model: !new:speechbrain.lobes.models.ECAPA_TDNN.ECAPA_TDNN
    input_size: !ref <n_mels>
    channels: [32, 32, 32, 32, 96]
    kernel_sizes: [5, 3, 3, 3, 1]
    dilations: [1, 2, 3, 4, 1]
    attention_channels: 16
    se_channels: 16
    lin_neurons: 24

mean_var_norm_emb: !new:speechbrain.processing.features.InputNormalization
    norm_type: global
    std_norm: False
"""


# --- SpeechBrain's own classes -----------------------------------------------------------------

_PACKAGES = ["", "nnet", "utils", "processing", "lobes", "lobes.models", "dataio"]
_IMPORT_TIME_TORCHAUDIO = ["nnet.CNN", "processing.vocal_features", "dataio.dataio"]


def _exec_without_torchaudio(name: str, root: Path) -> None:
    """Run ``speechbrain.<name>`` from its installed file, minus its top-level statements that
    import or call torchaudio (none of the classes used here touches them)."""
    path = root.joinpath(*name.split(".")).with_suffix(".py")
    tree = ast.parse(path.read_text(encoding="utf-8"))
    tree.body = [
        node
        for node in tree.body
        if not (
            isinstance(node, (ast.Import, ast.ImportFrom, ast.Expr))
            and "torchaudio" in ast.unparse(node)
        )
    ]
    full = f"speechbrain.{name}"
    module = importlib.util.module_from_spec(importlib.util.spec_from_file_location(full, path))
    sys.modules[full] = module
    parent, _, child = full.rpartition(".")
    setattr(sys.modules[parent], child, module)
    exec(compile(tree, str(path), "exec"), module.__dict__)  # noqa: S102


@pytest.fixture(scope="module")
def sb() -> types.SimpleNamespace:
    """SpeechBrain's Xvector, Classifier, ECAPA_TDNN, Fbank and InputNormalization.

    Its modules are dropped from sys.modules afterwards: left there, lazy modules of speechbrain
    made hypothesis (which scans sys.modules for constants) fail later tests.
    """
    root = Path(importlib.util.find_spec("speechbrain").submodule_search_locations[0])
    for package in _PACKAGES:  # the package skeleton, without running any __init__
        full = "speechbrain" + (f".{package}" if package else "")
        module = types.ModuleType(full)
        module.__path__ = [str(root.joinpath(*package.split(".")) if package else root)]
        sys.modules[full] = module
        if package:
            parent, _, child = full.rpartition(".")
            setattr(sys.modules[parent], child, module)
    for name in _IMPORT_TIME_TORCHAUDIO:
        _exec_without_torchaudio(name, root)
    # Xvector.Classifier reaches these through the package attributes an __init__ would set.
    for name in ["containers", "linear", "normalization", "activations"]:
        importlib.import_module(f"speechbrain.nnet.{name}")
    xvector = importlib.import_module("speechbrain.lobes.models.Xvector")
    ecapa = importlib.import_module("speechbrain.lobes.models.ECAPA_TDNN")
    features = importlib.import_module("speechbrain.lobes.features")
    processing = importlib.import_module("speechbrain.processing.features")
    assert "torchaudio" not in sys.modules
    yield types.SimpleNamespace(
        Xvector=xvector.Xvector,
        Classifier=xvector.Classifier,
        ECAPA_TDNN=ecapa.ECAPA_TDNN,
        Fbank=features.Fbank,
        InputNormalization=processing.InputNormalization,
    )
    for name in [n for n in sys.modules if n == "speechbrain" or n.startswith("speechbrain.")]:
        del sys.modules[name]


@pytest.fixture(scope="module")
def speech(shared_data) -> list[np.ndarray]:
    return [
        load_audio(shared_data / "speechocean762" / u, 16000)[: int(SECONDS * 16000)]
        for u in UTTERANCES
    ]


def _perturb_batch_norms(model: torch.nn.Module, seed: int) -> None:
    """Random BN statistics and affine parameters, so a forgotten or misplaced BN shows."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm1d):
                n = module.num_features
                module.running_mean.copy_(0.2 * torch.randn(n, generator=generator))
                module.running_var.copy_(torch.empty(n).uniform_(0.5, 2.0, generator=generator))
                module.weight.copy_(1.0 + 0.3 * torch.randn(n, generator=generator))
                module.bias.copy_(0.2 * torch.randn(n, generator=generator))


def _peer_embedding(sb, model: torch.nn.Module, n_mels: int, wav: np.ndarray) -> np.ndarray:
    """``EncoderClassifier.encode_batch(wav)`` for this model (normalize=False, its default)."""
    wavs = torch.from_numpy(wav)[None]
    ones = torch.ones(1)
    with torch.no_grad():
        feats = sb.Fbank(n_mels=n_mels)(wavs)
        feats = sb.InputNormalization(norm_type="sentence", std_norm=False).eval()(feats, ones)
        return model.eval()(feats, ones)[0, 0].numpy()


def _save_embedding_norm(sb, path: Path, embed_dim: int, seed: int) -> None:
    """mean_var_norm_emb.ckpt as SpeechBrain writes it: a global InputNormalization that has seen
    training embeddings, saved by its own checkpoint hook."""
    norm = sb.InputNormalization(norm_type="global", std_norm=False).train()
    generator = torch.Generator().manual_seed(seed)
    for _ in range(3):
        norm(torch.randn(8, 1, embed_dim, generator=generator), torch.ones(8))
    norm._save(path)


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


@pytest.fixture(scope="module")
def xvector_hub(sb, tmp_path_factory) -> tuple[Path, torch.nn.Module]:
    """A spkrec-xvect-voxceleb folder with a small random Xvector, written by SpeechBrain."""
    torch.manual_seed(0)
    model = sb.Xvector(
        in_channels=24,
        activation=torch.nn.LeakyReLU,
        tdnn_channels=[32, 32, 32, 32, 48],
        lin_neurons=24,
    )
    _perturb_batch_norms(model, seed=1)
    folder = tmp_path_factory.mktemp("hub") / "spkrec-xvect-voxceleb"
    folder.mkdir()
    torch.save(model.state_dict(), folder / "embedding_model.ckpt")
    (folder / "hyperparams.yaml").write_text(XVECTOR_YAML)
    _save_embedding_norm(sb, folder / "mean_var_norm_emb.ckpt", 24, seed=2)
    classifier = sb.Classifier(input_shape=[None, None, 24], lin_neurons=24, out_neurons=10)
    torch.save(classifier.state_dict(), folder / "classifier.ckpt")
    (folder / "label_encoder.txt").write_text("'id10001' => 0\n'id10002' => 1\n")
    return folder, model.eval()


@pytest.fixture(scope="module")
def ecapa_hub(sb, tmp_path_factory) -> tuple[Path, torch.nn.Module]:
    """A spkrec-ecapa-voxceleb folder with a small random ECAPA_TDNN, written by SpeechBrain."""
    torch.manual_seed(0)
    model = sb.ECAPA_TDNN(
        80,
        channels=[32, 32, 32, 32, 96],
        dilations=[1, 2, 3, 4, 1],
        attention_channels=16,
        se_channels=16,
        lin_neurons=24,
    )
    _perturb_batch_norms(model, seed=3)
    folder = tmp_path_factory.mktemp("hub") / "spkrec-ecapa-voxceleb"
    folder.mkdir()
    torch.save(model.state_dict(), folder / "embedding_model.ckpt")
    (folder / "hyperparams.yaml").write_text(ECAPA_YAML)
    _save_embedding_norm(sb, folder / "mean_var_norm_emb.ckpt", 24, seed=4)
    return folder, model.eval()


# --- parity ------------------------------------------------------------------------------------


@pytest.mark.parametrize("hub, n_mels", [("xvector_hub", 24), ("ecapa_hub", 80)])
def test_embeddings_equal_speechbrains(sb, speech, hub, n_mels, request, tmp_path):
    folder, model = request.getfixturevalue(hub)
    source, checkpoint, config = recognise(folder)
    assert (source, checkpoint.name, config.name) == (
        "speechbrain",
        "embedding_model.ckpt",
        "hyperparams.yaml",
    )
    bundle = load_bundle(convert(source, checkpoint, tmp_path / "bundle", config=config))
    cosines = []
    for wav in speech:
        reference = _peer_embedding(sb, model, n_mels, wav)
        ours = bundle.embed_batch(torch.from_numpy(wav)[None])[0].numpy()
        cosines.append(_cosine(ours, reference))
        np.testing.assert_allclose(ours, reference, atol=2e-3 * np.abs(reference).max())
    print(f"\n{hub}: min cosine to SpeechBrain over {len(speech)} utterances {min(cosines):.7f}")
    assert min(cosines) >= 0.9999
    references = [_peer_embedding(sb, model, n_mels, wav) for wav in speech[:2]]
    assert _cosine(*references) < 0.999  # the embedding depends on the speech


@pytest.mark.parametrize("n_mels", [24, 80])
def test_features_equal_speechbrains(sb, speech, n_mels):
    ours_fbank = SpeechBrainFbank(SpeechBrainFbankConfig(num_mel_bins=n_mels))
    norm = sb.InputNormalization(norm_type="sentence", std_norm=False).eval()
    for wav in speech:
        wavs = torch.from_numpy(wav)[None]
        with torch.no_grad():
            reference = norm(sb.Fbank(n_mels=n_mels)(wavs), torch.ones(1))
        ours, frames = ours_fbank(wavs)
        assert frames.tolist() == [reference.shape[1]]
        torch.testing.assert_close(ours, reference, atol=1e-3, rtol=0)


def test_xvector_bundle_describes_the_peer(xvector_hub, tmp_path):
    folder, _ = xvector_hub
    bundle = convert("speechbrain", folder / "embedding_model.ckpt", tmp_path / "b")
    config = json.loads((bundle / "config.json").read_text())
    assert config["model"]["family"] == "xvector"
    assert config["model"]["args"] == {
        "feat_dim": 24,
        "channels": 32,
        "stats_channels": 48,
        "embed_dim": 24,
        "negative_slope": 0.01,
        "padding_mode": "reflect",
        "pooling_std": "unbiased",
    }
    assert config["features"]["kind"] == "speechbrain"
    assert config["features"]["num_mel_bins"] == 24
    info = config["info"]
    assert info["peer_model"]["class"] == "speechbrain.lobes.models.Xvector.Xvector"
    assert info["peer_model"]["args"]["tdnn_dilations"] == [1, 2, 3, 1, 1]
    norm = info["embedding_normalization"]
    assert (norm["file"], norm["applied"], norm["count"]) == ("mean_var_norm_emb.ckpt", False, 24)


def test_without_hyperparams_the_public_xvector_settings_are_assumed(sb, speech, xvector_hub):
    folder, model = xvector_hub
    alone = folder.parent / "alone"
    alone.mkdir()
    (alone / "embedding_model.ckpt").write_bytes((folder / "embedding_model.ckpt").read_bytes())
    bundle = load_bundle(convert("speechbrain", alone / "embedding_model.ckpt", alone / "b"))
    assert (
        json.loads((alone / "b" / "config.json").read_text())["info"]["embedding_normalization"]
        is None
    )
    reference = _peer_embedding(sb, model, 24, speech[0])
    ours = bundle.embed_batch(torch.from_numpy(speech[0])[None])[0].numpy()
    assert _cosine(ours, reference) >= 0.9999


def test_a_wrong_conversion_fails_the_bound(sb, speech, xvector_hub, tmp_path):
    """The parity bound catches a lost BatchNorm and two layers' BatchNorms swapped. (ReLU for
    LeakyReLU moves these random-weight embeddings by less than the bound, cosine ~0.99997, so
    the slope is held by test_xvector_bundle_describes_the_peer instead.)"""
    folder, model = xvector_hub
    bundle_path = convert("speechbrain", folder / "embedding_model.ckpt", tmp_path / "b")
    wav = torch.from_numpy(speech[0])[None]
    reference = _peer_embedding(sb, model, 24, speech[0])
    lost_norm = load_bundle(bundle_path)
    lost_norm.encoder.frame_layers[2].norm.reset_parameters()
    swapped = load_bundle(bundle_path)
    layers = swapped.encoder.frame_layers
    layers[1].norm, layers[2].norm = layers[2].norm, layers[1].norm
    for wrong in [lost_norm, swapped]:
        assert _cosine(wrong.embed_batch(wav)[0].numpy(), reference) < 0.9999


def test_padding_changes_no_xvector_row(xvector_hub, speech, tmp_path):
    folder, _ = xvector_hub
    bundle = load_bundle(convert("speechbrain", folder / "embedding_model.ckpt", tmp_path / "b"))
    wav = torch.from_numpy(speech[0])
    lengths = torch.tensor([wav.numel(), 24000, 8001])
    batch = torch.empty(3, wav.numel()).uniform_(-0.5, 0.5)  # padding that is not silence
    for row, n in enumerate(lengths.tolist()):
        batch[row, :n] = wav[:n]
    embs = bundle.embed_batch(batch, lengths)
    for row, n in enumerate(lengths.tolist()):
        alone = bundle.embed_batch(wav[:n][None])[0]
        torch.testing.assert_close(embs[row], alone, atol=1e-4, rtol=1e-4)


# --- what the converter refuses ----------------------------------------------------------------


def test_embedding_norm_of_another_size_is_named(xvector_hub, tmp_path):
    folder, _ = xvector_hub
    other = tmp_path / "hub"
    other.mkdir()
    for name in ["embedding_model.ckpt", "hyperparams.yaml"]:
        (other / name).write_bytes((folder / name).read_bytes())
    torch.save(
        {"count": 3, "glob_mean": torch.zeros(512), "glob_std": torch.ones(512)},
        other / "mean_var_norm_emb.ckpt",
    )
    with pytest.raises(BundleError, match="glob_mean") as excinfo:
        convert("speechbrain", other / "embedding_model.ckpt", tmp_path / "b")
    assert "mean_var_norm_emb.ckpt" in str(excinfo.value)
    assert not (tmp_path / "b").exists()


def test_xvector_hyperparams_that_disagree_or_ask_too_much(xvector_hub, tmp_path):
    folder, _ = xvector_hub
    checkpoint = folder / "embedding_model.ckpt"
    yaml_path = tmp_path / "hyperparams.yaml"
    for old, new, match in [
        ("lin_neurons: 24\n\nclassifier", "lin_neurons: 512\n\nclassifier", "lin_neurons: 512"),
        ("[1, 2, 3, 1, 1]", "[1, 2, 2, 1, 1]", "dilations"),
        (
            "activation: !name:torch.nn.LeakyReLU\n    tdnn",
            "activation: !name:torch.nn.GELU\n    tdnn",
            "GELU",
        ),
        ("std_norm: False\n\nembedding", "std_norm: True\n\nembedding", "std_norm"),
    ]:
        assert old in XVECTOR_YAML
        yaml_path.write_text(XVECTOR_YAML.replace(old, new))
        error = BundleError if match == "dilations" else ConfigError
        with pytest.raises(error, match=match):
            convert("speechbrain", checkpoint, tmp_path / "b", config=yaml_path)


def test_damaged_xvector_checkpoint_names_the_key(xvector_hub, tmp_path):
    folder, _ = xvector_hub
    state = torch.load(folder / "embedding_model.ckpt", weights_only=True)
    del state["blocks.8.norm.running_var"]
    state["blocks.16.w.offset"] = torch.zeros(3)
    checkpoint = tmp_path / "embedding_model.ckpt"
    torch.save(state, checkpoint)
    with pytest.raises(BundleError) as excinfo:
        convert("speechbrain", checkpoint, tmp_path / "b")
    message = str(excinfo.value)
    assert str(checkpoint) in message
    assert "blocks.8.norm.running_var" in message and "blocks.16.w.offset" in message


def test_neither_model_is_named(tmp_path):
    checkpoint = tmp_path / "embedding_model.ckpt"
    torch.save({"encoder.weight": torch.zeros(2, 2)}, checkpoint)
    with pytest.raises(BundleError, match="neither SpeechBrain's ECAPA_TDNN"):
        convert("speechbrain", checkpoint, tmp_path / "b")


# --- the published sizes -----------------------------------------------------------------------


def test_full_size_models_have_speechbrains_parameter_counts(sb):
    """spkrec-xvect-voxceleb and spkrec-ecapa-voxceleb at full size, built by SpeechBrain and by
    speakerprint with the converter's layout, on the meta device."""
    with torch.device("meta"):
        xvector = sb.Xvector(in_channels=24, activation=torch.nn.LeakyReLU)
        ecapa = sb.ECAPA_TDNN(
            80,
            channels=[1024, 1024, 1024, 1024, 3072],
            dilations=[1, 2, 3, 4, 1],
            attention_channels=128,
            lin_neurons=192,
        )
        ours_xvector = create_model("xvector_speechbrain")
        ours_ecapa = create_model(
            "ecapa_tdnn",
            channels=1024,
            mfa_channels=3072,
            mfa_norm=True,
            attention_norm=True,
            embedding_norm=False,
            padding_mode="reflect",
        )
    assert count_parameters(xvector) == count_parameters(ours_xvector) == 4_211_604
    assert count_parameters(ecapa) == count_parameters(ours_ecapa) == 20_767_552
