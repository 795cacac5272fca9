"""Score figures: target and non-target histograms, and DET curves on normal-deviate axes.

``plot_score_histograms`` and ``plot_det`` are the stable API other reports draw with: each draws
on a given matplotlib ``Axes`` (or a new figure) and returns the ``Axes``.

>>> scores, labels = read_scores("scores.txt")  # doctest: +SKIP
>>> fig = scores_figure(scores, labels, name="ecapa")  # doctest: +SKIP
>>> save_figure(fig, "scores.png")  # doctest: +SKIP
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import TYPE_CHECKING

import numpy as np
from numpy.typing import ArrayLike

from speakerprint.errors import ManifestError
from speakerprint.eval.metrics import compute_eer, det_curve
from speakerprint.viz._common import new_figure
from speakerprint.viz.systems import ReportSystem

if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = [
    "DET_TICKS",
    "det_points",
    "plot_det",
    "plot_score_histograms",
    "read_scores",
    "scores_figure",
]

#: Error rates (fractions) labelled on the DET axes: the usual 0.1 % .. 40 % grid.
DET_TICKS = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.4)
# Rates are clipped to this range before the probit, where 0 and 1 would be infinite.
_DET_LIMITS = (0.0005, 0.5)


def read_scores(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """Per-trial scores and labels, ``(scores (N,) float64, labels (N,) int64)``, from a score
    file (``LABEL ENROL TEST SCORE`` lines, as ``speakerprint eval --scores`` writes) or the JSON
    record of an eval run that wrote one (``--scores F --out R.json``).

    Raises:
        ManifestError: the file is unreadable, a line is malformed (every bad line is listed),
            the record names no score file, or there are no target or no non-target trials.
    """
    system = ReportSystem.from_file(path)
    labels = system.labels
    if not (labels == 1).any() or not (labels == 0).any():
        raise ManifestError(f"{path}: needs both target (1) and non-target (0) trials")
    return system.scores, labels


def _axes(ax: Axes | None, width_in: float = 6.0, height_in: float = 4.0) -> Axes:
    if ax is not None:
        return ax
    return new_figure(width_in, height_in).add_subplot()


def plot_score_histograms(
    scores: ArrayLike,
    labels: ArrayLike,
    ax: Axes | None = None,
    threshold: float | None = None,
    *,
    bins: int = 60,
) -> Axes:
    """Density histograms of target and non-target scores on shared bins; returns the Axes.

    Args:
        scores: (N,) scores, higher means more likely the same speaker.
        labels: (N,) 1 for target, 0 for non-target trials.
        ax: where to draw; None draws on a new figure (``ax.figure``).
        threshold: drawn as a vertical line when given (e.g. the EER threshold).

    >>> ax = plot_score_histograms([0.1, 0.8, 0.2, 0.7], [0, 1, 0, 1], threshold=0.45)
    >>> [t.get_text() for t in ax.get_legend().get_texts()][:2]
    ['target (2)', 'non-target (2)']
    """
    scores = np.asarray(scores, dtype=np.float64)
    labels = np.asarray(labels)
    if scores.shape != labels.shape or scores.ndim != 1:
        raise ValueError(f"scores and labels must be (N,), got {scores.shape} and {labels.shape}")
    ax = _axes(ax)
    edges = np.histogram_bin_edges(scores, bins=bins)
    target, nontarget = scores[labels == 1], scores[labels == 0]
    ax.hist(
        target,
        bins=edges,
        density=True,
        alpha=0.6,
        color="tab:green",
        label=f"target ({len(target)})",
    )
    ax.hist(
        nontarget,
        bins=edges,
        density=True,
        alpha=0.6,
        color="tab:red",
        label=f"non-target ({len(nontarget)})",
    )
    if threshold is not None:
        ax.axvline(
            threshold,
            color="black",
            linestyle="--",
            linewidth=1,
            label=f"threshold {threshold:.3f}",
        )
    ax.set_xlabel("score")
    ax.set_ylabel("density")
    ax.legend(loc="upper left", fontsize="small")
    return ax


def det_points(scores: ArrayLike, labels: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """The DET curve in normal-deviate units: ``(probit(FPR), probit(FNR))``, rates clipped to
    [0.05 %, 50 %] where the axes end."""
    from scipy.stats import norm

    det = det_curve(scores, labels)
    low, high = _DET_LIMITS
    return norm.ppf(np.clip(det.fpr, low, high)), norm.ppf(np.clip(det.fnr, low, high))


def plot_det(
    curves: Mapping[str, tuple[ArrayLike, ArrayLike]],
    ax: Axes | None = None,
) -> Axes:
    """DET curves (miss rate against false-acceptance rate on normal-deviate axes), one per
    system, each labelled with its EER and marked at it; returns the Axes.

    Args:
        curves: ``{name: (scores (N,), labels (N,))}``.
        ax: where to draw; None draws on a new square figure.

    >>> ax = plot_det({"a": ([0.1, 0.8, 0.3, 0.7], [0, 1, 0, 1])})
    >>> ax.get_legend().get_texts()[0].get_text()
    'a (EER 0.00%)'
    """
    from scipy.stats import norm

    if not curves:
        raise ValueError("plot_det needs at least one curve")
    ax = _axes(ax, 5.0, 5.0)
    for name, (scores, labels) in curves.items():
        x, y = det_points(scores, labels)
        eer = compute_eer(scores, labels).eer
        (line,) = ax.plot(x, y, linewidth=1.5, label=f"{name} (EER {100 * eer:.2f}%)")
        at = norm.ppf(np.clip(eer, *_DET_LIMITS))
        ax.plot([at], [at], "o", color=line.get_color(), markersize=5)
    ticks = norm.ppf(DET_TICKS)
    names = [f"{100 * t:g}" for t in DET_TICKS]
    lim = norm.ppf(_DET_LIMITS)
    ax.plot(lim, lim, color="0.7", linewidth=0.8, linestyle=":")  # where FNR = FPR
    ax.set_xticks(ticks, names)
    ax.set_yticks(ticks, names)
    ax.set_xlim(*lim)
    ax.set_ylim(*lim)
    ax.set_aspect("equal")
    ax.set_xlabel("false acceptance rate (%)")
    ax.set_ylabel("miss rate (%)")
    ax.grid(True, linewidth=0.4, alpha=0.6)
    ax.legend(loc="upper right", fontsize="small")
    return ax


def scores_figure(scores: ArrayLike, labels: ArrayLike, *, name: str = "scores") -> Figure:
    """Histograms (with the EER threshold) beside the DET curve of one set of trial scores."""
    fig = new_figure(11.0, 4.5)
    hist_ax, det_ax = fig.subplots(1, 2, width_ratios=[1.3, 1])
    eer = compute_eer(scores, labels)
    plot_score_histograms(scores, labels, ax=hist_ax, threshold=eer.threshold)
    hist_ax.set_title(f"{name}: EER {100 * eer.eer:.2f}% at threshold {eer.threshold:.3f}")
    plot_det({name: (scores, labels)}, ax=det_ax)
    det_ax.set_title("DET")
    return fig
