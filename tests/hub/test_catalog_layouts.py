"""Every catalog model, laid out as its hub repository ships it, is recognised and converted.

For each entry of CATALOG a folder is written that holds exactly the entry's files, under their
exact names, in the original toolkit's format, with random weights at the published full size,
built with the toolkit's own model classes (the peers of tests/convert; NeMo's archive from the
layout test_nemo.py writes; Resemblyzer's real wheel folder). Then: ``recognise`` names the
entry's source and checkpoint, ``resolve_model`` converts the folder into the cache, the bundle
has the entry's dimension, sample rate and parameter count (within the catalog's rounding of the
published figure), and 1 s of real speech gives a finite embedding.
"""

from __future__ import annotations

import json
import shutil
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from speakerprint.audio import load_audio
from speakerprint.convert import recognise
from speakerprint.hub import CATALOG, resolve_model
from speakerprint.hub.catalog import PretrainedModel
from speakerprint.inference.encoder import SpeakerEncoder
from speakerprint.models import count_parameters
from speakerprint.models.bundle import load_bundle
from tests.convert import peers
from tests.convert import test_nemo as nemo_peer
from tests.convert import test_pyannote as pyannote_peer
from tests.convert.test_pyannote import pyannote_task  # noqa: F401 (fixture)
from tests.convert.test_speechbrain_peer import sb  # noqa: F401 (fixture)

SPEECH = "speechocean762/train/SPEAKER0001/000010011.opus"
BUILDERS: dict[str, Callable[[Path, pytest.FixtureRequest], None]] = {}


def builder(*aliases: str):
    def register(build):
        for alias in aliases:
            BUILDERS[alias] = build
        return build

    return register


def _seeded(model: torch.nn.Module, seed: int = 1) -> torch.nn.Module:
    peers.perturb_batchnorm(model, seed=seed)
    return model.eval()


# --- WeSpeaker: <checkpoint>.pt + <config>.yaml ------------------------------------------------

WESPEAKER = {
    # alias: (model name in config.yaml, speakers of the AAM head)
    "resnet293-voxceleb": ("ResNet293", 5994),
    "resnet221-voxceleb": ("ResNet221", 5994),
    "wespeaker-cnceleb-resnet34": ("ResNet34", 2793),
}


@builder(*WESPEAKER)
def _wespeaker(folder: Path, request: pytest.FixtureRequest) -> None:
    entry = _entry(request)
    name, speakers = WESPEAKER[entry.alias]
    model_args = {"feat_dim": 80, "embed_dim": 256, "pooling_func": "TSTP", "two_emb_layer": False}
    torch.manual_seed(0)
    model = _seeded(getattr(peers.wespeaker_module("resnet"), name)(**model_args))
    projections = peers.wespeaker_module("projections")
    model.add_module("projection", projections.ArcMarginProduct(256, speakers))
    torch.save(model.state_dict(), folder / entry.checkpoint)
    config = {
        "model": name,
        "model_args": model_args,
        "projection_args": {"project_type": "arc_margin", "embed_dim": 256},
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
    (folder / entry.config).write_text(yaml.safe_dump(config))


# --- pyannote: pytorch_model.bin, a Lightning checkpoint ---------------------------------------


@builder("wespeaker-resnet34")
def _pyannote(folder: Path, request: pytest.FixtureRequest) -> None:
    request.getfixturevalue("pyannote_task")
    torch.manual_seed(0)
    resnet = _seeded(
        peers.pyannote_wespeaker_resnet().ResNet34(
            80, 256, pooling_func="TSTP", two_emb_layer=False
        )
    )
    spec = pyannote_peer.Specifications(
        problem=pyannote_peer.Problem.REPRESENTATION,
        resolution=pyannote_peer.Resolution.CHUNK,
        duration=5.0,
    )
    checkpoint = {
        "state_dict": OrderedDict((f"resnet.{k}", v) for k, v in resnet.state_dict().items()),
        "pyannote.audio": {
            "versions": {"torch": torch.__version__, "pyannote.audio": "3.1.0"},
            "architecture": {
                "module": pyannote_peer.ARCHITECTURE_MODULE,
                "class": "WeSpeakerResNet34",
            },
            "specifications": spec,
        },
        "pytorch-lightning_version": "2.1.3",
        "hyper_parameters": dict(pyannote_peer.HYPER_PARAMETERS),
    }
    torch.save(checkpoint, folder / _entry(request).checkpoint)


# --- NeMo: one .nemo archive (model_config.yaml + model_weights.ckpt) ---------------------------


@builder("titanet-large")
def _nemo(folder: Path, request: pytest.FixtureRequest) -> None:
    from speakerprint.convert.nemo import _parse_config

    cfg = _parse_config(nemo_peer.TITANET_LARGE_YAML, "titanet-large.yaml")
    state = nemo_peer.nemo_state_dict(cfg)  # with the 16,681-speaker head, as published
    # BatchNorm statistics near those of real speech, so that 24 random blocks keep a scale.
    nemo_peer.calibrate(state, cfg, [torch.from_numpy(_speech(request))])
    staging = folder.parent / "nemo-staging"
    archive = nemo_peer.write_nemo(staging / "archive.nemo", cfg, state)
    shutil.move(archive, folder / _entry(request).checkpoint)
    shutil.rmtree(staging)


# --- SpeechBrain: embedding_model.ckpt alone (the catalog downloads nothing else) ----------------


@builder("ecapa-voxceleb")
def _speechbrain_ecapa(folder: Path, request: pytest.FixtureRequest) -> None:
    classes = request.getfixturevalue("sb")
    torch.manual_seed(0)
    model = classes.ECAPA_TDNN(
        80,
        channels=[1024, 1024, 1024, 1024, 3072],
        dilations=[1, 2, 3, 4, 1],
        attention_channels=128,
        lin_neurons=192,
    )
    torch.save(_seeded(model).state_dict(), folder / _entry(request).checkpoint)


@builder("xvector-voxceleb")
def _speechbrain_xvector(folder: Path, request: pytest.FixtureRequest) -> None:
    classes = request.getfixturevalue("sb")
    torch.manual_seed(0)
    model = classes.Xvector(in_channels=24, activation=torch.nn.LeakyReLU)  # 512-d by default
    torch.save(_seeded(model).state_dict(), folder / _entry(request).checkpoint)


# --- 3D-Speaker on ModelScope: a state dict + configuration.json --------------------------------


def _campplus(embedding_size: int) -> tuple[torch.nn.Module, str]:
    from speakerlab.models.campplus.DTDNN import CAMPPlus

    return CAMPPlus(feat_dim=80, embedding_size=embedding_size), "cam++-sv"


def _eres2netv2() -> tuple[torch.nn.Module, str]:
    from speakerlab.models.eres2net.ERes2NetV2 import ERes2NetV2

    model = ERes2NetV2(
        feat_dim=80, embedding_size=192, baseWidth=26, scale=2, expansion=2, m_channels=64
    )
    return model, "eres2netv2-sv"


def _eres2net() -> tuple[torch.nn.Module, str]:
    from speakerlab.models.eres2net.ERes2Net import ERes2Net

    return ERes2Net(feat_dim=80, embedding_size=192), "eres2net-sv"


SPEAKERLAB = {
    "campplus-zh": lambda: _campplus(192),
    "campplus-voxceleb": lambda: _campplus(512),
    "eres2netv2-zh": _eres2netv2,
    "eres2net-voxceleb": _eres2net,
}


@builder(*SPEAKERLAB)
def _speakerlab(folder: Path, request: pytest.FixtureRequest) -> None:
    entry = _entry(request)
    torch.manual_seed(0)
    model, model_type = SPEAKERLAB[entry.alias]()
    torch.save(_seeded(model).state_dict(), folder / entry.checkpoint)
    configuration = {
        "framework": "pytorch",
        "task": "speaker-verification",
        "model": {
            "type": model_type,
            "model_config": {"sample_rate": 16000, "fbank_dim": 80, "emb_size": entry.embed_dim},
            "pretrained_model": entry.checkpoint,
        },
        "pipeline": {"type": "speaker-verification"},
    }
    (folder / "configuration.json").write_text(json.dumps(configuration, indent=4))


# --- the test -----------------------------------------------------------------------------------


def _entry(request: pytest.FixtureRequest) -> PretrainedModel:
    return request.getfixturevalue("entry")


def _speech(request: pytest.FixtureRequest) -> np.ndarray:
    shared_data = request.getfixturevalue("shared_data")
    return load_audio(shared_data / SPEECH, 16000)[:16000]


@pytest.fixture
def entry(request) -> PretrainedModel:
    return request.param


@pytest.fixture
def folder(entry, request, tmp_path) -> Path:
    """The entry's hub repository: exactly its files (Resemblyzer: the installed wheel's)."""
    if entry.package is not None:
        from speakerprint.hub.resolve import _package_folder

        return _package_folder(entry)  # checks the wheel's file against the pinned sha256
    build = BUILDERS.get(entry.alias)
    assert build is not None, f"add a builder for {entry.alias!r} to {__name__}"
    folder = tmp_path / entry.hub_id.replace("/", "--")
    folder.mkdir()
    build(folder, request)
    assert sorted(p.name for p in folder.iterdir()) == sorted(f.name for f in entry.files)
    return folder


@pytest.mark.parametrize("entry", CATALOG, ids=lambda e: e.alias, indirect=True)
def test_the_published_layout_is_recognised_and_converted(
    entry, folder, request, tmp_path, monkeypatch
):
    monkeypatch.setenv("SPEAKERPRINT_CACHE", str(tmp_path / "cache"))
    source, checkpoint, config = recognise(folder)
    assert (source, checkpoint.name) == (entry.source, entry.checkpoint)
    if entry.config is not None:
        assert config is not None and config.name == entry.config

    path = resolve_model(folder)
    assert path.is_relative_to(tmp_path / "cache")
    bundle = load_bundle(path)
    assert bundle.encoder.embed_dim == entry.embed_dim
    assert bundle.sample_rate == entry.sample_rate
    counted = count_parameters(bundle.encoder)
    print(f"\n{entry.alias}: {counted:,} parameters (catalog {entry.parameters:,})")
    assert abs(counted - entry.parameters) / entry.parameters < 0.005, counted

    embedding = SpeakerEncoder.from_pretrained(path).embed(_speech(request), 16000)
    assert embedding.shape == (entry.embed_dim,)
    assert np.isfinite(embedding).all() and np.linalg.norm(embedding) > 0
