"""Training checkpoints as safetensors + JSON: no pickle, nothing that can run code on load.

A checkpoint is a folder ``step_00001000/`` holding ``tensors.safetensors`` (every tensor of the
state: model, loss head, optimiser moments, RNG states) and ``state.json`` (everything else:
step, optimiser hyper-parameters, scaler scalars, the config, and the SHA-256 of the tensor file).
The folder is written under a temporary name and renamed into place, so a checkpoint either exists
whole or not at all; a crash during the write leaves the previous one untouched, and the temporary
folder it leaves is ignored (and removed on resume by :func:`remove_interrupted_writes`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from speakerprint.errors import BundleError
from speakerprint.utils.io import atomic_dir

log = logging.getLogger(__name__)
_STEP_DIR = re.compile(r"^step_(\d{8})$")
# What utils.io.atomic_dir names its work: ".step_XXXXXXXX.<random>" and ".step_XXXXXXXX.old.<random>".
_TEMP_DIR = re.compile(r"^\.step_\d{8}\.")
TENSORS_FILE = "tensors.safetensors"
STATE_FILE = "state.json"


def flatten_state(obj: Any, tensors: dict[str, torch.Tensor], prefix: str = "t") -> Any:
    """Replace every tensor in a nested structure by a reference; collect the tensors.

    Dicts with non-string keys (optimiser state is keyed by parameter index) are stored as
    key/value lists so that JSON does not turn their keys into strings.
    """
    if isinstance(obj, torch.Tensor):
        tensors[prefix] = obj.detach().cpu().contiguous()
        return {"__tensor__": prefix}
    if isinstance(obj, dict):
        if all(isinstance(k, str) for k in obj):
            return {k: flatten_state(v, tensors, f"{prefix}.{k}") for k, v in obj.items()}
        return {
            "__items__": [[k, flatten_state(v, tensors, f"{prefix}.{k}")] for k, v in obj.items()]
        }
    if isinstance(obj, (list, tuple)):
        items = [flatten_state(v, tensors, f"{prefix}.{i}") for i, v in enumerate(obj)]
        return {"__tuple__": items} if isinstance(obj, tuple) else items
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    raise TypeError(f"cannot store {type(obj).__name__} at {prefix} in a checkpoint")


def unflatten_state(obj: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(obj, dict):
        if "__tensor__" in obj:
            return tensors[obj["__tensor__"]]
        if "__items__" in obj:
            return {k: unflatten_state(v, tensors) for k, v in obj["__items__"]}
        if "__tuple__" in obj:
            return tuple(unflatten_state(v, tensors) for v in obj["__tuple__"])
        return {k: unflatten_state(v, tensors) for k, v in obj.items()}
    if isinstance(obj, list):
        return [unflatten_state(v, tensors) for v in obj]
    return obj


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def save_checkpoint(checkpoint_dir: str | os.PathLike, step: int, state: dict[str, Any]) -> Path:
    """Write ``state`` as ``checkpoint_dir/step_XXXXXXXX`` atomically and return that path."""
    checkpoint_dir = Path(checkpoint_dir)
    checkpoint_dir.mkdir(parents=True, exist_ok=True)
    final = checkpoint_dir / f"step_{step:08d}"
    with atomic_dir(final) as tmp:  # re-saving a step (the final one, say) replaces it whole
        tensors: dict[str, torch.Tensor] = {}
        tree = flatten_state(state, tensors)
        save_file(tensors, str(tmp / TENSORS_FILE))
        meta = {"step": step, "sha256": _sha256(tmp / TENSORS_FILE), "state": tree}
        (tmp / STATE_FILE).write_text(json.dumps(meta), encoding="utf-8")
    return final


def load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Load a checkpoint folder; verifies its checksum. Raises BundleError if it is unusable."""
    path = Path(path)
    try:
        meta = json.loads((path / STATE_FILE).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise BundleError(f"checkpoint {path}: cannot read {STATE_FILE}: {e}") from None
    tensor_file = path / TENSORS_FILE
    if not tensor_file.is_file():
        raise BundleError(f"checkpoint {path}: {TENSORS_FILE} is missing")
    if _sha256(tensor_file) != meta.get("sha256"):
        raise BundleError(f"checkpoint {path}: {TENSORS_FILE} does not match its checksum")
    try:
        tensors = load_file(str(tensor_file))
    except Exception as e:  # safetensors raises several types for corrupt files
        raise BundleError(f"checkpoint {path}: corrupt tensor file: {e}") from None
    return unflatten_state(meta["state"], tensors)


def list_checkpoints(checkpoint_dir: str | os.PathLike) -> list[Path]:
    """Complete checkpoints, oldest first (temporary folders of interrupted writes are ignored)."""
    checkpoint_dir = Path(checkpoint_dir)
    if not checkpoint_dir.is_dir():
        return []
    found = [p for p in checkpoint_dir.iterdir() if p.is_dir() and _STEP_DIR.match(p.name)]
    return sorted(found, key=lambda p: p.name)


def load_latest_checkpoint(checkpoint_dir: str | os.PathLike) -> tuple[Path, dict[str, Any]] | None:
    """The newest checkpoint that loads and passes its checksum; older ones are the fallback."""
    errors = []
    for path in reversed(list_checkpoints(checkpoint_dir)):
        try:
            return path, load_checkpoint(path)
        except BundleError as e:
            log.warning("%s; falling back to the previous checkpoint", e)
            errors.append(str(e))
    if errors:
        raise BundleError("no usable checkpoint: " + "; ".join(errors))
    return None


def remove_interrupted_writes(checkpoint_dir: str | os.PathLike) -> list[Path]:
    """Delete the temporary folders that writes killed midway left behind; returns them.

    They are never taken for checkpoints (:func:`list_checkpoints` ignores them) but would
    accumulate over many pre-emptions. Call it only when no other process is writing here.
    """
    checkpoint_dir = Path(checkpoint_dir)
    if not checkpoint_dir.is_dir():
        return []
    stale = [
        p for p in checkpoint_dir.iterdir() if p.is_dir() and _TEMP_DIR.match(p.name) is not None
    ]
    for path in stale:
        log.warning("removing %s, left by a checkpoint write that was interrupted", path)
        shutil.rmtree(path, ignore_errors=True)
    return stale


def prune_checkpoints(checkpoint_dir: str | os.PathLike, keep: int) -> None:
    if keep <= 0:
        return
    for path in list_checkpoints(checkpoint_dir)[:-keep]:
        shutil.rmtree(path, ignore_errors=True)
