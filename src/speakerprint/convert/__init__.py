"""Convert the public pretrained checkpoints of peer toolkits into speakerprint bundles.

Each source is a module of this package with ``convert(checkpoint, out, *, config=None) -> Path``
that reads the peer's files (never importing the peer's code), maps its weights onto a speakerprint
encoder whose layout arguments reproduce the peer's architecture, records the peer's feature
settings, and writes a bundle that gives the peer's embeddings:

========== ===================================================== ===============================
source     files                                                 models
========== ===================================================== ===============================
speechbrain ``embedding_model.ckpt`` (+ ``hyperparams.yaml``)     ECAPA-TDNN (spkrec-ecapa-voxceleb)
wespeaker  ``avg_model.pt`` + ``config.yaml``                    ECAPA-TDNN, ResNet34
nemo       ``*.nemo`` archive                                    TitaNet
========== ===================================================== ===============================
"""

from __future__ import annotations

import importlib
import os
from pathlib import Path

from speakerprint.errors import ConfigError

SOURCES = ("speechbrain", "wespeaker", "nemo")


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
