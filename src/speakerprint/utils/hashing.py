"""The sha256 of a file, read in 1 MiB chunks (weights files are too large to read whole)."""

from __future__ import annotations

import hashlib
import os

__all__ = ["sha256_file"]

_CHUNK_BYTES = 1 << 20


def sha256_file(path: str | os.PathLike) -> str:
    """The hex sha256 digest of the file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK_BYTES), b""):
            digest.update(chunk)
    return digest.hexdigest()
