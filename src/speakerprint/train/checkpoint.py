"""Training checkpoints as safetensors + JSON: no pickle, nothing that can run code on load.

A checkpoint is a folder ``step_00001000/`` holding ``tensors.safetensors`` (every tensor of the
state: model, loss head, optimiser moments, RNG states) and ``state.json`` (everything else:
step, optimiser hyper-parameters, scaler scalars, the config, and the SHA-256 of the tensor file).
The folder is written under a temporary name and renamed into place, so a checkpoint either exists
whole or not at all; a crash during the write leaves the previous one untouched, and the temporary
folder it leaves is ignored (and removed on resume by :func:`remove_interrupted_writes`).

:class:`TrainState` is what a training run saves and restores: each key of a checkpoint is
written by its :meth:`~TrainState.state_dict` and read by its :meth:`~TrainState.load_state_dict`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from speakerprint.errors import BundleError, ConfigError
from speakerprint.models.bundle import load_bundle
from speakerprint.utils.hashing import sha256_file
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


def save_checkpoint(checkpoint_dir: str | os.PathLike, step: int, state: dict[str, Any]) -> Path:
    """Write ``state`` as ``checkpoint_dir/step_XXXXXXXX`` atomically and return that path."""
    checkpoint_dir = Path(checkpoint_dir)
    checkpoint_dir.mkdir(parents=True, exist_ok=True)
    final = checkpoint_dir / f"step_{step:08d}"
    with atomic_dir(final) as tmp:  # re-saving a step (the final one, say) replaces it whole
        tensors: dict[str, torch.Tensor] = {}
        tree = flatten_state(state, tensors)
        save_file(tensors, str(tmp / TENSORS_FILE))
        meta = {"step": step, "sha256": sha256_file(tmp / TENSORS_FILE), "state": tree}
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
    if sha256_file(tensor_file) != meta.get("sha256"):
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


def speaker_digest(speakers: list[str]) -> str:
    """A fingerprint of the label order: a classifier head is only reusable under the same one."""
    return hashlib.sha256("\n".join(speakers).encode("utf-8")).hexdigest()


@dataclass
class TrainState:
    """Everything a resumed run needs to continue exactly, saved and restored in one place.

    The objects are the run's own (restoring loads into them); ``step`` and
    ``bad_steps_in_a_row`` are kept current by the loop. A checkpoint holds the keys
    ``model``, ``loss``, ``optimizer``, ``scaler``, ``step``, ``num_speakers``,
    ``speaker_digest``, ``rng`` (``torch``, ``cuda``), ``config`` and ``bad_steps_in_a_row``;
    checkpoints of earlier releases, without the last, still load.
    """

    model: torch.nn.Module
    loss_fn: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler | None
    speakers: list[str]  # the label order
    config: dict[str, Any]  # the resolved config, saved for the record
    device: torch.device
    step: int = 0
    bad_steps_in_a_row: int = 0  # consecutive skipped (NaN/Inf) steps, carried across a resume

    def state_dict(self) -> dict[str, Any]:
        cuda = self.device.type == "cuda"
        return {
            "model": self.model.state_dict(),
            "loss": self.loss_fn.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict() if self.scaler is not None else None,
            "step": self.step,
            "num_speakers": len(self.speakers),
            "speaker_digest": speaker_digest(self.speakers),
            "rng": {
                "torch": torch.get_rng_state(),
                "cuda": torch.cuda.get_rng_state_all() if cuda else None,
            },
            "config": self.config,
            "bad_steps_in_a_row": self.bad_steps_in_a_row,
        }

    def load_state_dict(self, state: dict[str, Any], *, source: str | os.PathLike = "") -> None:
        """Restore weights, optimiser, scaler, RNG, step and bad-step count from ``state``.

        Raises:
            ConfigError: the checkpoint (``source``, for the message) was trained on another
                number of speakers.
        """
        if state["num_speakers"] != len(self.speakers):
            raise ConfigError(
                f"checkpoint {source} was trained on {state['num_speakers']} speakers, the "
                f"manifest has {len(self.speakers)}: resume with the same training data"
            )
        self.model.load_state_dict(state["model"], strict=True)
        self.loss_fn.load_state_dict(state["loss"], strict=True)
        self.optimizer.load_state_dict(state["optimizer"])
        if self.scaler is not None and state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        torch.set_rng_state(state["rng"]["torch"])
        if self.device.type == "cuda" and state["rng"].get("cuda") is not None:
            torch.cuda.set_rng_state_all(state["rng"]["cuda"])
        self.step = int(state["step"])
        self.bad_steps_in_a_row = int(state.get("bad_steps_in_a_row", 0))

    def save(self, checkpoint_dir: str | os.PathLike, *, keep: int) -> Path:
        """Write ``checkpoint_dir/step_XXXXXXXX`` for the current step; keep the newest ``keep``."""
        path = save_checkpoint(checkpoint_dir, self.step, self.state_dict())
        prune_checkpoints(checkpoint_dir, keep)
        return path


def init_weights(
    source: str | Path, model: torch.nn.Module, loss_fn: torch.nn.Module, speakers: list[str]
) -> str:
    """Load ``model.init_from`` into a fresh model: a run folder's newest checkpoint (encoder,
    and the loss head when it was trained with the same loss shapes on the same speakers) or a
    bundle (encoder only). Returns what was loaded, in words."""
    path = Path(source)
    loss_state = None
    if (path / "checkpoints").is_dir() and list_checkpoints(path / "checkpoints"):
        where, state = load_latest_checkpoint(path / "checkpoints")
        model_state = state["model"]
        if state.get("speaker_digest") == speaker_digest(speakers):
            loss_state = state["loss"]
    else:
        bundle_dir = path / "bundle" if (path / "bundle" / "config.json").is_file() else path
        if not (bundle_dir / "config.json").is_file():
            raise ConfigError(
                f"model.init_from={source}: not a run folder with checkpoints nor a model bundle"
            )
        where, model_state = bundle_dir, load_bundle(bundle_dir).encoder.state_dict()
    try:
        model.load_state_dict(model_state, strict=True)
    except RuntimeError as e:
        reason = str(e).splitlines()[0]
        raise ConfigError(
            f"model.init_from={source}: its weights do not fit this model ({reason})"
        ) from None
    own = loss_fn.state_dict()
    if (
        loss_state is not None
        and own
        and own.keys() == loss_state.keys()
        and all(own[k].shape == loss_state[k].shape for k in own)
    ):
        loss_fn.load_state_dict(loss_state, strict=True)
        return f"encoder and loss head from {where}"
    return f"encoder from {where} (loss head starts fresh)"
