"""The geometry of the AAM head's class weights through training ("the diagonal figure").

A cosine (AAM/AM-softmax) head holds one weight vector per training speaker. Their pairwise
cosine similarity matrix starts near 0 off the diagonal (random vectors in D dimensions are
nearly orthogonal) and, as training pushes the classes apart, its off-diagonal mean moves
towards the lowest value C unit vectors can have on average, ``-1 / (C - 1)``.

Rows and columns are in the head's label order: speakers sorted by name, as the training loop
numbers them.

>>> snapshots = read_class_weights("runs/so762")  # doctest: +SKIP
>>> save_figure(plot_class_weights(snapshots), "class_weights.png")  # doctest: +SKIP
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from speakerprint.errors import BundleError
from speakerprint.utils.linalg import l2_normalize_rows
from speakerprint.viz._common import new_figure

if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.figure import Figure

__all__ = [
    "HEAD_WEIGHT_KEY",
    "ClassWeights",
    "cosine_matrix",
    "mean_off_diagonal",
    "plot_class_weights",
    "read_class_weights",
]

#: Where a training checkpoint keeps the cosine head's (num_classes, embed_dim) weights:
#: ``state["loss"]`` is the ClassificationLoss's state dict, whose head is ``head``.
HEAD_WEIGHT_KEY = "head.weight"


@dataclass(frozen=True)
class ClassWeights:
    """The head's class weights (C, D) at one training step."""

    step: int
    weights: np.ndarray


def cosine_matrix(weights: np.ndarray) -> np.ndarray:
    """Pairwise cosine similarity (C, C) of the rows of ``weights`` (C, D)."""
    w = l2_normalize_rows(np.asarray(weights, dtype=np.float64))
    return w @ w.T


def mean_off_diagonal(matrix: np.ndarray) -> float:
    """Mean of the entries off the diagonal of a square matrix.

    >>> mean_off_diagonal(np.array([[1.0, -0.5], [-0.5, 1.0]]))
    -0.5
    """
    matrix = np.asarray(matrix, dtype=np.float64)
    count = len(matrix)
    if count < 2:
        raise ValueError("need at least 2 classes")
    return float((matrix.sum() - np.trace(matrix)) / (count * (count - 1)))


def read_class_weights(
    run_dir: str | os.PathLike, *, max_checkpoints: int | None = None
) -> list[ClassWeights]:
    """The head's class weights at every checkpoint of ``RUN/checkpoints`` (oldest first; with
    ``max_checkpoints``, that many evenly spaced ones, always the first and the last).

    Raises:
        BundleError: no checkpoints, an unreadable one, or a loss without a class-weight head
            (triplet loss has none).
    """
    from speakerprint.train.checkpoint import list_checkpoints, load_checkpoint

    run_dir = Path(run_dir)
    paths = list_checkpoints(run_dir / "checkpoints")
    if not paths:
        raise BundleError(f"{run_dir}: no checkpoints in {run_dir / 'checkpoints'}")
    if max_checkpoints is not None and len(paths) > max_checkpoints:
        picks = np.linspace(0, len(paths) - 1, max(max_checkpoints, 1)).round().astype(int)
        paths = [paths[i] for i in sorted(set(picks.tolist()))]
    snapshots = []
    for path in paths:
        state = load_checkpoint(path)
        loss_state = state.get("loss") or {}
        if HEAD_WEIGHT_KEY not in loss_state:
            raise BundleError(
                f"checkpoint {path}: the loss has no class weights ({HEAD_WEIGHT_KEY!r} not in "
                f"its state; keys: {sorted(loss_state) or 'none'}), e.g. a triplet-loss run"
            )
        weights = loss_state[HEAD_WEIGHT_KEY].float().numpy()
        snapshots.append(ClassWeights(step=int(state["step"]), weights=weights))
    return snapshots


def plot_class_weights(snapshots: Sequence[ClassWeights], *, title: str = "") -> Figure:
    """One cosine-similarity matrix per snapshot, side by side on one colour scale (symmetric,
    set by the largest off-diagonal magnitude; the diagonal saturates), each
    titled with its step and mean off-diagonal similarity; the bound ``-1/(C-1)`` in the title."""
    if not snapshots:
        raise ValueError("plot_class_weights needs at least one snapshot")
    count = len(snapshots)
    fig = new_figure(3.6 * count + 0.8, 4.0)
    axes = np.atleast_1d(fig.subplots(1, count))
    matrices = [cosine_matrix(snap.weights) for snap in snapshots]
    # One symmetric colour range over the off-diagonal entries of every snapshot: a [-1, 1]
    # scale would wash them out (they lie near 0); the diagonal (1) is drawn saturated.
    limit = max(float(np.abs(m[~np.eye(len(m), dtype=bool)]).max()) for m in matrices)
    limit = max(limit, 1e-3)
    image = None
    for ax, snap, matrix in zip(axes, snapshots, matrices):
        image = ax.imshow(matrix, vmin=-limit, vmax=limit, cmap="RdBu_r", interpolation="nearest")
        ax.set_title(
            f"step {snap.step}\nmean off-diagonal {mean_off_diagonal(matrix):+.3f}",
            fontsize="medium",
        )
        ax.set_xlabel("speaker (label order)")
        ax.set_xticks([])
        ax.set_yticks([])
    axes[0].set_ylabel("speaker (label order)")
    fig.colorbar(image, ax=list(axes), shrink=0.8, label="cosine similarity")
    num_classes = snapshots[-1].weights.shape[0]
    fig.suptitle(
        f"{title + ': ' if title else ''}class weights of the cosine head, {num_classes} speakers "
        f"(lowest possible mean off-diagonal: -1/(C-1) = {-1 / (num_classes - 1):.4f})",
        fontsize="medium",
    )
    return fig
