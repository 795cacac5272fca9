"""The sidecar JSON of an exported model: its name, format and check, shared by the writer
(``speakerprint.export``, which needs torch) and the reader (``speakerprint.onnx_runtime``, which
must not). Nothing here imports torch."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from speakerprint.errors import BundleError

__all__ = ["EXPORT_FORMAT", "EXPORT_FORMAT_VERSION", "INPUT_KINDS", "read_sidecar", "sidecar_path"]

EXPORT_FORMAT = "speakerprint-export"
EXPORT_FORMAT_VERSION = 1
INPUT_KINDS = ("waveform", "features")


def sidecar_path(model_path: str | os.PathLike) -> Path:
    """The sidecar JSON of an exported model: ``model.onnx`` -> ``model.onnx.json``."""
    model_path = Path(model_path)
    return model_path.with_name(model_path.name + ".json")


def read_sidecar(model_path: str | os.PathLike) -> dict[str, Any]:
    """Read and check the sidecar of an exported model.

    Raises:
        BundleError: the sidecar is missing, not JSON, not an export sidecar, or newer than this
            speakerprint understands.
    """
    path = sidecar_path(model_path)
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise BundleError(
            f"exported model {model_path}: its sidecar {path} is missing "
            "(it is written by `speakerprint export` beside the model)"
        ) from None
    except json.JSONDecodeError as e:
        raise BundleError(f"sidecar {path} is not valid JSON: {e}") from None
    if not isinstance(meta, dict) or meta.get("format") != EXPORT_FORMAT:
        raise BundleError(f"sidecar {path}: not a {EXPORT_FORMAT} sidecar")
    if meta.get("format_version", 0) > EXPORT_FORMAT_VERSION:
        raise BundleError(
            f"sidecar {path}: format version {meta['format_version']} is newer than this "
            f"speakerprint understands ({EXPORT_FORMAT_VERSION}); upgrade speakerprint"
        )
    missing = [
        k for k in ("input_kind", "sample_rate", "embed_dim", "min_samples") if k not in meta
    ]
    if missing or meta["input_kind"] not in INPUT_KINDS:
        raise BundleError(f"sidecar {path}: missing or bad fields {missing or ['input_kind']}")
    return meta
