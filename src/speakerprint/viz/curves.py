"""A static summary of a training run from ``RUN/metrics.jsonl``.

The training loop appends one JSON record a line: every ``log_every`` steps
``{"step", "loss", "accuracy", "lr", "margin"}``; at dev evaluations
``{"step", "event": "dev", "eer", "min_dcf", ...}``; at the end ``{"event": "end", ...}``.
Records of other kinds and unknown fields are ignored, so the figure keeps working when the
loop records more.

>>> curves = read_metrics("runs/so762")  # doctest: +SKIP
>>> save_figure(plot_curves(curves, title="so762"), "curves.png")  # doctest: +SKIP
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from speakerprint.data.manifest import raise_problems, read_text_file
from speakerprint.errors import ManifestError
from speakerprint.viz._common import new_figure

if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.figure import Figure

__all__ = ["METRICS_FILE", "TrainingCurves", "draw_run_curves", "plot_curves", "read_metrics"]

log = logging.getLogger(__name__)

METRICS_FILE = "metrics.jsonl"
_TRAIN_KEYS = ("loss", "accuracy", "lr", "margin")
_DEV_KEYS = ("eer", "min_dcf")


@dataclass
class TrainingCurves:
    """Series ``{name: (steps (K,), values (K,))}`` of the training and the dev records."""

    train: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)
    dev: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)


def read_metrics(run: str | os.PathLike) -> TrainingCurves:
    """The curves of a run folder (its ``metrics.jsonl``) or of a metrics file itself.

    Raises:
        ManifestError: no metrics file (naming the phases' files when the run has phases), a
            line that is not a JSON object (every bad line is listed), or no training records.
    """
    path = Path(run)
    if path.is_dir():
        folder, path = path, path / METRICS_FILE
        if not path.is_file():
            phases = sorted(str(p) for p in folder.glob(f"*/{METRICS_FILE}"))
            hint = f"; the run's phases have theirs: {', '.join(phases)}" if phases else ""
            raise ManifestError(f"{folder}: no {METRICS_FILE}{hint}")
    text = read_text_file(path, "metrics file")
    series: dict[str, dict[str, list[tuple[int, float]]]] = {"train": {}, "dev": {}}
    problems = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as e:
            problems.append(f"{path}:{number}: not JSON ({e.msg})")
            continue
        if not isinstance(record, dict) or not isinstance(record.get("step"), int):
            problems.append(f"{path}:{number}: not a record with an integer 'step'")
            continue
        event = record.get("event")
        kind, keys = ("train", _TRAIN_KEYS) if event is None else ("dev", _DEV_KEYS)
        if event not in (None, "dev"):
            continue
        for key in keys:
            value = record.get(key)
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                series[kind].setdefault(key, []).append((record["step"], float(value)))
    raise_problems(path, problems, "metrics file")
    if not series["train"]:
        raise ManifestError(f"{path}: no training records (step, loss, ...)")

    def arrays(points: list[tuple[int, float]]) -> tuple[np.ndarray, np.ndarray]:
        steps, values = zip(*points)
        return np.asarray(steps), np.asarray(values)

    return TrainingCurves(
        train={k: arrays(v) for k, v in series["train"].items()},
        dev={k: arrays(v) for k, v in series["dev"].items()},
    )


def plot_curves(curves: TrainingCurves, *, title: str = "") -> Figure:
    """Loss, accuracy, learning rate, margin, dev EER and dev minDCF against the step, one panel
    each (a panel says so when its series was not recorded)."""
    panels = [
        ("train", "loss", "training loss", 1.0),
        ("train", "accuracy", "training accuracy (batch)", 1.0),
        ("train", "lr", "learning rate", 1.0),
        ("train", "margin", "margin", 1.0),
        ("dev", "eer", "dev EER (%)", 100.0),
        ("dev", "min_dcf", "dev minDCF (p_target 0.01)", 1.0),
    ]
    fig = new_figure(12.0, 6.5)
    axes = fig.subplots(2, 3).ravel()
    for ax, (kind, key, label, factor) in zip(axes, panels):
        found = getattr(curves, kind).get(key)
        ax.set_title(label, fontsize="medium")
        ax.set_xlabel("step")
        if found is None:
            ax.text(0.5, 0.5, "not recorded", ha="center", va="center", transform=ax.transAxes)
            continue
        steps, values = found
        marker = "o-" if kind == "dev" else "-"
        ax.plot(steps, values * factor, marker, linewidth=1.2, markersize=4)
        if kind == "dev":
            ax.annotate(
                f"{values[-1] * factor:.3g}",
                (steps[-1], values[-1] * factor),
                textcoords="offset points",
                xytext=(-10, 6),
                fontsize="small",
            )
        if key == "loss":
            ax.set_yscale("log")
        ax.grid(True, linewidth=0.4, alpha=0.6)
    if title:
        fig.suptitle(title, fontsize="medium")
    return fig


def draw_run_curves(run_dir: str | os.PathLike, out: str | os.PathLike) -> Path | None:
    """Draw a run's curves into ``out`` at the end of training; returns ``out``, or None.

    A figure that cannot be drawn (matplotlib missing, an unreadable record) is a log line, never
    an error: the records are safe in ``metrics.jsonl`` whatever happens here. Training hands this
    to :class:`speakerprint.train.tracking.RunLog`.
    """
    run_dir, out = Path(run_dir), Path(out)
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        log.info(
            "no %s: matplotlib is in the viz extra (pip install 'speakerprint[viz]'), then "
            "speakerprint plot curves %s",
            out,
            run_dir,
        )
        return None
    from speakerprint.viz._common import save_figure

    try:
        figure = plot_curves(read_metrics(run_dir), title=run_dir.name)
        save_figure(figure, out)
    except Exception as e:  # noqa: BLE001 - a summary figure must never fail a run
        log.warning("could not draw %s: %s", out, e)
        return None
    finally:
        import matplotlib.pyplot as plt

        plt.close("all")
    return out
