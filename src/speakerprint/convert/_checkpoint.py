"""The one reader of other toolkits' PyTorch checkpoints, shared by every converter.

Safe loading only (``torch.load(weights_only=True)``: a checkpoint from the internet runs no
code), on CPU; a state dict nested under a training wrapper's key is unwrapped; every entry must
be a tensor under a string key; and one prefix rule: the ``module.`` of DDP (and the ``model.`` of
Lightning) is dropped while every key carries it.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import torch

from speakerprint.errors import BundleError

__all__ = ["NESTING_KEYS", "WRAPPER_PREFIXES", "read_state_dict", "strip_wrapper_prefixes"]

# Keys a state dict is saved under by training code (Lightning, SpeechBrain's checkpointer,
# Resemblyzer and Real-Time-Voice-Cloning's model_state).
NESTING_KEYS = ("embedding_model", "state_dict", "model", "model_state_dict", "model_state")
# Prefixes a wrapper adds to every key: DDP's module., Lightning's model.
WRAPPER_PREFIXES = ("module.", "model.")
_MAX_NESTING = 3


def read_state_dict(source: str | os.PathLike | bytes, where: str) -> dict[str, torch.Tensor]:
    """The tensors of a checkpoint file (or its bytes, e.g. a member of an archive), by name.

    Args:
        source: the file, or its bytes.
        where: how messages name the checkpoint (its path, or archive and member).

    Raises:
        BundleError: the file is missing or not a PyTorch checkpoint, or holds something other
            than a non-empty state dict of tensors (the message names ``where`` and the problem).
    """
    if isinstance(source, bytes):
        stream: io.BytesIO | Path = io.BytesIO(source)
    else:
        stream = Path(source)
        if not stream.is_file():
            raise BundleError(f"{where}: no such checkpoint file")
    try:
        obj = torch.load(stream, map_location="cpu", weights_only=True)
    except Exception as e:  # pickle, zip and torch errors alike: the file is not a checkpoint
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise BundleError(f"{where}: not a readable PyTorch checkpoint ({reason[:200]})") from None
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
