"""Precision helpers shared by layers that must not compute in half precision."""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["upcast"]


def upcast(x: Tensor) -> Tensor:
    """``x`` in float32 if it is float16 or bfloat16, else unchanged (float64 stays float64).

    Statistics, norms and margins are computed in at least float32 under autocast; a float64 run
    (used to measure float32 rounding, see ``tests/train/test_distributed.py``) keeps its precision.
    Scriptable.

    >>> upcast(torch.zeros(2, dtype=torch.bfloat16)).dtype, upcast(torch.zeros(2, dtype=torch.float64)).dtype
    (torch.float32, torch.float64)
    """
    if x.dtype == torch.float16 or x.dtype == torch.bfloat16:
        return x.float()
    return x
