"""Where converted bundles live: ``$SPEAKERPRINT_CACHE``, else ``$XDG_CACHE_HOME/speakerprint``,
else ``~/.cache/speakerprint``. Read at each call, so a test or a user can move it at any time.

Layout (every folder is complete or absent: each is built under a temporary name and renamed):

    hub/<alias>/<revision>/          bundle converted from a catalog model's pinned files
    local/<source>-<sha256[:16]>/    bundle converted from a local checkpoint, keyed by its content

Raw downloads are not kept here but in huggingface_hub's own cache (``HF_HUB_CACHE`` /
``HF_HOME``), shared with every other tool that reads the hub, so a model another tool already
fetched is not fetched again.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

CACHE_ENV = "SPEAKERPRINT_CACHE"


def cache_root() -> Path:
    """The cache folder (not created here)."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "speakerprint"


def hf_cache_dir() -> Path:
    """huggingface_hub's cache folder, by its own rules, read now rather than at its import."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]).expanduser() / "hub"
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "huggingface" / "hub"


@contextlib.contextmanager
def locked(target: Path) -> Iterator[None]:
    """Hold an exclusive lock for building ``target``, so that two processes never convert the
    same model at once; what an earlier interrupted build left beside it is removed first."""
    from filelock import FileLock  # a dependency of huggingface_hub

    target.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(target.parent / f".{target.name}.lock")):
        for item in target.parent.glob(f".{target.name}.*"):
            if item.is_dir():  # atomic_dir's temporaries of an interrupted build
                shutil.rmtree(item, ignore_errors=True)
        yield
