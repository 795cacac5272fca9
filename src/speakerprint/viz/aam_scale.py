r"""How low the AAM-softmax loss can go for a given scale s: why s must grow with the classes.

The additive-angular-margin loss of a training example of class y, with unit embedding x, unit
class weights w_1..w_C, theta_j the angle between x and w_j, margin m and scale s, is

    loss = -log( e^{s cos(theta_y + m)} / (e^{s cos(theta_y + m)} + sum_{j != y} e^{s cos theta_j}) )
         = log( 1 + sum_{j != y} exp(s (cos theta_j - cos(theta_y + m))) ).

Its lowest value over all placements of the weights and embeddings, with every class equally
represented, is

    L_min(s, C, m) = log( 1 + (C - 1) exp(-s (cos m + 1 / (C - 1))) ).

Derivation. (1) The target term: cos(theta_y + m) <= cos m, with equality at theta_y = 0 (for
m in [0, pi/2]; past theta_y + m > pi the loss uses cos theta_y - m sin m, lower still), so the
target logit is largest when the embedding lies on its class weight. (2) The non-target terms:
log(1 + (C - 1) e^a) is increasing and convex in a, so by Jensen's inequality, first over the
C - 1 non-target classes of one example and then over the examples, the mean loss is at least
that function of the mean gap a = mean(cos theta_j) - cos(theta_y + m). (3) With every embedding
on its class weight, the mean non-target cosine is the mean off-diagonal entry of the weights'
Gram matrix, (|sum_j w_j|^2 - C) / (C (C - 1)) >= -1 / (C - 1), with equality when the weights
sum to zero: a regular simplex, which exists when the embedding has D >= C - 1 dimensions.
Moving an embedding off its weight to lower its non-target cosines costs more in the target term
than it gains (first order in the angle when m > 0, second order when m = 0), which the tests
check against a direct numerical minimisation over weights and embeddings for small C.

With s = 1 and C = 100 the loss cannot go below 3.63 nats however good the embeddings are; the
bound only comes close to zero once s (1 + cos m) exceeds log(C - 1) by a few units, which is why
large-C recipes use s = 30 to 64.

>>> f"{aam_loss_lower_bound(30.0, 1000, margin=0.2):.2e}"
'1.65e-10'
>>> round(float(aam_loss_lower_bound(1.0, 100, margin=0.2)), 2)
3.63
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from numpy.typing import ArrayLike

from speakerprint.viz._common import new_figure

if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.figure import Figure

__all__ = ["ScaleRun", "aam_loss_lower_bound", "plot_aam_scale", "read_scale_run"]

# The training loss of a run is the mean of its last logged losses (single batches are noisy).
LAST_LOSSES = 5


@dataclass(frozen=True)
class ScaleRun:
    """What one training run says about its scale: s, margin and classes from its config and
    checkpoint, the mean of its last logged training losses, and its last dev EER (or None)."""

    run_dir: str
    scale: float
    margin: float
    num_classes: int
    final_loss: float
    dev_eer: float | None


def read_scale_run(run_dir: str | os.PathLike) -> ScaleRun:
    """Read a finished (or running) AAM run: ``config.yaml``, ``metrics.jsonl``, a checkpoint.

    Raises:
        ConfigError: the run's loss is not AAM-softmax.
        BundleError, ManifestError: no checkpoint, no metrics.
    """
    import yaml

    from speakerprint.errors import BundleError, ConfigError
    from speakerprint.train.checkpoint import list_checkpoints, load_checkpoint
    from speakerprint.viz.curves import read_metrics

    run_dir = Path(run_dir)
    try:
        config = yaml.safe_load((run_dir / "config.yaml").read_text(encoding="utf-8"))
        loss = config["loss"]
        name, scale, margin = loss["name"], float(loss["scale"]), float(loss["margin"])
    except (OSError, yaml.YAMLError, KeyError, TypeError, ValueError) as e:
        raise ConfigError(f"{run_dir}: cannot read the loss settings of config.yaml: {e}") from None
    if name != "aam":
        raise ConfigError(f"{run_dir}: trained with loss {name!r}, not AAM-softmax ('aam')")
    checkpoints = list_checkpoints(run_dir / "checkpoints")
    if not checkpoints:
        raise BundleError(f"{run_dir}: no checkpoints, so the number of classes is unknown")
    num_classes = int(load_checkpoint(checkpoints[-1])["num_speakers"])
    curves = read_metrics(run_dir)
    losses = curves.train["loss"][1] if "loss" in curves.train else np.zeros(0)
    if not len(losses):
        raise ConfigError(f"{run_dir}: metrics.jsonl has no training losses")
    eer = curves.dev.get("eer")
    return ScaleRun(
        run_dir=str(run_dir),
        scale=scale,
        margin=margin,
        num_classes=num_classes,
        final_loss=float(np.mean(losses[-LAST_LOSSES:])),
        dev_eer=None if eer is None else float(eer[1][-1]),
    )


def aam_loss_lower_bound(scale: ArrayLike, num_classes: int, *, margin: float = 0.2) -> np.ndarray:
    """``log(1 + (C - 1) exp(-s (cos m + 1/(C - 1))))``, the lowest mean AAM-softmax loss (nats)
    over all placements of class weights and embeddings (see the module docstring).

    Args:
        scale: s > 0, a number or an array of them.
        num_classes: C >= 2.
        margin: m in radians, in [0, pi/2]; 0 gives the bound of the normalised softmax.

    Returns:
        An array of the shape of ``scale`` (a 0-d array for a number).
    """
    if num_classes < 2:
        raise ValueError(f"num_classes must be at least 2, got {num_classes}")
    if not 0.0 <= margin <= math.pi / 2:
        raise ValueError(f"margin must lie in [0, pi/2] radians, got {margin}")
    s = np.asarray(scale, dtype=np.float64)
    if (s <= 0).any():
        raise ValueError("scale must be positive")
    gap = math.cos(margin) + 1.0 / (num_classes - 1)
    # log1p(exp(z)) without overflow for large z or underflow to exactly 0 too early.
    z = math.log(num_classes - 1) - s * gap
    return np.logaddexp(0.0, z)


def plot_aam_scale(
    num_classes: Sequence[int] = (2, 10, 100, 1000, 5994),
    *,
    margin: float = 0.2,
    scales: ArrayLike | None = None,
    marked_scales: Sequence[float] = (1.0, 16.0, 30.0),
    runs: Sequence[ScaleRun] = (),
) -> Figure:
    """The lower bound against s on a log axis, one curve per number of classes, with the scales
    in ``marked_scales`` drawn as vertical lines. With ``runs``, a second panel puts each run's
    final training loss beside the bound for its number of classes, and its dev EER."""
    s = np.linspace(0.5, 40.0, 400) if scales is None else np.asarray(scales, dtype=np.float64)
    fig = new_figure(7.5 if not runs else 13.5, 4.8)
    ax, *rest = np.atleast_1d(
        fig.subplots(1, 2 if runs else 1, width_ratios=[1.2, 1] if runs else None)
    )
    highest = 0.0
    for count in num_classes:
        bound = aam_loss_lower_bound(s, count, margin=margin)
        highest = max(highest, float(bound.max()))
        ax.plot(s, bound, label=f"C = {count}")
    for value in marked_scales:
        ax.axvline(value, color="0.6", linestyle=":", linewidth=1.0)
        ax.text(
            value,
            1.0,
            f" s={value:g}",
            transform=ax.get_xaxis_transform(),
            va="top",
            fontsize="small",
            color="0.4",
        )
    ax.set_yscale("log")
    ax.set_ylim(1e-6, 3.0 * highest)
    ax.set_xlabel("scale s")
    ax.set_ylabel("lowest possible loss (nats)")
    ax.set_title(
        f"AAM-softmax, m = {margin:g}: log(1 + (C-1) exp(-s (cos m + 1/(C-1))))", fontsize="medium"
    )
    ax.grid(True, which="major", linewidth=0.4, alpha=0.6)
    ax.legend(fontsize="small")
    if runs:
        _plot_runs(rest[0], sorted(runs, key=lambda r: r.scale))
    return fig


def _plot_runs(ax, runs: Sequence[ScaleRun]) -> None:
    scales = np.array([r.scale for r in runs])
    ax.plot(
        scales,
        [r.final_loss for r in runs],
        "o-",
        color="tab:blue",
        label=f"training loss (mean of the last {LAST_LOSSES} logged)",
    )
    bounds = [float(aam_loss_lower_bound(r.scale, r.num_classes, margin=r.margin)) for r in runs]
    ax.plot(
        scales,
        bounds,
        "s--",
        color="tab:blue",
        alpha=0.5,
        label=f"lowest possible loss (C = {runs[-1].num_classes})",
    )
    ax.set_yscale("log")
    ax.set_xlabel("scale s")
    ax.set_ylabel("loss (nats)", color="tab:blue")
    ax.set_xticks(scales, [f"{v:g}" for v in scales])
    ax.minorticks_off()
    ax.legend(fontsize="x-small", loc="lower left")
    with_eer = [r for r in runs if r.dev_eer is not None]
    if with_eer:
        twin = ax.twinx()
        twin.plot(
            [r.scale for r in with_eer],
            [100 * r.dev_eer for r in with_eer],
            "^-",
            color="tab:red",
            label="dev EER",
        )
        for r in with_eer:
            twin.annotate(
                f"{100 * r.dev_eer:.1f}%",
                (r.scale, 100 * r.dev_eer),
                textcoords="offset points",
                xytext=(4, 4),
                fontsize="small",
                color="tab:red",
            )
        twin.set_ylabel("dev EER (%)", color="tab:red")
        twin.set_ylim(0, None)
    ax.set_title("measured: short runs at each s", fontsize="medium")
