"""3D-Speaker's CAM++ (ModelScope folders: configuration.json + .bin) converted to bundles.

The reference is 3D-Speaker's own ``CAMPPlus`` (speakerlab-slim, requirements-peers.txt) with
random weights and perturbed BatchNorm statistics, saved as ModelScope publishes it; its features
are torchaudio's ``kaldi.fbank`` as 3D-Speaker calls it (waveform in [-1, 1], povey, dither 0) then
the utterance mean subtracted, reproduced with kaldi-native-fbank. Embeddings of real speech must
agree to a cosine of 0.9999, at a narrow width and at the published 192-d size.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import kaldi_native_fbank as knf
import numpy as np
import pytest
import torch
from speakerlab.models.campplus.DTDNN import CAMPPlus
from typer.testing import CliRunner

from speakerprint.audio import load_audio
from speakerprint.cli.main import app
from speakerprint.convert import convert, recognise
from speakerprint.errors import BundleError
from speakerprint.models import count_parameters
from speakerprint.models.bundle import load_bundle

WEIGHTS = "campplus_cn_common.bin"
# 2.6 to 3.4 s: 128 to 171 frames after the TDNN's stride, so two 100-frame CAM segments each,
# the second cut short (where 3D-Speaker's ceil_mode pooling averages fewer frames).
UTTERANCES = ["000010011", "000010035", "000010053", "000010063"]
# 3D-Speaker's VoxCeleb table gives CAM++ 7.18M parameters (512-d); at 192-d the same class has:
PUBLISHED_192_PARAMETERS = 6_848_544


def _cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(torch.nn.functional.cosine_similarity(a, b, dim=-1))


def _perturb(model: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Non-trivial BatchNorm statistics and affines, so that a dropped or misplaced BN shows."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for bn in model.modules():
            if isinstance(bn, torch.nn.modules.batchnorm._BatchNorm):
                n = bn.num_features
                bn.running_mean.copy_(0.2 * torch.randn(n, generator=generator))
                bn.running_var.copy_(0.5 + torch.rand(n, generator=generator))
                if bn.affine:
                    bn.weight.copy_(1.0 + 0.2 * torch.randn(n, generator=generator))
                    bn.bias.copy_(0.1 * torch.randn(n, generator=generator))
    return model.eval()


def _modelscope_folder(folder: Path, model: torch.nn.Module, emb_size: int) -> Path:
    """``model`` saved as ModelScope ships iic/speech_campplus_sv_zh-cn_16k-common."""
    folder.mkdir(parents=True)
    torch.save(model.state_dict(), folder / WEIGHTS)
    config = {
        "framework": "pytorch",
        "task": "speaker-verification",
        "model": {
            "type": "cam++-sv",
            "model_config": {"sample_rate": 16000, "fbank_dim": 80, "emb_size": emb_size},
            "pretrained_model": WEIGHTS,
        },
        "pipeline": {"type": "speaker-verification"},
    }
    (folder / "configuration.json").write_text(json.dumps(config, indent=4))
    return folder


def _peer_features(wav: torch.Tensor) -> torch.Tensor:
    """3D-Speaker's FBank(80, mean_nor=True): kaldi.fbank on [-1, 1] audio, then CMN -> (1, T, 80)."""
    opts = knf.FbankOptions()
    opts.frame_opts.samp_freq = 16000
    opts.frame_opts.dither = 0.0
    opts.frame_opts.window_type = "povey"
    opts.mel_opts.num_bins = 80
    opts.mel_opts.low_freq = 20.0
    opts.mel_opts.high_freq = 0.0
    opts.use_energy = False
    online = knf.OnlineFbank(opts)
    online.accept_waveform(16000, wav.tolist())  # not scaled to int16, as 3D-Speaker
    online.input_finished()
    feats = torch.tensor(np.stack([online.get_frame(i) for i in range(online.num_frames_ready)]))
    return (feats - feats.mean(dim=0)).unsqueeze(0)


@pytest.fixture(scope="module")
def speech(shared_data: Path) -> list[torch.Tensor]:
    folder = shared_data / "speechocean762" / "train" / "SPEAKER0001"
    return [torch.from_numpy(load_audio(folder / f"{u}.opus", 16000)) for u in UTTERANCES]


@pytest.fixture(scope="module")
def small_peer(tmp_path_factory) -> tuple[CAMPPlus, Path]:
    """3D-Speaker's CAMPPlus at a narrow width (its block depths and head are fixed)."""
    torch.manual_seed(0)
    model = _perturb(
        CAMPPlus(feat_dim=80, embedding_size=32, growth_rate=8, bn_size=2, init_channels=32), 1
    )
    return model, _modelscope_folder(tmp_path_factory.mktemp("peer") / "campplus", model, 32)


@pytest.fixture(scope="module")
def small_bundle_path(small_peer, tmp_path_factory) -> Path:
    _, folder = small_peer
    return convert("speakerlab", folder / WEIGHTS, tmp_path_factory.mktemp("b") / "b")


@pytest.fixture(scope="module")
def small_bundle(small_bundle_path):
    return load_bundle(small_bundle_path)


def test_features_are_3d_speakers(small_bundle, speech):
    config = small_bundle.fbank.config
    assert (config.window, config.waveform_scale, config.dither) == ("povey", 1.0, 0.0)
    assert config.mean_norm and config.num_mel_bins == 80
    for wav in speech:
        ours, _ = small_bundle.fbank(wav[None])
        expected = _peer_features(wav)
        assert ours.shape == expected.shape
        assert (ours - expected).abs().max() < 2e-3


def test_small_width_gives_3d_speakers_embeddings(small_peer, small_bundle, speech):
    model, _ = small_peer
    cosines = []
    for wav in speech:
        with torch.no_grad():
            expected = model(_peer_features(wav))[0]
        cosines.append(_cosine(small_bundle.embed_batch(wav[None])[0], expected))
    print(f"\nCAM++ small width: min cosine {min(cosines):.7f} over {len(cosines)} utterances")
    assert min(cosines) >= 0.9999


def test_padded_batch_gives_each_utterances_embedding(small_peer, small_bundle, speech):
    model, _ = small_peer
    lengths = torch.tensor([len(w) for w in speech])
    batch = torch.zeros(len(speech), int(lengths.max()))
    for i, wav in enumerate(speech):
        batch[i, : len(wav)] = wav
    embs = small_bundle.embed_batch(batch, lengths)
    for wav, emb in zip(speech, embs):
        with torch.no_grad():
            expected = model(_peer_features(wav))[0]
        assert _cosine(emb, expected) >= 0.9999


def test_full_published_size(tmp_path, speech):
    torch.manual_seed(0)
    model = _perturb(CAMPPlus(feat_dim=80, embedding_size=192), 2)
    assert sum(p.numel() for p in model.parameters()) == PUBLISHED_192_PARAMETERS
    folder = _modelscope_folder(
        tmp_path / "iic" / "speech_campplus_sv_zh-cn_16k-common", model, 192
    )
    bundle = load_bundle(convert("speakerlab", folder / WEIGHTS, tmp_path / "bundle"))
    assert count_parameters(bundle.encoder) == PUBLISHED_192_PARAMETERS
    assert bundle.encoder.embed_dim == 192
    wav = speech[-1]
    with torch.no_grad():
        expected = model(_peer_features(wav))[0]
    cosine = _cosine(bundle.embed_batch(wav[None])[0], expected)
    print(f"\nCAM++ 192-d published size: cosine {cosine:.7f}")
    assert cosine >= 0.9999


@pytest.mark.parametrize("mistake", ["reset_bn", "swap_layers"])
def test_a_wrong_conversion_fails_the_bound(small_peer, small_bundle, speech, mistake):
    model, _ = small_peer
    encoder = small_bundle.encoder
    saved = {k: v.clone() for k, v in encoder.state_dict().items()}
    layers = encoder.blocks[1].layers
    try:
        with torch.no_grad():
            if mistake == "reset_bn":
                layers[3].norm_mid.reset_running_stats()
            else:  # two layers of the same shape, exchanged
                first, second = layers[0].cam.local.weight, layers[1].cam.local.weight
                first_copy = first.clone()
                first.copy_(second)
                second.copy_(first_copy)
        wav = speech[-1]
        with torch.no_grad():
            expected = model(_peer_features(wav))[0]
        assert _cosine(small_bundle.embed_batch(wav[None])[0], expected) < 0.9999
    finally:
        encoder.load_state_dict(saved)


def test_bundle_records_its_source(small_peer, small_bundle_path):
    _, folder = small_peer
    config = json.loads((small_bundle_path / "config.json").read_text())
    info = config["info"]
    assert info["source"] == "speakerlab" and info["checkpoint"] == WEIGHTS
    assert info["config"] == "configuration.json" and info["peer_model_type"] == "cam++-sv"
    assert info["peer_model"] == "speakerlab.models.campplus.DTDNN.CAMPPlus"
    digest = hashlib.sha256((folder / WEIGHTS).read_bytes()).hexdigest()
    assert info["checkpoint_sha256"] == digest
    assert config["features"]["waveform_scale"] == 1.0


def test_modelscope_folder_and_bare_bin_are_recognised(small_peer, tmp_path):
    _, folder = small_peer
    assert recognise(folder) == ("speakerlab", folder / WEIGHTS, folder / "configuration.json")
    assert recognise(folder / WEIGHTS) == (
        "speakerlab",
        folder / WEIGHTS,
        folder / "configuration.json",
    )
    bare = tmp_path / "campplus_voxceleb.bin"
    shutil.copy(folder / WEIGHTS, bare)
    assert recognise(tmp_path) == ("speakerlab", bare, None)
    assert recognise(bare) == ("speakerlab", bare, None)


def test_a_bin_of_another_model_is_not_recognised(tmp_path):
    torch.save({"conv1.weight": torch.zeros(4, 1, 3, 3)}, tmp_path / "model.bin")
    with pytest.raises(BundleError, match="speakerlab:"):
        recognise(tmp_path)


def test_bare_bin_converts_without_configuration(small_peer, small_bundle, tmp_path, speech):
    _, folder = small_peer
    shutil.copy(folder / WEIGHTS, tmp_path / WEIGHTS)
    bundle = load_bundle(convert("speakerlab", tmp_path / WEIGHTS, tmp_path / "b"))
    wav = speech[0][None]
    torch.testing.assert_close(bundle.embed_batch(wav), small_bundle.embed_batch(wav))


def test_cli_converts_a_modelscope_bin(small_peer, small_bundle, tmp_path, speech):
    _, folder = small_peer
    out = tmp_path / "bundle"
    result = CliRunner().invoke(
        app, ["convert", "speakerlab", str(folder / WEIGHTS), "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    assert str(out) in result.output
    wav = speech[0][None]
    torch.testing.assert_close(load_bundle(out).embed_batch(wav), small_bundle.embed_batch(wav))


def _peer_copy(small_peer, tmp_path: Path) -> tuple[Path, dict[str, torch.Tensor]]:
    _, folder = small_peer
    copy = tmp_path / "peer"
    shutil.copytree(folder, copy)
    return copy / WEIGHTS, torch.load(copy / WEIGHTS, weights_only=True)


def test_missing_tensor_is_named(small_peer, tmp_path):
    checkpoint, state = _peer_copy(small_peer, tmp_path)
    key = "xvector.block2.tdnnd5.cam_layer.linear2.bias"
    del state[key]
    torch.save(state, checkpoint)
    with pytest.raises(BundleError, match="missing") as err:
        convert("speakerlab", checkpoint, tmp_path / "b")
    assert str(checkpoint) in str(err.value) and key in str(err.value)
    assert not (tmp_path / "b").exists()


def test_unexpected_tensor_is_named(small_peer, tmp_path):
    checkpoint, state = _peer_copy(small_peer, tmp_path)
    state["xvector.out_nonlinear.prelu.weight"] = torch.zeros(1)
    torch.save(state, checkpoint)
    with pytest.raises(BundleError, match="not part of this model") as err:
        convert("speakerlab", checkpoint, tmp_path / "b")
    assert "xvector.out_nonlinear.prelu.weight" in str(err.value)


def test_wrong_shape_is_named(small_peer, tmp_path):
    checkpoint, state = _peer_copy(small_peer, tmp_path)
    key = "xvector.transit2.linear.weight"
    state[key] = state[key][:-1]
    torch.save(state, checkpoint)
    with pytest.raises(BundleError, match="shape") as err:
        convert("speakerlab", checkpoint, tmp_path / "b")
    assert str(checkpoint) in str(err.value) and key in str(err.value)


def test_configuration_that_disagrees_with_the_weights_is_named(small_peer, tmp_path):
    checkpoint, _ = _peer_copy(small_peer, tmp_path)
    path = checkpoint.parent / "configuration.json"
    config = json.loads(path.read_text())
    config["model"]["model_config"]["emb_size"] = 512
    path.write_text(json.dumps(config))
    with pytest.raises(BundleError, match="emb_size is 512") as err:
        convert("speakerlab", checkpoint, tmp_path / "b")
    assert "xvector.dense.linear.weight" in str(err.value)


@pytest.mark.parametrize(
    ("content", "message"),
    [(b"not a checkpoint\n", "not a readable PyTorch checkpoint"), (None, "not a 3D-Speaker")],
)
def test_bad_weights_files(tmp_path, content, message):
    checkpoint = tmp_path / WEIGHTS
    if content is None:  # a state dict, but of a model this converter does not know
        torch.save({"conv1.weight": torch.zeros(4, 1, 3, 3)}, checkpoint)
    else:
        checkpoint.write_bytes(content)
    with pytest.raises(BundleError, match=message) as err:
        convert("speakerlab", checkpoint, tmp_path / "b")
    assert str(checkpoint) in str(err.value)


def test_unreadable_configuration_is_named(small_peer, tmp_path):
    checkpoint, _ = _peer_copy(small_peer, tmp_path)
    (checkpoint.parent / "configuration.json").write_text("{not json")
    result = CliRunner().invoke(
        app, ["convert", "speakerlab", str(checkpoint), "--out", str(tmp_path / "b")]
    )
    assert result.exit_code == 2
    assert "configuration.json" in result.output and "Traceback" not in result.output
