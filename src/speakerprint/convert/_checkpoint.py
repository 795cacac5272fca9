"""The one reader of other toolkits' PyTorch checkpoints, shared by every converter.

Safe loading only (``torch.load(weights_only=True)``: a checkpoint from the internet runs no
code), on CPU; a state dict nested under a training wrapper's key is unwrapped; every entry must
be a tensor under a string key; and one prefix rule: the ``module.`` of DDP (and the ``model.`` of
Lightning) is dropped while every key carries it.

Some toolkits pickle their own classes beside the weights (pyannote's task ``Specifications``, its
``Problem`` and ``Resolution`` enums). :func:`read_checkpoint` with ``inert_packages`` reads those
as :class:`Inert` stand-ins that only record what the pickle gave them: nothing of the toolkit is
imported or called, and a global from any other package (``os.system``...) is refused by name.
"""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Any

import torch

from speakerprint.errors import BundleError

__all__ = [
    "load_prefixed",
    "map_prefixed",
    "NESTING_KEYS",
    "WRAPPER_PREFIXES",
    "Inert",
    "read_checkpoint",
    "read_state_dict",
    "state_dict_of",
    "strip_wrapper_prefixes",
]

# Not in torch's weights_only allowlist but plain data: the str subclass of torch.__version__,
# which Lightning-era checkpoints save among their versions.
_ALSO_SAFE = {"torch.torch_version.TorchVersion": torch.torch_version.TorchVersion}
# Keys a state dict is saved under by training code (Lightning, SpeechBrain's checkpointer,
# Resemblyzer and Real-Time-Voice-Cloning's model_state).
NESTING_KEYS = ("embedding_model", "state_dict", "model", "model_state_dict", "model_state")
# Prefixes a wrapper adds to every key: DDP's module., Lightning's model.
WRAPPER_PREFIXES = ("module.", "model.")
_MAX_NESTING = 3


class Inert:
    """What a pickled object of an allowed toolkit class becomes: its name and the data it was
    pickled with, no behaviour. ``Problem(1)`` reads as ``args == (1,)``; a dataclass's fields
    land in ``__dict__``."""

    qualified_name = "Inert"

    def __new__(cls, *args: Any) -> Inert:  # NEWOBJ calls __new__ alone, REDUCE the class
        self = super().__new__(cls)
        self.args = args
        return self

    def __init__(self, *args: Any) -> None:
        pass

    def __repr__(self) -> str:
        return f"<inert {self.qualified_name}{self.args if self.args else ''}>"


def read_state_dict(
    source: str | os.PathLike | bytes, where: str, *, inert_packages: tuple[str, ...] = ()
) -> dict[str, torch.Tensor]:
    """The tensors of a checkpoint file (or its bytes, e.g. a member of an archive), by name.

    Args:
        source: the file, or its bytes.
        where: how messages name the checkpoint (its path, or archive and member).
        inert_packages: as for :func:`read_checkpoint`.

    Raises:
        BundleError: the file is missing or not a PyTorch checkpoint, or holds something other
            than a non-empty state dict of tensors (the message names ``where`` and the problem).
    """
    return state_dict_of(read_checkpoint(source, where, inert_packages=inert_packages), where)


def read_checkpoint(
    source: str | os.PathLike | bytes, where: str, *, inert_packages: tuple[str, ...] = ()
) -> Any:
    """Everything a checkpoint holds, read safely: tensors, plain containers and numbers, and for
    classes of ``inert_packages`` (top-level package names, e.g. ``("pyannote",)``) :class:`Inert`
    stand-ins.

    Raises:
        BundleError: the file is missing, not a PyTorch checkpoint, or pickles a global that is
            neither safe nor from ``inert_packages`` (named).
    """
    if isinstance(source, bytes):
        stream: io.BytesIO | Path = io.BytesIO(source)
    else:
        stream = Path(source)
        if not stream.is_file():
            raise BundleError(f"{where}: no such checkpoint file")
    stand_ins = _stand_ins(stream, where, inert_packages) if inert_packages else []
    try:
        with torch.serialization.safe_globals(stand_ins):
            return torch.load(stream, map_location="cpu", weights_only=True)
    except Exception as e:  # pickle, zip and torch errors alike: the file is not a checkpoint
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise BundleError(f"{where}: not a readable PyTorch checkpoint ({reason[:200]})") from None


def _stand_ins(
    stream: io.BytesIO | Path, where: str, inert_packages: tuple[str, ...]
) -> list[tuple[type, str]]:
    """An :class:`Inert` subclass per global of ``inert_packages`` that the pickle names; any other
    global that ``weights_only`` loading would refuse is refused here, by name."""
    try:
        unsafe = torch.serialization.get_unsafe_globals_in_checkpoint(stream)
    except Exception as e:  # not a zip checkpoint, or an opcode the scan does not know
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise BundleError(f"{where}: not a readable PyTorch checkpoint ({reason[:200]})") from None
    finally:
        if isinstance(stream, io.BytesIO):
            stream.seek(0)
    unsafe = [name for name in unsafe if name not in _ALSO_SAFE]
    refused = sorted(name for name in unsafe if name.split(".")[0] not in inert_packages)
    if refused:
        raise BundleError(
            f"{where}: refusing to load: it pickles {', '.join(refused[:8])}, which is neither a "
            f"tensor, a plain container nor a class of {', '.join(inert_packages)}"
        )
    stand_ins = [(type(name, (Inert,), {"qualified_name": name}), name) for name in sorted(unsafe)]
    return stand_ins + [(cls, name) for name, cls in _ALSO_SAFE.items()]


def state_dict_of(obj: Any, where: str) -> dict[str, torch.Tensor]:
    """The state dict in a loaded checkpoint (unnested, wrapper prefixes stripped).

    Raises:
        BundleError: ``obj`` holds something other than a non-empty state dict of tensors.
    """
    for _ in range(_MAX_NESTING):  # a state dict under a key, e.g. {"state_dict": {...}}
        if not isinstance(obj, dict) or any(isinstance(v, torch.Tensor) for v in obj.values()):
            break
        nested = [key for key in NESTING_KEYS if isinstance(obj.get(key), dict)]
        if not nested:
            break
        obj = obj[nested[0]]
    if not isinstance(obj, dict) or not obj:
        raise BundleError(f"{where}: holds a {type(obj).__name__}, not a state dict of tensors")
    not_tensors = sorted(
        repr(k) for k, v in obj.items() if not (isinstance(k, str) and isinstance(v, torch.Tensor))
    )
    if not_tensors:
        raise BundleError(f"{where}: entries that are not tensors: {', '.join(not_tensors[:8])}")
    return strip_wrapper_prefixes(obj)


def strip_wrapper_prefixes(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``state`` without the prefix a wrapper put on every key, however many times it did.

    >>> strip_wrapper_prefixes({"module.fc.weight": 1, "module.fc.bias": 2})
    {'fc.weight': 1, 'fc.bias': 2}
    >>> strip_wrapper_prefixes({"module.fc.weight": 1, "fc.bias": 2})  # not every key: kept
    {'module.fc.weight': 1, 'fc.bias': 2}
    """
    while state:
        prefix = next((p for p in WRAPPER_PREFIXES if all(k.startswith(p) for k in state)), None)
        if prefix is None:
            break
        state = {key[len(prefix) :]: value for key, value in state.items()}
    return state


def map_prefixed(
    path: Path,
    encoder: torch.nn.Module,
    state: dict[str, torch.Tensor],
    prefixes: list[tuple[str, str]],
    adapt=None,
) -> dict[str, torch.Tensor]:
    """``state`` (a peer's names) under ``encoder``'s names, strictly: every encoder tensor comes
    from the peer key its one matching ``(peer_prefix, our_prefix)`` pair gives, and a missing,
    unexpected or misshapen tensor is a :class:`BundleError` naming ``path`` and the keys.
    ``adapt(our_key, tensor)`` may reshape a tensor first (a k=1 Conv1d read as a Linear).
    Tensors are cast to the encoder's dtypes."""
    target = encoder.state_dict()
    ours_to_peer = {}
    for key in target:
        found = [(p, o) for p, o in prefixes if key.startswith(o)]
        if len(found) != 1:  # a mapping bug, not a user error
            raise AssertionError(f"speakerprint tensor {key} matches {len(found)} prefixes")
        peer, ours = found[0]
        ours_to_peer[key] = peer + key[len(ours) :]
    expected = set(ours_to_peer.values())
    missing = sorted(expected - set(state))
    unexpected = sorted(set(state) - expected)
    if missing or unexpected:
        problems = []
        if missing:
            problems.append(f"missing tensors {missing[:8]} ({len(missing)} in all)")
        if unexpected:
            problems.append(
                f"tensors that are not part of this model {unexpected[:8]} "
                f"({len(unexpected)} in all)"
            )
        raise BundleError(f"{path}: " + "; ".join(problems))
    renamed = {}
    for ours, peer in ours_to_peer.items():
        tensor = state[peer] if adapt is None else adapt(ours, state[peer])
        if tensor.shape != target[ours].shape:
            raise BundleError(
                f"{path}: tensor {peer!r} has shape {tuple(state[peer].shape)}, "
                f"the model needs {tuple(target[ours].shape)}"
            )
        renamed[ours] = tensor.to(target[ours].dtype)
    return renamed


def load_prefixed(
    path: Path,
    encoder: torch.nn.Module,
    state: dict[str, torch.Tensor],
    prefixes: list[tuple[str, str]],
) -> dict[str, torch.Tensor]:
    """:func:`map_prefixed`, loaded into ``encoder`` strictly; the encoder is left in eval mode."""
    renamed = map_prefixed(path, encoder, state, prefixes)
    encoder.load_state_dict(renamed, strict=True)
    encoder.eval()
    return renamed
