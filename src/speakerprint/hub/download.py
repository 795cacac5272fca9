"""Fetch a catalog model's files through huggingface_hub, pinned to its revision, and check each
against its sha256 before anything reads it.

huggingface_hub keeps the files in its own cache and downloads to ``*.incomplete`` names that it
renames only when complete; on top of that, a file that does not hash to the pinned value is
deleted (blob and link) and so is any ``*.incomplete`` left by an interrupted transfer, so the
next call starts over and nothing half-written is ever converted.

The endpoint (``HF_ENDPOINT``) and offline mode (``HF_HUB_OFFLINE``) are read at each call, not
at import as huggingface_hub itself does, so that they can be set after the package is loaded.
"""

from __future__ import annotations

import os
from pathlib import Path

from speakerprint.errors import BundleError, ModelUnavailableError
from speakerprint.hub.cache import hf_cache_dir
from speakerprint.hub.catalog import PretrainedModel
from speakerprint.utils.hashing import sha256_file

__all__ = ["fetch_files", "offline", "unavailable_message"]


def offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in {"1", "true", "yes", "on"}


def _mb(size: int) -> str:
    return f"{size / 1e6:.1f} MB"


def unavailable_message(entry: PretrainedModel, reason: str) -> str:
    """One paragraph: which model, why it cannot be had, the files it needs, how to give them."""
    files = ", ".join(f"{f.name} ({_mb(f.size)}, sha256 {f.sha256[:12]}...)" for f in entry.files)
    where = f"https://huggingface.co/{entry.hub_id}/tree/{entry.revision}"
    return (
        f"model {entry.alias!r} ({entry.hub_id} at revision {entry.revision[:12]}) is not in the "
        f"cache and cannot be downloaded: {reason}. It needs {files} from {where}: put them in "
        "one folder and pass that folder as the model (a local folder never touches the network), "
        "or run once where the hub can be reached"
    )


def _repo_folder(cache_dir: Path, hub_id: str) -> Path:
    return cache_dir / ("models--" + hub_id.replace("/", "--"))


def _remove_incomplete(cache_dir: Path, hub_id: str) -> None:
    blobs = _repo_folder(cache_dir, hub_id) / "blobs"
    if blobs.is_dir():
        for item in blobs.glob("*.incomplete"):
            item.unlink(missing_ok=True)


def _discard(path: Path) -> None:
    """Remove a cached file: the blob it links to, then the link."""
    if path.is_symlink():
        blob = path.resolve()
        blob.unlink(missing_ok=True)
    path.unlink(missing_ok=True)


def _reason(error: Exception) -> str:
    from huggingface_hub import errors

    if isinstance(error, errors.GatedRepoError):
        return (
            "the repository is gated: accept its conditions on huggingface.co and log in "
            "(`hf auth login`, or set HF_TOKEN)"
        )
    if isinstance(error, errors.RevisionNotFoundError):
        return "the pinned revision is not on the hub"
    if isinstance(error, errors.RepositoryNotFoundError):
        return "the repository is not on the hub (or needs a token)"
    if isinstance(error, errors.LocalEntryNotFoundError):
        return "the hub cannot be reached" + (" (HF_HUB_OFFLINE is set)" if offline() else "")
    if isinstance(error, errors.EntryNotFoundError):
        return "a file is missing from the repository"
    first = str(error).strip().splitlines()[0] if str(error).strip() else ""
    return f"{type(error).__name__}: {first}"[:300]


def fetch_files(entry: PretrainedModel) -> Path:
    """Download (or find in huggingface_hub's cache) every file of ``entry``; return the folder
    that holds them, in the repository's layout.

    Raises:
        ModelUnavailableError: no network (or offline) and not cached, a gated or missing
            repository, revision or file, or an interrupted transfer: names the model, the
            files and how to give them by hand.
        BundleError: a file whose sha256 is not the pinned one (it has been deleted).
    """
    try:
        from huggingface_hub import hf_hub_download
    except ImportError:  # a core dependency; only a broken install lacks it
        raise ModelUnavailableError(
            "downloading models needs huggingface_hub: pip install huggingface_hub"
        ) from None

    cache_dir = hf_cache_dir()
    endpoint = os.environ.get("HF_ENDPOINT") or None
    folder = None
    for hub_file in entry.files:
        try:
            path = Path(
                hf_hub_download(
                    entry.hub_id,
                    hub_file.name,
                    revision=entry.revision,
                    cache_dir=cache_dir,
                    local_files_only=offline(),
                    endpoint=endpoint,
                )
            )
        except Exception as error:  # huggingface_hub's and the transport's, all of them
            _remove_incomplete(cache_dir, entry.hub_id)
            raise ModelUnavailableError(
                unavailable_message(entry, f"{hub_file.name}: {_reason(error)}")
            ) from None
        digest = sha256_file(path)
        if digest != hub_file.sha256:
            size = path.stat().st_size
            _discard(path)
            raise BundleError(
                f"model {entry.alias!r}: {hub_file.name} from {entry.hub_id} has sha256 "
                f"{digest} ({size} bytes), not the pinned {hub_file.sha256} ({hub_file.size} "
                "bytes); the file was deleted from the cache, and the next call downloads it again"
            )
        if folder is None:  # the snapshot folder: the file's path minus its path in the repo
            folder = path
            for _ in Path(hub_file.name).parts:
                folder = folder.parent
    assert folder is not None  # every entry has at least one file
    return folder
