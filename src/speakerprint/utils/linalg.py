"""Small numpy helpers on embedding matrices."""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike

__all__ = ["l2_normalize_rows"]


def l2_normalize_rows(x: ArrayLike, eps: float = 1e-12) -> np.ndarray:
    """Each row (the last axis) divided by its L2 norm, a norm under ``eps`` taken as ``eps`` so
    an all-zero row stays zero instead of NaN. Keeps the dtype of a float array.

    >>> l2_normalize_rows(np.array([[3.0, 4.0], [0.0, 0.0]]))
    array([[0.6, 0.8],
           [0. , 0. ]])
    """
    x = np.asarray(x)
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), eps)
