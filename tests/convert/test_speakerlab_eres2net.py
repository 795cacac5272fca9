"""3D-Speaker's ERes2Net and ERes2NetV2 (ModelScope folders) converted to bundles.

The peer is 3D-Speaker's own model code (``speakerlab-slim``, requirements-peers.txt), built at a
small width with random weights and perturbed BatchNorm statistics, saved as ModelScope publishes
it (``configuration.json`` and a bare state dict), converted, and compared on real speech with the
peer's features (torchaudio's ``kaldi.fbank`` on the [-1, 1] waveform, povey window, dither 0, then
the utterance mean subtracted; reproduced here with kaldi-native-fbank).
"""

from __future__ import annotations

import json
from pathlib import Path

import kaldi_native_fbank as knf
import numpy as np
import pytest
import torch
from speakerlab.models.eres2net.ERes2Net import ERes2Net as PeerERes2Net
from speakerlab.models.eres2net.ERes2Net_huge import ERes2Net as PeerERes2NetHuge
from speakerlab.models.eres2net.ERes2NetV2 import ERes2NetV2 as PeerERes2NetV2

from speakerprint.audio import load_audio
from speakerprint.convert import _eres2net
from speakerprint.convert._checkpoint import read_state_dict
from speakerprint.errors import BundleError
from speakerprint.features import FbankConfig
from speakerprint.models import count_parameters, create_model
from speakerprint.models.bundle import load_bundle, save_bundle

UTTERANCES = ["SPEAKER0001/000010011.opus", "SPEAKER0005", "SPEAKER0006"]


def _convert(checkpoint: Path, out: Path) -> Path:
    """Checkpoint of a ModelScope folder -> bundle. Stands in for ``convert("speakerlab", ...)``."""
    config = json.loads((checkpoint.parent / "configuration.json").read_text())
    state = read_state_dict(checkpoint, f"3D-Speaker checkpoint {checkpoint}")
    encoder, _, peer_model = _eres2net.build(checkpoint, state, config["model"]["model_config"])
    features = FbankConfig(window="povey", waveform_scale=1.0, dither=0.0, mean_norm=True)
    return save_bundle(
        out, encoder, features, info={"source": "speakerlab", "peer_model": peer_model}
    )


# Small widths of each published layout; ``model_config`` as in the ModelScope folders.
PEERS = {
    "eres2net": (
        PeerERes2Net,
        {"m_channels": 8, "num_blocks": [2, 1, 2, 1], "embedding_size": 32},
        "pretrained_eres2net.ckpt",
        {"channels": 8, "embed_dim": 32},
    ),
    "eres2net_huge": (
        PeerERes2NetHuge,
        {"m_channels": 8, "num_blocks": [1, 1, 2, 1], "embedding_size": 32},
        "pretrained_eres2net_aug.ckpt",
        {"embed_dim": 32},
    ),
    "eres2netv2": (
        PeerERes2NetV2,
        {"m_channels": 8, "num_blocks": [2, 1, 2, 1], "embedding_size": 32, "baseWidth": 26},
        "pretrained_eres2netv2.ckpt",
        {"embed_dim": 32, "baseWidth": 26, "scale": 2, "expansion": 2},
    ),
}


def _peer(name: str) -> torch.nn.Module:
    """The peer model of ``PEERS[name]``: random weights, non-trivial BatchNorm, eval mode."""
    cls, args, _, _ = PEERS[name]
    torch.manual_seed(0)
    model = cls(feat_dim=80, **args)
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                shape = module.running_mean.shape
                module.running_mean.copy_(0.1 * torch.randn(shape, generator=generator))
                module.running_var.copy_(0.5 + torch.rand(shape, generator=generator))
                module.weight.copy_(1 + 0.2 * torch.randn(shape, generator=generator))
                module.bias.copy_(0.1 * torch.randn(shape, generator=generator))
    return model.eval()


def _modelscope_folder(tmp_path: Path, name: str, model: torch.nn.Module) -> Path:
    """The model saved as ModelScope ships it; returns the checkpoint."""
    _, _, file_name, model_config = PEERS[name]
    folder = tmp_path / name
    folder.mkdir()
    config = {
        "framework": "pytorch",
        "task": "speaker-verification",
        "model": {
            "type": f"{name}-sv",
            "model_config": {"sample_rate": 16000, "fbank_dim": 80, **model_config},
            "pretrained_model": file_name,
        },
        "pipeline": {"type": "speaker-verification"},
    }
    (folder / "configuration.json").write_text(json.dumps(config))
    torch.save(model.state_dict(), folder / file_name)
    return folder / file_name


def _peer_features(wav: np.ndarray) -> torch.Tensor:
    """3D-Speaker's FBank(80, mean_nor=True): kaldi.fbank defaults on the [-1, 1] waveform."""
    opts = knf.FbankOptions()
    opts.frame_opts.samp_freq = 16000
    opts.frame_opts.dither = 0.0
    opts.frame_opts.window_type = "povey"
    opts.mel_opts.num_bins = 80
    online = knf.OnlineFbank(opts)
    online.accept_waveform(16000, wav.tolist())
    online.input_finished()
    feats = torch.tensor(np.stack([online.get_frame(i) for i in range(online.num_frames_ready)]))
    return (feats - feats.mean(dim=0)).unsqueeze(0)  # (1, T, 80)


@pytest.fixture(scope="module")
def speech(shared_data) -> list[np.ndarray]:
    """Three utterances of three speakers, 16 kHz, in [-1, 1]."""
    root = shared_data / "speechocean762" / "train"
    paths = [root / UTTERANCES[0]]
    paths += [sorted((root / speaker).glob("*.opus"))[0] for speaker in UTTERANCES[1:]]
    return [np.asarray(load_audio(path, 16000), dtype=np.float32) for path in paths]


def _cosines(bundle_path: Path, peer: torch.nn.Module, speech: list[np.ndarray]) -> list[float]:
    """Cosine of each utterance's embedding from the bundle (as one padded batch) and the peer."""
    bundle = load_bundle(bundle_path)
    lengths = torch.tensor([len(wav) for wav in speech])
    batch = torch.zeros(len(speech), int(lengths.max()))
    for i, wav in enumerate(speech):
        batch[i, : len(wav)] = torch.from_numpy(wav)
    with torch.no_grad():
        ours = bundle.embed_batch(batch, lengths)
        theirs = torch.cat([peer(_peer_features(wav)) for wav in speech])
    return torch.nn.functional.cosine_similarity(ours, theirs).tolist()


@pytest.mark.parametrize("name", sorted(PEERS))
def test_converted_model_gives_the_peers_embeddings(tmp_path, speech, name):
    peer = _peer(name)
    bundle = _convert(_modelscope_folder(tmp_path, name, peer), tmp_path / "bundle")
    assert min(_cosines(bundle, peer, speech)) >= 0.9999
    config = json.loads((bundle / "config.json").read_text())
    assert config["model"]["family"] == "eres2net"
    assert config["model"]["args"]["global_fusion_from"] == (3 if name == "eres2netv2" else 1)
    features = config["features"]
    assert features["window"] == "povey" and features["waveform_scale"] == 1.0


@pytest.mark.parametrize(
    "damage",
    ["swap_groups", "drop_fusion_norm"],
)
def test_a_wrong_conversion_fails_the_bound(tmp_path, speech, damage):
    """Parity is sensitive: two swapped same-shape convs, or a fusion BN left at its defaults,
    move the embeddings well below the bound."""
    peer = _peer("eres2netv2")
    checkpoint = _modelscope_folder(tmp_path, "eres2netv2", peer)
    state = torch.load(checkpoint, weights_only=True)
    if damage == "swap_groups":
        a, b = "layer2.0.convs.0.weight", "layer2.0.convs.1.weight"
        state[a], state[b] = state[b], state[a]
    else:
        for key in ("running_mean", "running_var"):
            fresh = torch.zeros_like if key == "running_mean" else torch.ones_like
            state[f"fuse34.local_att.4.{key}"] = fresh(state[f"fuse34.local_att.4.{key}"])
    torch.save(state, checkpoint)
    bundle = _convert(checkpoint, tmp_path / "bundle")
    assert min(_cosines(bundle, peer, speech)) < 0.999


@pytest.mark.parametrize(
    ("name", "args", "ours", "published_millions"),
    [
        # 3D-Speaker's READMEs (egs/voxceleb/sv-eres2net): ERes2Net-base 6.61M, ERes2NetV2 17.8M.
        ("eres2net", {}, "eres2net_base", 6.61),
        ("eres2netv2", {"baseWidth": 26, "scale": 2, "expansion": 2}, "eres2netv2", 17.86),
        ("eres2net_huge", {}, "eres2net_huge", None),
    ],
)
def test_published_sizes_convert_to_the_registered_variants(name, args, ours, published_millions):
    """At full size (on the meta device): the tensors give the registered variant's layout."""
    cls = PEERS[name][0]
    with torch.device("meta"):
        peer = cls(feat_dim=80, embedding_size=192, **args)
        encoder, state, _ = _eres2net.build(Path("p.ckpt"), peer.state_dict(), {})
        registered = create_model(ours)
    assert encoder.hparams == registered.hparams
    count = count_parameters(encoder)
    assert count == sum(p.numel() for p in peer.parameters()) == count_parameters(registered)
    if published_millions is not None:
        assert round(count / 1e6, 2) == published_millions
    assert len(state) == len(peer.state_dict())


def test_matches_tells_the_layouts_apart():
    small = {name: _peer(name).state_dict() for name in PEERS}
    assert all(_eres2net.matches(state) for state in small.values())
    campplus_like = {
        "head.conv1.weight": torch.zeros(1),
        "xvector.dense.linear.weight": torch.zeros(1),
    }
    assert not _eres2net.matches(campplus_like)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda s, c: s.pop("layer3.1.fuse_models.0.local_att.1.running_var"), "missing"),
        (lambda s, c: s.update(extra=torch.zeros(1)), "not part of this model"),
        (
            lambda s, c: s.update({"layer4.0.bn3.weight": s["layer4.0.bn3.weight"][:-1]}),
            "shape",
        ),
        (lambda s, c: s.update({"seg_2.weight": torch.zeros(32, 32)}), "two_emb_layer"),
        (lambda s, c: c.update(embed_dim=192), "embed_dim is 192"),
        (lambda s, c: c.update(baseWidth=32), "baseWidth 32"),
        (lambda s, c: c.update(fbank_dim=64), "64 mel bins"),
        (lambda s, c: s.pop("fuse34.local_att.0.weight"), "not a 3D-Speaker ERes2Net"),
    ],
    ids=["missing", "unexpected", "shape", "two_emb", "embed_dim", "base_width", "mel", "layout"],
)
def test_bad_checkpoints_are_named(tmp_path, edit, message):
    checkpoint = _modelscope_folder(tmp_path, "eres2netv2", _peer("eres2netv2"))
    state = torch.load(checkpoint, weights_only=True)
    config_path = checkpoint.parent / "configuration.json"
    config = json.loads(config_path.read_text())
    edit(state, config["model"]["model_config"])
    torch.save(state, checkpoint)
    config_path.write_text(json.dumps(config))
    with pytest.raises(BundleError, match=message) as err:
        _convert(checkpoint, tmp_path / "bundle")
    assert str(checkpoint) in str(err.value)
    assert not (tmp_path / "bundle").exists()
