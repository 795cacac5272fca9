"""Resemblyzer's voice encoder (``pretrained.pt``) to a bundle.

Resemblyzer ships its trained GE2E encoder inside its wheel, as ``resemblyzer/pretrained.pt``: a
``torch.save``'d dict with ``step``, ``optimizer_state`` and ``model_state``, the state dict of
``VoiceEncoder`` (``lstm.weight_ih_l0`` ... ``lstm.bias_hh_l2``, ``linear.weight``,
``linear.bias``) plus the two scalars of the GE2E loss (``similarity_weight``,
``similarity_bias``), which are dropped and listed in the bundle's ``info``. Real-Time-Voice-
Cloning's ``encoder.pt`` has the same layout and converts the same way.

The encoder is :class:`speakerprint.models.ge2e.Ge2eLstm` (``ge2e_lstm``) with Resemblyzer's
windows (160 frames every 77, coverage 0.75); its widths (mel bands, LSTM cells and layers,
embedding size) are read from the tensors. The features are
:class:`speakerprint.features.resemblyzer.ResemblyzerMel` with Resemblyzer's ``hparams.py``:
``preprocess_wav`` (volume normalisation to -30 dBFS, increase only; webrtcvad silence trimming)
and ``wav_to_mel_spectrogram`` (librosa's mel power spectrogram: 25 ms window, 10 ms hop, 40 mels),
so that the bundle's embedding of a 16 kHz recording is
``VoiceEncoder().embed_utterance(preprocess_wav(wav))``.

The installed wheel's weights convert without importing Resemblyzer (which needs librosa and
webrtcvad)::

    from speakerprint.convert.resemblyzer import installed_checkpoint
    from speakerprint.convert import convert
    convert("resemblyzer", installed_checkpoint(), "bundles/resemblyzer")

or ``speakerprint convert resemblyzer PATH --out OUT`` with ``PATH`` the ``pretrained.pt`` or the
folder holding it (the installed ``resemblyzer`` package folder).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import torch

from speakerprint.convert._checkpoint import read_state_dict
from speakerprint.errors import BundleError, SpeakerprintError
from speakerprint.features.resemblyzer import ResemblyzerMelConfig
from speakerprint.models.bundle import save_bundle
from speakerprint.models.ge2e import Ge2eLstm
from speakerprint.models.registry import create_model
from speakerprint.utils.hashing import sha256_file

__all__ = ["convert", "find", "installed_checkpoint"]

LAYOUT = (
    "pretrained.pt (Resemblyzer) or encoder.pt (Real-Time-Voice-Cloning) with tensors "
    "lstm.weight_ih_l0 ... linear.weight, or a folder holding it"
)
_FILE_NAMES = ("pretrained.pt", "encoder.pt")
# GE2E's learnt scale and offset of the cosine similarity: training-only.
_LOSS_KEYS = ("similarity_weight", "similarity_bias")
_PREFIXES = {"lstm.": "lstm.", "linear.": "embedding."}  # Resemblyzer -> speakerprint


def installed_checkpoint() -> Path:
    """The ``pretrained.pt`` inside the installed ``resemblyzer`` package (not imported).

    Raises:
        BundleError: Resemblyzer is not installed, or its package has no ``pretrained.pt``.
    """
    try:
        spec = importlib.util.find_spec("resemblyzer")
    except ValueError:  # a module object without a spec in sys.modules (a stub, a test's)
        spec = None
    if spec is None or not spec.submodule_search_locations:
        raise BundleError(
            "Resemblyzer is not installed: pip install --no-deps Resemblyzer==0.1.4 (its wheel "
            "holds the weights), or pass the path of a pretrained.pt"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / "pretrained.pt"
    if not path.is_file():
        raise BundleError(f"the installed Resemblyzer package has no weights file {path}")
    return path


def find(path: Path) -> tuple[Path, None] | None:
    """``(checkpoint, None)`` when ``path`` is a Resemblyzer checkpoint or a folder holding one
    (``pretrained.pt`` or ``encoder.pt``): a ``.pt`` file whose tensors are the voice encoder's."""
    if path.is_dir():
        candidates = [path / name for name in _FILE_NAMES if (path / name).is_file()]
        if len(candidates) != 1:
            return None
        path = candidates[0]
    if path.suffix != ".pt" or not path.is_file():
        return None
    try:
        state = read_state_dict(path, str(path))
    except BundleError:
        return None
    names = set(state) - set(_LOSS_KEYS)
    if "lstm.weight_ih_l0" not in names or "linear.weight" not in names:
        return None
    if not all(name.startswith(tuple(_PREFIXES)) for name in names):
        return None
    return path, None


def convert(checkpoint: Path, out: Path, *, config: Path | None = None) -> Path:
    """Write a speakerprint bundle at ``out`` from Resemblyzer's ``pretrained.pt``.

    Args:
        checkpoint: the ``pretrained.pt`` (or ``encoder.pt``), or a folder holding it.
        out: the bundle folder to write.
        config: must be None: Resemblyzer's settings are constants of its code, not a file.

    Raises:
        BundleError: an unreadable file, or a tensor that is missing, unexpected or of the wrong
            shape (named).
    """
    checkpoint, out = Path(checkpoint), Path(out)
    if config is not None:
        raise BundleError(
            f"{config}: Resemblyzer checkpoints come without a config file; convert without one"
        )
    if checkpoint.is_dir():
        found = find(checkpoint)
        if found is None:
            raise BundleError(f"{checkpoint}: no Resemblyzer checkpoint in it ({LAYOUT})")
        checkpoint = found[0]
    state = read_state_dict(checkpoint, f"Resemblyzer checkpoint {checkpoint}")
    dropped = sorted(key for key in state if key in _LOSS_KEYS)
    state = {k: v for k, v in state.items() if k not in _LOSS_KEYS}
    encoder = _build(checkpoint, state)
    _load_weights(checkpoint, encoder, state)
    features = ResemblyzerMelConfig(num_mel_bins=encoder.feat_dim)
    info = {
        "source": "resemblyzer",
        "checkpoint": checkpoint.name,
        "checkpoint_sha256": sha256_file(checkpoint),
        "peer_model": "resemblyzer.VoiceEncoder",
        "peer_features": (
            "preprocess_wav (-30 dBFS increase-only, webrtcvad trim_long_silences) + "
            "librosa.feature.melspectrogram (n_fft 400, hop 160, power, slaney mels)"
        ),
        "peer_embedding": "embed_utterance (partials of 160 frames, rate 1.3, coverage 0.75)",
        "dropped_keys": dropped,
    }
    return save_bundle(out, encoder, features, info=info)


def _anchor(path: Path, state: dict[str, torch.Tensor], key: str) -> torch.Size:
    if key not in state:
        raise BundleError(f"{path}: missing tensor {key!r}")
    shape = state[key].shape
    if len(shape) != 2:
        raise BundleError(f"{path}: tensor {key!r} has shape {tuple(shape)}, expected 2 dims")
    return shape


def _build(path: Path, state: dict[str, torch.Tensor]) -> Ge2eLstm:
    """The encoder whose widths the tensors give."""
    gates, feat_dim = _anchor(path, state, "lstm.weight_ih_l0")
    embed_dim, hidden_size = _anchor(path, state, "linear.weight")
    num_layers = 0
    while f"lstm.weight_ih_l{num_layers}" in state:
        num_layers += 1
    if gates != 4 * hidden_size:
        raise BundleError(
            f"{path}: tensor 'lstm.weight_ih_l0' has {gates} rows, 4 x the {hidden_size} inputs "
            "of 'linear.weight' expected"
        )
    try:
        encoder = create_model(
            "ge2e_lstm",
            feat_dim=feat_dim,
            hidden_size=hidden_size,
            num_layers=num_layers,
            embed_dim=embed_dim,
            tail_frames=ResemblyzerMelConfig().tail_frames,
        )
    except SpeakerprintError as e:
        raise BundleError(f"{path}: the checkpoint's sizes give no valid ge2e_lstm: {e}") from None
    assert isinstance(encoder, Ge2eLstm)
    return encoder


def _load_weights(path: Path, encoder: Ge2eLstm, state: dict[str, torch.Tensor]) -> None:
    """Copy ``state`` (Resemblyzer names) into ``encoder`` strictly, naming every key that fails."""
    target = encoder.state_dict()
    ours_to_peer = {}
    for key in target:
        peer = next(p for p, o in _PREFIXES.items() if key.startswith(o))
        ours_to_peer[key] = peer + key[len(_PREFIXES[peer]) :]
    expected = set(ours_to_peer.values())
    missing = sorted(expected - set(state))
    unexpected = sorted(set(state) - expected)
    problems = []
    if missing:
        problems.append(f"missing tensors {missing[:8]} ({len(missing)} in all)")
    if unexpected:
        problems.append(
            f"tensors that are not part of this model {unexpected[:8]} ({len(unexpected)} in all)"
        )
    if problems:
        raise BundleError(f"{path}: " + "; ".join(problems))
    converted = {}
    for ours, peer in ours_to_peer.items():
        if state[peer].shape != target[ours].shape:
            raise BundleError(
                f"{path}: tensor {peer!r} has shape {tuple(state[peer].shape)}, "
                f"the model needs {tuple(target[ours].shape)}"
            )
        converted[ours] = state[peer].to(target[ours].dtype)
    encoder.load_state_dict(converted, strict=True)
    encoder.eval()
