"""pyannote.audio's WeSpeaker ResNet checkpoints (``pytorch_model.bin``) converted to bundles.

The checkpoints are built here as pyannote publishes them (pyannote/wespeaker-voxceleb-resnet34-LM):
pyannote's vendored ResNet (pyannote.audio, requirements-peers.txt) with random weights and BN
statistics, its state dict under ``resnet.``, and the ``pyannote.audio`` entry with a pickled
``Specifications`` dataclass and its ``Problem`` / ``Resolution`` enums. pyannote.audio's task
module needs lightning and torchaudio, so the test pickles stand-in classes registered under the
real module name; the pickle is the same (``GLOBAL pyannote.audio.core.task ...``).
"""

from __future__ import annotations

import dataclasses
import enum
import os
import sys
import types
from collections import OrderedDict
from pathlib import Path

import pytest
import torch

from speakerprint.convert import convert, recognise
from speakerprint.convert import pyannote as pyannote_source
from speakerprint.convert._checkpoint import Inert, read_checkpoint
from speakerprint.errors import BundleError
from speakerprint.models.bundle import load_bundle
from tests.convert import peers

TASK_MODULE = "pyannote.audio.core.task"
ARCHITECTURE_MODULE = "pyannote.audio.models.embedding.wespeaker"
# pyannote 3.1's WeSpeakerResNet34 hyper-parameters, as the Hub checkpoint stores them.
HYPER_PARAMETERS = {
    "sample_rate": 16000,
    "num_channels": 1,
    "num_mel_bins": 80,
    "frame_length": 25,
    "frame_shift": 10,
    "dither": 0.0,
    "window_type": "hamming",
    "use_energy": False,
}


class Problem(enum.Enum):
    BINARY_CLASSIFICATION = 0
    MONO_LABEL_CLASSIFICATION = 1
    MULTI_LABEL_CLASSIFICATION = 2
    REPRESENTATION = 3
    REGRESSION = 4


class Resolution(enum.Enum):
    FRAME = 1
    CHUNK = 2


@dataclasses.dataclass
class Specifications:
    problem: Problem
    resolution: Resolution
    duration: float
    min_duration: float | None = None
    warm_up: tuple[float, float] | None = (0.0, 0.0)
    classes: list[str] | None = None
    powerset_max_classes: int | None = None
    permutation_invariant: bool = False


@pytest.fixture
def pyannote_task(monkeypatch) -> None:
    """The stand-in classes under pyannote's module name, while a test pickles them."""
    module = types.ModuleType(TASK_MODULE)
    for cls in (Problem, Resolution, Specifications):
        monkeypatch.setattr(cls, "__module__", TASK_MODULE)
        setattr(module, cls.__name__, cls)
    monkeypatch.setitem(sys.modules, TASK_MODULE, module)


def _save_pyannote(
    folder: Path, resnet: torch.nn.Module, pyannote_class: str = "WeSpeakerResNet34", **extra
) -> Path:
    """``resnet`` saved as pyannote publishes it: ``pytorch_model.bin`` (+ a config.yaml)."""
    checkpoint = {
        "state_dict": OrderedDict((f"resnet.{k}", v) for k, v in resnet.state_dict().items()),
        "pyannote.audio": {
            "versions": {"torch": torch.__version__, "pyannote.audio": "3.1.0"},
            "architecture": {"module": ARCHITECTURE_MODULE, "class": pyannote_class},
            "specifications": Specifications(
                problem=Problem.REPRESENTATION, resolution=Resolution.CHUNK, duration=5.0
            ),
        },
        "pytorch-lightning_version": "2.1.3",
        "hyper_parameters": dict(HYPER_PARAMETERS),
    }
    checkpoint.update(extra)
    folder.mkdir(exist_ok=True)
    torch.save(checkpoint, folder / "pytorch_model.bin")
    # The Hub folder has a config.yaml too (for pyannote's pipelines); it must not confuse find.
    (folder / "config.yaml").write_text("model:\n  _target_: pyannote.audio.Model\n")
    return folder / "pytorch_model.bin"


def _resnet34() -> torch.nn.Module:
    """pyannote's ResNet34 as WeSpeakerResNet34 builds it, random weights and BN statistics."""
    torch.manual_seed(0)
    model = peers.pyannote_wespeaker_resnet().ResNet34(
        80, 256, pooling_func="TSTP", two_emb_layer=False
    )
    peers.perturb_batchnorm(model.eval(), seed=3)
    return model


def _parity(resnet: torch.nn.Module, bundle) -> list[float]:
    """Cosines between pyannote's embeddings (its ResNet on its fbank) and the bundle's."""
    cosines = []
    for utterance in peers.UTTERANCES:
        wav = peers.speech(utterance)
        with torch.no_grad():
            expected = resnet(peers.kaldi_fbank(wav))[1][0]
        emb = bundle.embed_batch(torch.from_numpy(wav)[None])[0]
        cosines.append(peers.cosine(emb, expected))
    return cosines


@pytest.fixture
def resnet34_checkpoint(tmp_path, pyannote_task) -> tuple[torch.nn.Module, Path]:
    resnet = _resnet34()
    return resnet, _save_pyannote(tmp_path / "peer", resnet)


def test_resnet34_gives_pyannotes_embeddings(tmp_path, resnet34_checkpoint):
    resnet, checkpoint = resnet34_checkpoint
    assert recognise(checkpoint.parent) == ("pyannote", checkpoint, None)
    assert recognise(checkpoint) == ("pyannote", checkpoint, None)
    bundle = load_bundle(convert("pyannote", checkpoint, tmp_path / "bundle"))
    assert sum(p.numel() for p in bundle.encoder.parameters()) == 6_634_336
    cosines = _parity(resnet, bundle)
    print(f"\npyannote WeSpeakerResNet34: min cosine {min(cosines):.9f}")
    assert min(cosines) >= 0.9999

    info = bundle.info
    assert info["source"] == "pyannote"
    assert info["peer_model"] == f"{ARCHITECTURE_MODULE}.WeSpeakerResNet34"
    assert info["peer_versions"] == {"torch": str(torch.__version__), "pyannote.audio": "3.1.0"}
    assert info["peer_hyper_parameters"]["window_type"] == "hamming"
    features = bundle.fbank.config
    assert features.window == "hamming" and features.mean_norm and features.dither == 0.0
    assert features.waveform_scale == 32768.0  # pyannote: waveforms * (1 << 15)


def test_a_wrong_conversion_fails_the_bound(tmp_path, resnet34_checkpoint):
    resnet, checkpoint = resnet34_checkpoint
    bundle = load_bundle(convert("pyannote", checkpoint, tmp_path / "bundle"))
    bundle.encoder.stages[1][0].conv2.norm.reset_running_stats()
    assert min(_parity(resnet, bundle)) < 0.9999


def test_deep_resnet_in_pyannotes_packaging(tmp_path, pyannote_task):
    """WeSpeakerResNet152 (real depth, m_channels 8): pyannote's vendored Bottleneck code."""
    module = peers.pyannote_wespeaker_resnet()
    torch.manual_seed(0)
    resnet = module.ResNet(
        module.Bottleneck, [3, 8, 36, 3], m_channels=8, feat_dim=80, embed_dim=256,
        pooling_func="TSTP", two_emb_layer=False,
    )  # fmt: skip
    peers.perturb_batchnorm(resnet.eval(), seed=4)
    checkpoint = _save_pyannote(tmp_path / "peer", resnet, "WeSpeakerResNet152")
    bundle = load_bundle(convert("pyannote", checkpoint, tmp_path / "bundle"))
    assert bundle.encoder.hparams["block"] == "bottleneck"
    assert min(_parity(resnet, bundle)) >= 0.9999


def test_pyannote_classes_are_read_inert_without_importing_pyannote(resnet34_checkpoint):
    _, checkpoint = resnet34_checkpoint
    del sys.modules[TASK_MODULE]  # as where pyannote.audio is not installed
    before = set(sys.modules)
    obj = read_checkpoint(checkpoint, "test", inert_packages=("pyannote",))
    assert not {m for m in set(sys.modules) - before if m.startswith("pyannote")}
    specifications = obj["pyannote.audio"]["specifications"]
    assert isinstance(specifications, Inert)
    assert specifications.qualified_name == f"{TASK_MODULE}.Specifications"
    assert specifications.duration == 5.0
    assert isinstance(specifications.problem, Inert) and specifications.problem.args == (3,)
    # Without leave for pyannote's classes, the safe reader refuses the file.
    with pytest.raises(BundleError, match="not a readable PyTorch checkpoint"):
        read_checkpoint(checkpoint, "test")


class _Malicious:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_a_malicious_global_is_refused_not_run(tmp_path, pyannote_task):
    marker = tmp_path / "ran"
    checkpoint = _save_pyannote(tmp_path / "peer", _resnet34(), hyper_parameters=_Malicious(marker))
    with pytest.raises(BundleError, match="refusing to load") as err:
        convert("pyannote", checkpoint, tmp_path / "bundle")
    assert f"{os.system.__module__}.system" in str(err.value) and str(checkpoint) in str(err.value)
    assert pyannote_source.find(checkpoint.parent) is None
    assert not marker.exists() and not (tmp_path / "bundle").exists()


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda c: c["hyper_parameters"].update(dither=1.0), "hyper_parameters.dither"),
        (lambda c: c["hyper_parameters"].update(use_energy=True), "hyper_parameters.use_energy"),
        (lambda c: c["hyper_parameters"].update(window_type="blackman"), "blackman"),
        (lambda c: c["hyper_parameters"].update(fbank_centering_span=3.0), "centering_span"),
        (lambda c: c["hyper_parameters"].update(num_channels=2), "num_channels"),
        (lambda c: c["hyper_parameters"].update(mel_scale="htk"), "unknown hyper_parameters"),
        (
            lambda c: c["pyannote.audio"]["architecture"].update({"class": "XVectorSincNet"}),
            "XVectorSincNet is not supported",
        ),
        (lambda c: c.pop("pyannote.audio"), "not a pyannote.audio checkpoint"),
        (lambda c: c["state_dict"].update({"classifier.weight": torch.ones(2)}), "classifier"),
        (lambda c: c["state_dict"].pop("resnet.layer3.2.bn1.running_var"), "layer3.2.bn1"),
    ],
)
def test_checkpoint_problems_are_named(tmp_path, resnet34_checkpoint, edit, message):
    _, checkpoint = resnet34_checkpoint
    obj = read_checkpoint(checkpoint, "test", inert_packages=("pyannote",))
    obj["pyannote.audio"]["specifications"] = None  # the stand-in pickles only as itself
    edit(obj)
    torch.save(obj, checkpoint)
    with pytest.raises(BundleError, match=message) as err:
        convert("pyannote", checkpoint, tmp_path / "bundle")
    assert str(checkpoint) in str(err.value)


def test_absent_or_newer_hyper_parameters(tmp_path, resnet34_checkpoint):
    """pyannote 4.x adds three framing keys; without any, pyannote's defaults apply."""
    resnet, checkpoint = resnet34_checkpoint
    newer = {
        **HYPER_PARAMETERS,
        "round_to_power_of_two": True,
        "snip_edges": True,
        "fbank_centering_span": None,
    }
    for hyper_parameters in (newer, None):
        obj = torch.load(checkpoint, weights_only=False)
        if hyper_parameters is None:
            del obj["hyper_parameters"]
        else:
            obj["hyper_parameters"] = hyper_parameters
        torch.save(obj, checkpoint)
        bundle = load_bundle(convert("pyannote", checkpoint, tmp_path / str(hyper_parameters)))
        assert bundle.info["peer_hyper_parameters"]["fbank_centering_span"] is None
        assert min(_parity(resnet, bundle)[:1]) >= 0.9999


def test_a_config_file_is_refused(tmp_path, resnet34_checkpoint):
    _, checkpoint = resnet34_checkpoint
    with pytest.raises(BundleError, match="without --config"):
        convert("pyannote", checkpoint, tmp_path / "b", config=checkpoint.parent / "config.yaml")


def test_other_layouts_are_not_taken_for_pyannote(tmp_path):
    (tmp_path / "pytorch_model.bin").write_bytes(b"not a checkpoint")
    assert pyannote_source.find(tmp_path) is None
    torch.save(
        {"state_dict": {"resnet.conv1.weight": torch.ones(1)}}, tmp_path / "pytorch_model.bin"
    )
    assert pyannote_source.find(tmp_path) is None
