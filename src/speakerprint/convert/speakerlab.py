"""3D-Speaker's (``speakerlab``) pretrained models, as ModelScope publishes them, to bundles.

A ModelScope model folder such as ``iic/speech_campplus_sv_zh-cn_16k-common`` holds the weights,
a bare ``torch.save``'d state dict of the speaker model (``campplus_cn_common.bin``), and
``configuration.json``, whose ``model`` section names them::

    {"framework": "pytorch", "task": "speaker-verification",
     "model": {"type": "cam++-sv", "pretrained_model": "campplus_cn_common.bin",
               "model_config": {"sample_rate": 16000, "fbank_dim": 80, "emb_size": 192}}, ...}

The architecture is recognised from the tensors, by each family module in ``_FAMILIES``
(``matches(state)``), which also builds the encoder and renames the tensors (``build``); this
module reads the files, sets the front end shared by every 3D-Speaker model, and writes the bundle.
``model_config`` is optional (a bare ``.bin`` converts) and, where given, checked against the
tensors.

Features: 3D-Speaker (``speakerlab/process/processor.py`` FBank, and ModelScope's pipeline) runs
``torchaudio.compliance.kaldi.fbank`` with its defaults on the waveform in [-1, 1] -- not int16
scale -- with 80 mel bins and dither 0 (povey window, pre-emphasis 0.97, DC removal, 20 Hz to
Nyquist, ``snip_edges``), then subtracts the utterance mean. That is speakerprint's :class:`Fbank`
with ``waveform_scale=1.0`` and ``window="povey"``; after the mean is subtracted the scale
matters only where a mel energy falls under the log floor (float32 epsilon).
"""

from __future__ import annotations

import importlib
import json
from pathlib import Path
from typing import Any

from speakerprint.convert._checkpoint import read_state_dict
from speakerprint.errors import BundleError, SpeakerprintError
from speakerprint.features import FbankConfig
from speakerprint.models.bundle import save_bundle
from speakerprint.utils.hashing import sha256_file

__all__ = ["LAYOUT", "convert", "find"]

LAYOUT = (
    "a folder with configuration.json naming a .bin state dict (3D-Speaker's models on "
    "ModelScope), or such a .bin itself"
)
CONFIG_FILE = "configuration.json"
# Modules with matches(state) -> bool and build(path, state, model_config) ->
# (encoder, state in its names, peer model name), tried in order.
_FAMILIES = ("speakerprint.convert._campplus", "speakerprint.convert._eres2net")


def find(path: Path) -> tuple[Path, Path | None] | None:
    """``(weights .bin, configuration.json or None)`` when ``path`` is in 3D-Speaker's layout.

    A folder qualifies when its configuration.json names an existing ``pretrained_model``, or
    else when it holds a single ``.bin`` that is a 3D-Speaker state dict; a ``.bin`` file when it
    is one (its tensors are looked at only when there is no configuration.json beside it).
    """
    if path.is_dir():
        config = path / CONFIG_FILE
        named = _named_weights(config) if config.is_file() else None
        if named is not None and named.is_file():
            return named, config
        candidates = sorted([*path.glob("*.bin"), *path.glob("*.ckpt")])
        if len(candidates) != 1:
            return None
        path = candidates[0]
    if path.suffix not in (".bin", ".ckpt") or not path.is_file():
        return None
    config = path.parent / CONFIG_FILE
    if config.is_file() and _named_weights(config) == path:
        return path, config
    try:
        state = read_state_dict(path, str(path))
    except BundleError:
        return None
    if not any(importlib.import_module(family).matches(state) for family in _FAMILIES):
        return None
    return path, config if config.is_file() else None


def convert(checkpoint: Path, out: Path, *, config: Path | None = None) -> Path:
    """Write a speakerprint bundle at ``out`` from a 3D-Speaker state dict.

    Args:
        checkpoint: the ``.bin`` (or any ``torch.save``'d state dict) of a 3D-Speaker model.
        out: the bundle folder to write.
        config: ModelScope's configuration.json; by default the one beside ``checkpoint``, if any.

    Raises:
        BundleError: an unreadable file, an architecture this converter does not know, or a
            tensor that is missing, unexpected or of the wrong shape (each named).
    """
    checkpoint, out = Path(checkpoint), Path(out)
    if config is None and (checkpoint.parent / CONFIG_FILE).is_file():
        config = checkpoint.parent / CONFIG_FILE
    settings = _read_config(Path(config)) if config is not None else {}
    model_config = settings.get("model_config") or {}
    if not isinstance(model_config, dict):
        raise BundleError(f"{config}: model.model_config must be a mapping")
    state = read_state_dict(checkpoint, f"3D-Speaker checkpoint {checkpoint}")

    families = [importlib.import_module(name) for name in _FAMILIES]
    family = next((module for module in families if module.matches(state)), None)
    if family is None:
        raise BundleError(
            f"{checkpoint}: not a 3D-Speaker model this converter knows (supported: "
            f"{', '.join(module.PEER_MODEL for module in families)}); its first tensors are "
            f"{sorted(state)[:5]}"
        )
    encoder, converted, peer_model = family.build(checkpoint, state, model_config)
    target = encoder.state_dict()
    encoder.load_state_dict({k: v.to(target[k].dtype) for k, v in converted.items()}, strict=True)
    encoder.eval()
    fbank_config = _fbank_config(config or checkpoint, model_config, encoder.feat_dim)
    info = {
        "source": "speakerlab",
        "checkpoint": checkpoint.name,
        "checkpoint_sha256": sha256_file(checkpoint),
        "config": None if config is None else Path(config).name,
        "peer_model": peer_model,
        "peer_model_type": settings.get("type"),
        "peer_model_config": model_config,
        "peer_features": "torchaudio.compliance.kaldi.fbank (povey, waveform in [-1, 1], "
        "dither 0) + CMN",
        "dropped_keys": [],
    }
    return save_bundle(out, encoder, fbank_config, info=info)


def _named_weights(config: Path) -> Path | None:
    """The weights file configuration.json names, or None when it names none (or is unreadable)."""
    try:
        settings = _read_config(config)
    except BundleError:
        return None
    name = settings.get("pretrained_model")
    return config.parent / name if isinstance(name, str) and name else None


def _read_config(path: Path) -> dict[str, Any]:
    """configuration.json's ``model`` section: ``type``, ``pretrained_model``, ``model_config``."""
    if not path.is_file():
        raise BundleError(f"3D-Speaker config {path} not found")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise BundleError(f"{path}: not a readable JSON file: {e}") from None
    model = data.get("model") if isinstance(data, dict) else None
    if not isinstance(model, dict):
        raise BundleError(f"{path}: not a ModelScope model configuration (no 'model' section)")
    return model


def _fbank_config(where: Path, model_config: dict[str, Any], feat_dim: int) -> FbankConfig:
    num_mel_bins = model_config.get("fbank_dim", feat_dim)
    if num_mel_bins != feat_dim:
        raise BundleError(
            f"{where}: fbank_dim is {num_mel_bins!r} but the model takes {feat_dim} features "
            "per frame"
        )
    try:
        return FbankConfig(
            sample_rate=model_config.get("sample_rate", 16000),
            num_mel_bins=num_mel_bins,
            frame_length_ms=25.0,
            frame_shift_ms=10.0,
            preemphasis=0.97,
            dither=0.0,  # torchaudio's default, and 3D-Speaker's at test time
            low_freq_hz=20.0,
            high_freq_hz=0.0,
            window="povey",
            remove_dc_offset=True,
            mean_norm=True,
            waveform_scale=1.0,
        )
    except SpeakerprintError as e:
        raise BundleError(f"{where}: bad feature settings: {e}") from None
