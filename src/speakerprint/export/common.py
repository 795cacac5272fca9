"""What ONNX and TorchScript export share: the source model, the waveform wrapper, the sidecar."""

from __future__ import annotations

import copy
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from speakerprint.errors import BundleError
from speakerprint.features import Fbank, FbankConfig, min_samples
from speakerprint.features.fbank import ExportFbank
from speakerprint.models.base import EncoderModule
from speakerprint.models.bundle import Bundle, load_bundle
from speakerprint.utils.export_format import EXPORT_FORMAT, EXPORT_FORMAT_VERSION, sidecar_path
from speakerprint.utils.io import atomic_write_text

#: What the export functions take: a bundle folder, a loaded bundle, or a bare encoder.
Source = str | os.PathLike | Bundle | EncoderModule


class WaveformEncoder(nn.Module):
    """Features and encoder in one module: ``wav (B, N), lengths (B,) samples -> (B, D)``.

    Every ``lengths`` entry must be at least the bundle's ``min_samples`` (callers repeat shorter
    audio up to it, as :meth:`Bundle.embed_batch` does).
    """

    def __init__(self, fbank: ExportFbank, encoder: EncoderModule) -> None:
        super().__init__()
        self.fbank = fbank
        self.encoder = encoder

    def forward(self, wav: Tensor, lengths: Tensor) -> Tensor:
        feats, frame_lengths = self.fbank(wav, lengths)  # (B, T, F), (B,)
        return self.encoder(feats, frame_lengths)


@dataclass
class ExportSource:
    """An eval-mode copy of the encoder and what the sidecar says about where it came from."""

    encoder: EncoderModule
    fbank: Fbank
    threshold: dict[str, Any] | None
    bundle_path: str | None
    fingerprint: str | None

    @property
    def min_samples(self) -> int:
        return min_samples(self.fbank.config, self.encoder.min_frames)

    def module(self, with_features: bool) -> nn.Module:
        if with_features and not isinstance(self.fbank, Fbank):
            kind = self.fbank.config.to_dict().get("kind")
            raise BundleError(
                f"this model's features are {kind!r} features (a converted checkpoint), which "
                "only the Kaldi fbank graph can put inside an export: export without features "
                "(without --with-features; with_features=False) and compute them with the bundle"
            )
        if with_features:
            return WaveformEncoder(ExportFbank(self.fbank), self.encoder).eval()
        return self.encoder

    def sidecar(self, model_format: str, with_features: bool, **extra: Any) -> dict[str, Any]:
        from speakerprint import __version__

        return {
            "format": EXPORT_FORMAT,
            "format_version": EXPORT_FORMAT_VERSION,
            "model_format": model_format,
            "input_kind": "waveform" if with_features else "features",
            "inputs": (
                {"wav": "(B, N) float32 in [-1, 1]", "lengths": "(B,) int64 samples"}
                if with_features
                else {"feats": "(B, T, F) float32 fbank", "lengths": "(B,) int64 frames"}
            ),
            "output": "emb (B, D) float32, not length-normalised",
            "sample_rate": self.fbank.config.sample_rate,
            "embed_dim": self.encoder.embed_dim,
            "feat_dim": self.encoder.feat_dim,
            "min_frames": self.encoder.min_frames,
            "min_samples": self.min_samples,
            "features": self.fbank.config.to_dict(),
            "model": {"family": self.encoder.family, "args": self.encoder.hparams},
            "source_bundle": self.bundle_path,
            "source_bundle_fingerprint": self.fingerprint,
            "threshold": self.threshold,
            "speakerprint_version": __version__,
            "torch_version": torch.__version__.split("+")[0],
            **extra,
        }


def resolve_source(source: Source, fbank_config: FbankConfig | None = None) -> ExportSource:
    """Load a bundle folder (with its fingerprint) or wrap a bundle or encoder, as eval copies."""
    if isinstance(source, (str, os.PathLike)):
        from speakerprint.eval.cache import bundle_fingerprint

        bundle = load_bundle(source)
        return ExportSource(
            encoder=bundle.encoder.eval(),
            fbank=bundle.fbank.eval(),
            threshold=None if bundle.threshold is None else dict(vars(bundle.threshold)),
            bundle_path=str(source),
            fingerprint=bundle_fingerprint(source),
        )
    if isinstance(source, Bundle):
        return ExportSource(
            encoder=copy.deepcopy(source.encoder).cpu().eval(),
            fbank=copy.deepcopy(source.fbank).cpu().eval(),
            threshold=None if source.threshold is None else dict(vars(source.threshold)),
            bundle_path=None,
            fingerprint=None,
        )
    if isinstance(source, EncoderModule):
        # A bare encoder's default features: the standard fbank with as many bins as it takes.
        config = (
            fbank_config if fbank_config is not None else FbankConfig(num_mel_bins=source.feat_dim)
        )
        if config.num_mel_bins != source.feat_dim:
            raise BundleError(
                f"the fbank config has {config.num_mel_bins} mel bins, the model takes "
                f"{source.feat_dim} features per frame: pass fbank_config=FbankConfig("
                f"num_mel_bins={source.feat_dim})"
            )
        return ExportSource(
            encoder=copy.deepcopy(source).cpu().eval(),
            fbank=Fbank(config).eval(),
            threshold=None,
            bundle_path=None,
            fingerprint=None,
        )
    raise TypeError(
        f"export takes a bundle folder, a Bundle or an EncoderModule, got {type(source).__name__}"
    )


def write_sidecar(model_path: str | os.PathLike, meta: dict[str, Any]) -> Path:
    path = sidecar_path(model_path)
    atomic_write_text(path, json.dumps(meta, indent=2) + "\n")
    return path
