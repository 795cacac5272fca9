"""pyannote.audio's packaging of WeSpeaker's ResNets (``pytorch_model.bin``) to bundles.

pyannote.audio 3.x and 4.x compute speaker embeddings with WeSpeaker's ResNet34 (the Hub model
``pyannote/wespeaker-voxceleb-resnet34-LM``), repackaged as a Lightning checkpoint:

* ``state_dict``: the ResNet's tensors under ``resnet.`` (WeSpeaker's names after it, no head);
* ``pyannote.audio``: ``versions``, ``architecture`` (``module``
  ``pyannote.audio.models.embedding.wespeaker`` and ``class`` ``WeSpeakerResNet34``, or the 152,
  221 or 293 variant), and ``specifications``, a pickled pyannote dataclass;
* ``hyper_parameters``: the fbank settings (``sample_rate``, ``num_channels``, ``num_mel_bins``,
  ``frame_length`` and ``frame_shift`` in ms, ``dither``, ``window_type``, ``use_energy``; 4.x
  adds ``round_to_power_of_two``, ``snip_edges`` and ``fbank_centering_span``).

Because the file pickles pyannote classes, ``torch.load(weights_only=True)`` alone refuses it and
a full unpickling would import and run pyannote code: it is read with
:func:`~speakerprint.convert._checkpoint.read_checkpoint`, where pyannote's classes become inert
stand-ins and any other global is refused. The weights then map as WeSpeaker's own checkpoints do
(:func:`speakerprint.convert.wespeaker.resnet_encoder`), 256-dimensional with TSTP pooling as
pyannote's classes hard-code.

Features: pyannote runs ``torchaudio.compliance.kaldi.fbank`` inside the model on
``waveform * 2 ** 15``, with its hyper-parameters (Hamming window, 80 bins, 25/10 ms, dither 0,
no energy in the published model) and the torchaudio defaults otherwise, then subtracts the mean
over the whole input (``fbank_centering_span`` None): speakerprint's :class:`Fbank` with the same
window and ``mean_norm=True``. A checkpoint with dither, energy, a running-mean span, or non-Kaldi
framing is refused by name, rather than converted to something that is not pyannote's model.

One difference remains: pyannote's TSTP takes ``sqrt(unbiased var)``, WeSpeaker's (and the bundle)
``sqrt(unbiased var + 1e-7)``; the variances of a trained ResNet's last stage are many orders of
magnitude above 1e-7.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from speakerprint.convert._checkpoint import read_checkpoint, state_dict_of
from speakerprint.convert.wespeaker import load_weights, resnet_encoder
from speakerprint.errors import BundleError, SpeakerprintError
from speakerprint.features import FbankConfig
from speakerprint.models.bundle import save_bundle
from speakerprint.utils.hashing import sha256_file

__all__ = ["LAYOUT", "convert", "find"]

LAYOUT = "a folder with pytorch_model.bin holding a pyannote.audio WeSpeaker ResNet checkpoint"

CHECKPOINT_NAME = "pytorch_model.bin"
_MODULE = "pyannote.audio.models.embedding.wespeaker"
# pyannote class -> WeSpeaker model name (pyannote/audio/models/embedding/wespeaker/__init__.py).
_CLASSES = {
    "WeSpeakerResNet34": "ResNet34",
    "WeSpeakerResNet152": "ResNet152",
    "WeSpeakerResNet221": "ResNet221",
    "WeSpeakerResNet293": "ResNet293",
}
_EMBED_DIM = 256  # every pyannote WeSpeaker class builds its ResNet with embed_dim 256
_STATE_PREFIX = "resnet."
# The defaults of pyannote's WeSpeakerResNet* constructors, used where a hyper-parameter is absent.
_DEFAULT_HYPER_PARAMETERS = {
    "sample_rate": 16000,
    "num_channels": 1,
    "num_mel_bins": 80,
    "frame_length": 25,
    "frame_shift": 10,
    "dither": 0.0,
    "window_type": "hamming",
    "use_energy": False,
    "round_to_power_of_two": True,
    "snip_edges": True,
    "fbank_centering_span": None,
}
# torchaudio's window names -> speakerprint's.
_WINDOWS = {"hamming": "hamming", "povey": "povey", "hanning": "hann"}
# Classes a pyannote checkpoint pickles; read as inert stand-ins, never imported.
_INERT_PACKAGES = ("pyannote",)


def find(path: Path) -> tuple[Path, None] | None:
    """``(pytorch_model.bin, None)`` when ``path`` is that file, or a folder holding it, and the
    checkpoint names one of pyannote's WeSpeaker ResNet classes as its architecture."""
    checkpoint = path / CHECKPOINT_NAME if path.is_dir() else path
    if checkpoint.name != CHECKPOINT_NAME or not checkpoint.is_file():
        return None
    try:
        _architecture(checkpoint, _read(checkpoint))
    except BundleError:
        return None
    return checkpoint, None


def convert(checkpoint: Path, out: Path, *, config: Path | None = None) -> Path:
    """Write a speakerprint bundle at ``out`` from pyannote's ``pytorch_model.bin``.

    Args:
        checkpoint: the Lightning checkpoint pyannote.audio saved for a WeSpeaker ResNet.
        out: the bundle folder to write.
        config: not used: the checkpoint carries its own settings (pyannote's ``config.yaml`` is
            for its pipelines); passing one is an error rather than silently ignored.

    Raises:
        BundleError: an unreadable or unsafe file, another pyannote architecture, feature
            settings the bundle cannot reproduce, or tensors that are missing, unexpected or of
            the wrong shape (named).
    """
    checkpoint, out = Path(checkpoint), Path(out)
    if config is not None:
        raise BundleError(
            f"{config}: a pyannote checkpoint carries its own settings; convert "
            f"{checkpoint} without --config"
        )
    obj = _read(checkpoint)
    pyannote_class, model_name = _architecture(checkpoint, obj)
    hyper_parameters = _hyper_parameters(checkpoint, obj)
    state = _resnet_state(checkpoint, state_dict_of(obj, f"pyannote checkpoint {checkpoint}"))
    model_args = {
        "feat_dim": hyper_parameters["num_mel_bins"],
        "embed_dim": _EMBED_DIM,
        "pooling_func": "TSTP",
        "two_emb_layer": False,
    }
    encoder, prefixes = resnet_encoder(checkpoint, state, model_name, model_args)
    load_weights(checkpoint, encoder, state, prefixes)
    info = {
        "source": "pyannote",
        "checkpoint": checkpoint.name,
        "checkpoint_sha256": sha256_file(checkpoint),
        "peer_model": f"{_MODULE}.{pyannote_class}",
        "peer_versions": _plain(obj["pyannote.audio"].get("versions")),
        "peer_hyper_parameters": hyper_parameters,
        "peer_features": "torchaudio.compliance.kaldi.fbank (int16 scale) + CMN, in the model",
        "dropped_keys": [],
    }
    return save_bundle(out, encoder, _fbank_config(checkpoint, hyper_parameters), info=info)


def _read(path: Path) -> Any:
    return read_checkpoint(path, f"pyannote checkpoint {path}", inert_packages=_INERT_PACKAGES)


def _architecture(path: Path, obj: Any) -> tuple[str, str]:
    """(pyannote class, WeSpeaker model name) that the checkpoint names."""
    meta = obj.get("pyannote.audio") if isinstance(obj, dict) else None
    architecture = meta.get("architecture") if isinstance(meta, dict) else None
    if not isinstance(architecture, dict):
        raise BundleError(
            f"{path}: not a pyannote.audio checkpoint (no 'pyannote.audio' architecture entry)"
        )
    module, name = architecture.get("module"), architecture.get("class")
    if module != _MODULE or name not in _CLASSES:
        raise BundleError(
            f"{path}: pyannote architecture {module}.{name} is not supported; supported: "
            f"{', '.join(f'{_MODULE}.{c}' for c in _CLASSES)}"
        )
    return name, _CLASSES[name]


def _hyper_parameters(path: Path, obj: dict[str, Any]) -> dict[str, Any]:
    """The fbank hyper-parameters, pyannote's defaults filled in, checked to be reproducible."""
    given = obj.get("hyper_parameters", {})
    if not isinstance(given, dict):
        raise BundleError(f"{path}: hyper_parameters must be a mapping, got {type(given).__name__}")
    unknown = sorted(set(given) - set(_DEFAULT_HYPER_PARAMETERS))
    if unknown:
        raise BundleError(
            f"{path}: unknown hyper_parameters {unknown}; this converter knows "
            f"{sorted(_DEFAULT_HYPER_PARAMETERS)}"
        )
    params = {**_DEFAULT_HYPER_PARAMETERS, **given}
    required = {
        "num_channels": 1,
        "dither": 0.0,
        "use_energy": False,
        "round_to_power_of_two": True,
        "snip_edges": True,
        "fbank_centering_span": None,
    }
    for name, value in required.items():
        if params[name] != value:
            raise BundleError(
                f"{path}: hyper_parameters.{name} is {params[name]!r}; only {value!r} is "
                "supported (the bundle's Kaldi fbank would not reproduce pyannote's features)"
            )
    if params["window_type"] not in _WINDOWS:
        raise BundleError(
            f"{path}: hyper_parameters.window_type {params['window_type']!r} is not supported; "
            f"supported: {sorted(_WINDOWS)}"
        )
    return params


def _resnet_state(path: Path, state: dict[str, Any]) -> dict[str, Any]:
    """The ResNet's tensors without pyannote's ``resnet.`` prefix; anything else is an error."""
    others = sorted(k for k in state if not k.startswith(_STATE_PREFIX))
    if others:
        raise BundleError(
            f"{path}: tensors outside the ResNet ({_STATE_PREFIX}*): {others[:8]} "
            f"({len(others)} in all)"
        )
    return {k[len(_STATE_PREFIX) :]: v for k, v in state.items()}


def _fbank_config(path: Path, params: dict[str, Any]) -> FbankConfig:
    try:
        return FbankConfig(
            sample_rate=params["sample_rate"],
            num_mel_bins=params["num_mel_bins"],
            frame_length_ms=float(params["frame_length"]),
            frame_shift_ms=float(params["frame_shift"]),
            preemphasis=0.97,
            dither=0.0,
            low_freq_hz=20.0,
            high_freq_hz=0.0,
            window=_WINDOWS[params["window_type"]],
            remove_dc_offset=True,
            mean_norm=True,
        )
    except (SpeakerprintError, TypeError, ValueError) as e:
        raise BundleError(f"{path}: bad feature settings in hyper_parameters: {e}") from None


def _plain(value: Any) -> Any:
    """``value`` as JSON-ready data for the bundle's info (stand-ins and versions as strings)."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if value is None or isinstance(value, (bool, int, float)):
        return value
    return str(value)
