"""Convert the public pretrained checkpoints of peer toolkits into speakerprint bundles.

Each source is a module of this package with ``convert(checkpoint, out, *, config=None) -> Path``
that reads the peer's files (never importing the peer's code), maps its weights onto a speakerprint
encoder whose layout arguments reproduce the peer's architecture, records the peer's feature
settings, and writes a bundle that gives the peer's embeddings:

=========== ===================================================== ================================
source      files                                                 models
=========== ===================================================== ================================
speechbrain ``embedding_model.ckpt`` (+ ``hyperparams.yaml``)     ECAPA-TDNN, x-vector (spkrec-*)
wespeaker   ``avg_model.pt`` + ``config.yaml``                    ECAPA-TDNN, ResNet34/152/221/293
nemo        ``*.nemo`` archive                                    TitaNet
pyannote    ``pytorch_model.bin`` (a Lightning checkpoint)        WeSpeaker ResNet34 (and 152...)
resemblyzer ``pretrained.pt`` (in the ``resemblyzer`` wheel)      GE2E LSTM (VoiceEncoder)
speakerlab  ``*.bin``/``*.ckpt`` + ``configuration.json``          CAM++, ERes2Net, ERes2NetV2
=========== ===================================================== ================================

A local file or folder in a toolkit's own layout is recognised by :func:`recognise`: each source
module also has ``find(path) -> (checkpoint, config) | None``, which answers whether ``path`` (a
file or a folder) is laid out as that toolkit ships its models, and where the files are. ``find``
looks at names and, where names are not enough, at the tensor names inside; it never builds a model.
"""

from __future__ import annotations

import importlib
import os
from pathlib import Path

from speakerprint.errors import BundleError, ConfigError

SOURCES = ("speechbrain", "wespeaker", "nemo", "pyannote", "resemblyzer", "speakerlab")


def recognise(path: str | os.PathLike) -> tuple[str, Path, Path | None]:
    """Which toolkit's layout ``path`` is in: ``(source, checkpoint, config or None)``.

    Raises:
        BundleError: ``path`` does not exist, or no source recognises it (the message lists what
            each source expects).
    """
    path = Path(path)
    if not path.exists():
        raise BundleError(f"{path} does not exist")
    found = []
    for source in SOURCES:
        hit = importlib.import_module(f"speakerprint.convert.{source}").find(path)
        if hit is not None:
            found.append((source, *hit))
    if len(found) > 1:
        raise BundleError(
            f"{path} looks like a checkpoint of several toolkits ({', '.join(f[0] for f in found)}); "
            "convert it with `speakerprint convert SOURCE` to say which"
        )
    if not found:
        expected = "; ".join(
            f"{source}: {importlib.import_module(f'speakerprint.convert.{source}').LAYOUT}"
            for source in SOURCES
        )
        raise BundleError(
            f"{path} is neither a speakerprint bundle (config.json + model.safetensors) nor a "
            f"checkpoint in a known toolkit's layout ({expected})"
        )
    return found[0]


def convert(
    source: str,
    checkpoint: str | os.PathLike,
    out: str | os.PathLike,
    *,
    config: str | os.PathLike | None = None,
) -> Path:
    """Write a bundle at ``out`` from a ``source`` checkpoint (and its config file, if separate)."""
    if source not in SOURCES:
        raise ConfigError(f"unknown checkpoint source {source!r}; known: {list(SOURCES)}")
    module = importlib.import_module(f"speakerprint.convert.{source}")
    return module.convert(
        Path(checkpoint), Path(out), config=None if config is None else Path(config)
    )
