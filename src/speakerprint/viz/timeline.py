"""A diarization timeline: one row per speaker, a bar per turn."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from speakerprint.data.rttm import Turn
from speakerprint.viz._common import figure_format, new_figure, save_figure

__all__ = ["plot_timeline"]


def plot_timeline(
    turns: Sequence[Turn], path: str | os.PathLike, *, duration_s: float | None = None
) -> Path:
    """Draw ``turns`` as a timeline (speakers in order of first appearance) to PNG or SVG."""
    figure_format(path)
    speakers = list(dict.fromkeys(t.speaker for t in turns))
    end = max([t.end_s for t in turns] + [duration_s or 0.0, 1.0])
    fig = new_figure(max(6.0, min(20.0, end / 10)), 1.0 + 0.4 * max(len(speakers), 1))
    ax = fig.add_subplot()
    for row, speaker in enumerate(speakers):
        spans = [(t.start_s, t.duration_s) for t in turns if t.speaker == speaker]
        ax.broken_barh(spans, (row - 0.4, 0.8), color=f"C{row % 10}")
    ax.set_yticks(range(len(speakers)), speakers)
    ax.set_xlim(0, end)
    ax.set_ylim(-0.6, max(len(speakers), 1) - 0.4)
    ax.invert_yaxis()
    ax.set_xlabel("time (s)")
    ax.set_title(turns[0].file_id if turns else "no speech")
    return save_figure(fig, path)
