"""Model bundles: a folder that describes itself and rebuilds the model with its features.

``config.json`` names the architecture and every constructor argument, the feature settings, the
sample rate, the embedding size, a decision threshold with the data it was measured on, and the
versions. ``model.safetensors`` holds the encoder weights. Loading is strict: a missing or extra
tensor is an error, never a silently half-loaded model.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from speakerprint.errors import BundleError, ConfigError
from speakerprint.features import Fbank, FbankConfig, frontend_from_dict
from speakerprint.models.base import EncoderModule
from speakerprint.models.registry import create_model
from speakerprint.utils.io import atomic_dir, atomic_write_text

BUNDLE_FORMAT = "speakerprint-bundle"
BUNDLE_VERSION = 1
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
#: The releases whose enrollment stores recorded a fingerprint that hashed the speakerprint
#: version in (:func:`legacy_model_fingerprints`). No later release joins this list.
LEGACY_FINGERPRINT_VERSIONS = ("0.1.0",)


@dataclass
class Threshold:
    """A cosine-score decision threshold and where it was measured."""

    value: float
    method: str  # e.g. "eer"
    measured_on: str  # the data, in words: "dev split of ... (N trials)"


@dataclass
class Bundle:
    encoder: EncoderModule
    fbank: Fbank
    threshold: Threshold | None = None
    info: dict[str, Any] = field(default_factory=dict)  # training data, steps, metrics: free text
    # Score -> LLR map fitted on trials (speakerprint.eval.calibration.Calibration.to_dict()).
    calibration: dict[str, Any] | None = None
    #: ``torch.compile`` of the encoder, used by :meth:`embed_batch` when set (:meth:`compile`).
    compiled: Any = field(default=None, repr=False, compare=False)

    def compile(self) -> None:
        """Embed through ``torch.compile`` of the encoder with inductor's freezing (weights
        folded in as constants, elementwise work fused), for inference only.

        The first calls compile: the first length, then a version for any length, and again
        for a new batch size (each seconds to a minute on a CPU, which needs a C++ compiler).
        Worth it for serving and batch extraction, not for one file.
        ``bench/cpu_inference_peers.py --compiled`` times it against eager; the embeddings agree
        with eager to float rounding.
        """
        self.encoder.eval()
        self.compiled = torch.compile(self.encoder, options={"freezing": True})

    @property
    def sample_rate(self) -> int:
        return self.fbank.config.sample_rate

    def decision_threshold(self, given: float | None = None) -> tuple[float, str]:
        """The cosine threshold of a same-speaker decision and where it comes from.

        ``given`` wins (source ``"given"``); else the threshold measured when the bundle was
        trained or calibrated (source ``"<method> on <data>"``).

        >>> bundle.decision_threshold(None)  # doctest: +SKIP
        (0.37, 'eer on dev split of speechocean762 (4950 trials)')

        Raises:
            ConfigError: ``given`` is not a finite number (NaN or infinite).
            BundleError: nothing is given and the bundle has no measured threshold.
        """
        if given is not None:
            if not math.isfinite(given):
                raise ConfigError(f"the threshold must be a finite number, got {given}")
            return float(given), "given"
        if self.threshold is None:
            raise BundleError(
                "the model has no measured threshold: give one (--threshold on the command "
                "line, threshold= in Python and over HTTP)"
            )
        measured = self.threshold
        return float(measured.value), f"{measured.method} on {measured.measured_on}"

    @property
    def min_samples(self) -> int:
        """The shortest waveform the encoder accepts; shorter input is repeated up to it."""
        from speakerprint.features import min_samples

        return min_samples(self.fbank.config, self.encoder.min_frames)

    @torch.no_grad()
    def embed_batch(self, wav: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """Embeddings of a zero-padded batch: wav (B, N) float32 in [-1, 1], lengths (B,) samples.

        Returns (B, embed_dim) float32, not normalised. Padding never changes an embedding: the
        features and the encoder both mask what lies beyond each row's length. Rows shorter than
        :attr:`min_samples` are repeated up to it (the documented short-input policy).
        """
        if wav.dim() != 2:
            raise ValueError(f"wav must be (batch, samples), got shape {tuple(wav.shape)}")
        device = next(self.encoder.parameters()).device
        wav = wav.to(device, torch.float32)
        if lengths is None:
            lengths = torch.full((wav.shape[0],), wav.shape[1], dtype=torch.int64)
        lengths = lengths.to(device, torch.int64)
        if bool((lengths <= 0).any()):
            raise ValueError("every waveform needs at least one sample")
        short = (lengths < self.min_samples).nonzero().flatten().tolist()
        if short:
            width = max(wav.shape[1], self.min_samples)
            wav = torch.nn.functional.pad(wav, (0, width - wav.shape[1]))
            lengths = lengths.clone()
            for row in short:
                n = int(lengths[row])
                reps = -(-self.min_samples // n)
                wav[row, : self.min_samples] = wav[row, :n].repeat(reps)[: self.min_samples]
                lengths[row] = self.min_samples
        feats, frame_lengths = self.fbank(wav, lengths)
        encoder = self.compiled if self.compiled is not None else self.encoder
        return encoder(feats, frame_lengths).float()


def save_bundle(
    path: str | os.PathLike,
    encoder: EncoderModule,
    fbank_config: FbankConfig,
    *,
    threshold: Threshold | None = None,
    info: dict[str, Any] | None = None,
    dtype: torch.dtype = torch.float32,
) -> Path:
    """Write a bundle folder atomically (built beside ``path``, then renamed into place)."""
    from speakerprint import __version__

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    config = {
        "format": BUNDLE_FORMAT,
        "format_version": BUNDLE_VERSION,
        "speakerprint_version": __version__,
        "torch_version": torch.__version__.split("+")[0],
        "model": {"family": encoder.family, "args": encoder.hparams},
        "features": fbank_config.to_dict(),
        "sample_rate": fbank_config.sample_rate,
        "embed_dim": encoder.embed_dim,
        "weights_dtype": str(dtype).removeprefix("torch."),
        "threshold": None if threshold is None else vars(threshold),
        "info": info or {},
    }
    state = {
        k: (v.to(dtype) if v.is_floating_point() else v).detach().cpu().contiguous()
        for k, v in encoder.state_dict().items()
    }
    with atomic_dir(path) as tmp:
        save_file(state, str(tmp / WEIGHTS_FILE), metadata={"format": BUNDLE_FORMAT})
        (tmp / CONFIG_FILE).write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    return path


def read_bundle_config(path: str | os.PathLike) -> dict[str, Any]:
    path = Path(path)
    if not path.is_dir():
        raise BundleError(f"model bundle {path} does not exist or is not a folder")
    try:
        config = json.loads((path / CONFIG_FILE).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise BundleError(f"model bundle {path}: {CONFIG_FILE} is missing") from None
    except json.JSONDecodeError as e:
        raise BundleError(f"model bundle {path}: {CONFIG_FILE} is not valid JSON: {e}") from None
    if config.get("format") != BUNDLE_FORMAT:
        raise BundleError(
            f"model bundle {path}: not a {BUNDLE_FORMAT} (format={config.get('format')!r})"
        )
    if config.get("format_version", 0) > BUNDLE_VERSION:
        raise BundleError(
            f"model bundle {path}: format version {config['format_version']} is newer than this "
            f"speakerprint understands ({BUNDLE_VERSION}); upgrade speakerprint"
        )
    return config


def load_bundle(path: str | os.PathLike, *, device: str | torch.device = "cpu") -> Bundle:
    """Rebuild encoder and features from a bundle; weights are loaded strictly, in float32."""
    path = Path(path)
    config = read_bundle_config(path)
    try:
        encoder = create_model(config["model"]["family"], **config["model"]["args"])
        fbank = frontend_from_dict(config["features"])
    except (KeyError, TypeError, ValueError) as e:
        raise BundleError(f"model bundle {path}: cannot rebuild the model: {e}") from None
    try:
        state = load_file(str(path / WEIGHTS_FILE))
    except FileNotFoundError:
        raise BundleError(f"model bundle {path}: {WEIGHTS_FILE} is missing") from None
    except Exception as e:
        raise BundleError(f"model bundle {path}: corrupt {WEIGHTS_FILE}: {e}") from None
    expected = encoder.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        raise BundleError(
            f"model bundle {path}: weights do not match the architecture "
            f"(missing: {missing[:5]}, unexpected: {unexpected[:5]})"
        )
    for k, v in state.items():
        if v.shape != expected[k].shape:
            raise BundleError(
                f"model bundle {path}: tensor {k} has shape {tuple(v.shape)}, "
                f"the architecture needs {tuple(expected[k].shape)}"
            )
    encoder.load_state_dict(
        {k: v.float() if v.is_floating_point() else v for k, v in state.items()}, strict=True
    )
    try:
        threshold = Threshold(**config["threshold"]) if config.get("threshold") else None
    except TypeError as e:
        raise BundleError(f"model bundle {path}: bad threshold in {CONFIG_FILE}: {e}") from None
    return Bundle(
        encoder=encoder.eval().to(device),
        fbank=fbank.eval().to(device),
        threshold=threshold,
        info=config.get("info", {}),
        calibration=config.get("calibration"),
    )


def set_bundle_decision(
    path: str | os.PathLike,
    threshold: Threshold,
    calibration: dict[str, Any] | None = None,
) -> None:
    """Replace a bundle's decision threshold (and score calibration) in its ``config.json``.

    Only ``config.json`` is rewritten, atomically; the weights, and so the bundle's embeddings
    and its fingerprint, stay as they are. ``calibration=None`` removes an old calibration,
    which was fitted on other trials than the new threshold.

    Raises:
        BundleError: the folder is not a readable bundle.
    """
    path = Path(path)
    config = read_bundle_config(path)
    config["threshold"] = vars(threshold).copy()
    config["calibration"] = calibration
    atomic_write_text(path / CONFIG_FILE, json.dumps(config, indent=2) + "\n")


def model_fingerprint(path: str | os.PathLike) -> str:
    """SHA-256 (hex) of what decides a bundle's embeddings: its weights file and the architecture,
    feature settings and sample rate of its ``config.json``.

    It is the model's identity: enrollment stores record it and refuse another model's
    embeddings, export sidecars record it, and the embedding cache keys on it (with the
    speakerprint version). The threshold, calibration and free-text info are left out, and so is
    the speakerprint version: re-measuring a threshold or upgrading speakerprint does not change
    the model.

    >>> model_fingerprint("runs/x/bundle")[:16]  # doctest: +SKIP
    '3f0c9a4e2b7d1c55'

    Raises:
        BundleError: the folder is not a readable bundle, or its weights file is missing.
    """
    return _fingerprint(Path(path), {})


def legacy_model_fingerprints(path: str | os.PathLike) -> list[str]:
    """The fingerprints that releases in :data:`LEGACY_FINGERPRINT_VERSIONS` gave this bundle.

    Those releases hashed their own version in, so every upgrade made a store refuse unchanged
    weights; an enrollment store that recorded one of these is rewritten to
    :func:`model_fingerprint` when opened with this bundle (never orphaned).

    Raises:
        BundleError: the folder is not a readable bundle, or its weights file is missing.
    """
    path = Path(path)
    return [
        _fingerprint(path, {"speakerprint_version": version})
        for version in LEGACY_FINGERPRINT_VERSIONS
    ]


def _fingerprint(path: Path, extra: dict[str, str]) -> str:
    config = read_bundle_config(path)
    described = {
        **extra,
        "model": config.get("model"),
        "features": config.get("features"),
        "sample_rate": config.get("sample_rate"),
    }
    digest = hashlib.sha256(json.dumps(described, sort_keys=True).encode())
    try:
        with open(path / WEIGHTS_FILE, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
    except FileNotFoundError:
        raise BundleError(f"model bundle {path}: {WEIGHTS_FILE} is missing") from None
    return digest.hexdigest()
