"""Linear score fusion of several systems, fitted by prior-weighted logistic regression.

Two systems that err on different trials do better together: the fused score is the LLR
``llr = sum_s weight_s * score_s + offset``, fitted on development trials that every system
scored (the same trial list, line for line) with the objective of
:func:`speakerprint.eval.calibration.fit_calibration`, of which fusion is the many-column case.
The fused scores are therefore calibrated LLRs as well.

>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> labels = np.repeat([1, 0], 500)
>>> a = labels + rng.normal(size=1000)
>>> b = labels + rng.normal(size=1000)  # independent errors: fusion helps
>>> fusion = fit_fusion([a, b], labels, names=("a", "b"))
>>> w = fusion.weights
>>> bool(w[0] > 0 and w[1] > 0 and abs(w[0] - w[1]) < 0.5)
True
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike

from speakerprint.eval.calibration import _fit_logistic
from speakerprint.eval.metrics import _validate

__all__ = ["Fusion", "fit_fusion"]


@dataclass(frozen=True)
class Fusion:
    """An affine map from several systems' scores to one LLR.

    Attributes:
        weights: one per system, in the order of ``names``.
        offset: LLR when every score is 0.
        names: the systems, in words (e.g. their score files).
        p_target: the prior the fit was weighted for, or None for the trial list's own.
    """

    weights: tuple[float, ...]
    offset: float
    names: tuple[str, ...]
    p_target: float | None = 0.01

    def llr(self, columns: Sequence[ArrayLike]) -> np.ndarray:
        """Fused LLRs (N,) of the systems' scores, one (N,) array per system."""
        matrix = _columns(columns, len(self.weights))
        return matrix @ np.asarray(self.weights) + self.offset

    def to_dict(self) -> dict[str, object]:
        return {
            **dataclasses.asdict(self),
            "weights": list(self.weights),
            "names": list(self.names),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, object]) -> Fusion:
        """Read :meth:`to_dict`'s output.

        Raises:
            ValueError: missing keys, weights and names of different lengths, or values that
                are not finite numbers.
        """
        try:
            weights = tuple(float(w) for w in data["weights"])  # type: ignore[union-attr]
            names = tuple(str(n) for n in data["names"])  # type: ignore[union-attr]
            offset = float(data["offset"])  # type: ignore[arg-type]
            p_target = data.get("p_target")
        except (KeyError, TypeError, ValueError) as e:
            raise ValueError(f"not a fusion: {e}") from None
        if len(weights) != len(names) or not weights:
            raise ValueError(f"a fusion needs one name per weight, got {weights} and {names}")
        if not all(math.isfinite(v) for v in (*weights, offset)):
            raise ValueError("fusion weights and offset must be finite")
        return cls(weights, offset, names, None if p_target is None else float(p_target))


def _columns(columns: Sequence[ArrayLike], expected: int | None = None) -> np.ndarray:
    arrays = [np.asarray(c, dtype=np.float64).reshape(-1) for c in columns]
    if not arrays or (expected is not None and len(arrays) != expected):
        raise ValueError(f"expected {expected or 'one or more'} score arrays, got {len(arrays)}")
    lengths = {len(a) for a in arrays}
    if len(lengths) != 1:
        raise ValueError(f"every system must score the same trials, got lengths {sorted(lengths)}")
    matrix = np.stack(arrays, axis=1)
    if not np.isfinite(matrix).all():
        raise ValueError("scores must be finite")
    return matrix


def fit_fusion(
    columns: Sequence[ArrayLike],
    labels: ArrayLike,
    *,
    p_target: float | None = 0.01,
    names: Sequence[str] | None = None,
) -> Fusion:
    """Fit the fusion weights on development trials.

    Args:
        columns: one (N,) score array per system, for the same N trials in the same order.
        labels: (N,) 1 for target, 0 for non-target trials; both must occur.
        p_target: the prior the logistic regression is weighted for (as in FoCal); the
            default 0.01 aims at the NIST operating point, 0.5 minimises Cllr.
        names: one name per system; default ``system1``, ``system2``, ...

    Raises:
        ValueError: no columns, columns of different lengths, non-finite scores, bad labels,
            names of the wrong number.
    """
    matrix = _columns(columns)
    _, is_target = _validate(matrix[:, 0], labels)
    names = (
        tuple(names) if names is not None else tuple(f"system{i + 1}" for i in range(len(matrix.T)))
    )
    if len(names) != matrix.shape[1]:
        raise ValueError(f"{matrix.shape[1]} systems but {len(names)} names")
    weights, offset = _fit_logistic(matrix, is_target, p_target, "fusion fit")
    return Fusion(tuple(float(w) for w in weights), offset, names, p_target)
