"""TorchScript export of a bundle or an encoder, with or without its features, to one ``.pt`` file.

The encoder is compiled with :func:`speakerprint.models.script_encoder` (``torch.jit.script``, so
every batch size and length runs through one graph); with features, the waveform wrapper around
:class:`~speakerprint.features.fbank.ExportFbank` is scripted the same way. The file loads with
``torch.jit.load`` and runs without the speakerprint package.
"""

from __future__ import annotations

import io
import os
import warnings
from pathlib import Path

import torch

from speakerprint.export.common import Source, resolve_source, write_sidecar
from speakerprint.features import FbankConfig
from speakerprint.models.export import script_encoder
from speakerprint.utils.io import atomic_write_bytes

__all__ = ["export_torchscript"]


def export_torchscript(
    bundle_or_model: Source,
    path: str | os.PathLike,
    *,
    with_features: bool,
    fbank_config: FbankConfig | None = None,
) -> Path:
    """Write a TorchScript model and its sidecar JSON (``path + '.json'``).

    ``forward`` takes ``(wav (B, N) float32, lengths (B,) samples)`` with features, each length at
    least the sidecar's ``min_samples``, or ``(feats (B, T, F), lengths (B,) frames)`` without,
    and returns ``(B, D)`` float32 embeddings. Arguments as in
    :func:`speakerprint.export.export_onnx`.

    >>> export_torchscript("runs/x/bundle", "x.pt", with_features=True)  # doctest: +SKIP
    >>> torch.jit.load("x.pt")(wav, lengths).shape                        # doctest: +SKIP
    torch.Size([1, 192])
    """
    source = resolve_source(bundle_or_model, fbank_config)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "`torch.jit.*` is deprecated", DeprecationWarning)
        if with_features:
            module = source.module(with_features=True)
            try:
                scripted = torch.jit.script(module)
            except Exception as err:
                raise RuntimeError(
                    f"TorchScript cannot compile model family {source.encoder.family!r} with "
                    f"its features: {err}"
                ) from err
        else:
            scripted = script_encoder(source.encoder)
        buffer = io.BytesIO()
        torch.jit.save(scripted, buffer)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, buffer.getvalue())
    write_sidecar(path, source.sidecar("torchscript", with_features, quantization=None))
    return path
