"""Cosine similarity of random vectors as the dimension grows: near-orthogonality for free.

For independent isotropic vectors in D dimensions the cosine c has density proportional to
(1 - c^2)^((D - 3) / 2), mean 0 and standard deviation exactly 1/sqrt(D). At D = 192 two
unrelated embeddings score within +-0.15 of 0 about 96% of the time, so a score of 0.3 between
unrelated embeddings is a property of the model, not of chance.

>>> samples = random_cosines([16, 192], 20000)
>>> [round(float(samples[d].std() * d ** 0.5), 1) for d in (16, 192)]
[1.0, 1.0]
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from speakerprint.viz._common import new_figure

if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.figure import Figure

__all__ = ["DEFAULT_DIMENSIONS", "cosine_density", "plot_dimension", "random_cosines"]

DEFAULT_DIMENSIONS = (2, 16, 192, 1024)


def random_cosines(dims: Sequence[int], num_pairs: int, *, seed: int = 0) -> dict[int, np.ndarray]:
    """``{D: (num_pairs,) cosines of independent standard-normal vector pairs in D dims}``."""
    if num_pairs < 2:
        raise ValueError("num_pairs must be at least 2")
    rng = np.random.default_rng(seed)
    out = {}
    for dim in dims:
        if dim < 2:
            raise ValueError(f"dimensions must be at least 2, got {dim}")
        a = rng.standard_normal((num_pairs, dim))
        b = rng.standard_normal((num_pairs, dim))
        out[int(dim)] = np.einsum("nd,nd->n", a, b) / (
            np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
        )
    return out


def cosine_density(c: np.ndarray, dim: int) -> np.ndarray:
    """Exact density of the cosine of two independent isotropic vectors in ``dim`` dimensions:
    ``Gamma(D/2) / (sqrt(pi) Gamma((D-1)/2)) (1 - c^2)^((D-3)/2)`` on (-1, 1)."""
    c = np.asarray(c, dtype=np.float64)
    log_norm = math.lgamma(dim / 2) - 0.5 * math.log(math.pi) - math.lgamma((dim - 1) / 2)
    with np.errstate(divide="ignore"):
        return np.exp(log_norm + 0.5 * (dim - 3) * np.log1p(-np.square(c)))


def plot_dimension(samples: dict[int, np.ndarray]) -> Figure:
    """One panel per dimension: the histogram of the sampled cosines, the exact density, and
    +-1/sqrt(D) marked, with the measured and the exact standard deviation in the title."""
    dims = sorted(samples)
    fig = new_figure(3.6 * len(dims), 3.6)
    axes = np.atleast_1d(fig.subplots(1, len(dims), sharey=False))
    grid = np.linspace(-0.999, 0.999, 801)
    for ax, dim in zip(axes, dims):
        values = samples[dim]
        ax.hist(
            values,
            bins=np.linspace(-1, 1, 81),
            density=True,
            color="tab:blue",
            alpha=0.6,
            label=f"{len(values)} random pairs",
        )
        ax.plot(grid, cosine_density(grid, dim), color="black", linewidth=1.0, label="exact")
        spread = 1.0 / math.sqrt(dim)
        for sign in (-1, 1):
            ax.axvline(sign * spread, color="tab:red", linestyle="--", linewidth=0.8)
        ax.set_title(
            f"D = {dim}: std {values.std():.3f}, 1/sqrt(D) = {spread:.3f}", fontsize="medium"
        )
        ax.set_xlim(-1, 1)
        if dim <= 3:  # the density is unbounded at +-1 for D = 2
            ax.set_ylim(0, 3)
        ax.set_xlabel("cosine similarity")
        ax.legend(fontsize="x-small", loc="upper left")
    axes[0].set_ylabel("density")
    return fig
