"""Evaluation reports: several systems' scores on one trial list, as Markdown and HTML.

A report holds, for each system, its EER, minDCF at p_target 0.01 and 0.05 and minCllr, its
threshold table (:func:`speakerprint.eval.calibration.operating_points`) and its target and
non-target score histograms, and one DET figure with every system. Systems are compared on the
same trials only: their score files must list the same trials in the same order.

>>> systems = [ReportSystem.from_file("ecapa_scores.txt"), ReportSystem.from_file("fused.txt")]
>>> write_report("report/", systems, title="VoxCeleb1-O")  # doctest: +SKIP
"""

from __future__ import annotations

import html
import json
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from speakerprint.data.trials import Trial
from speakerprint.errors import ConfigError, ManifestError
from speakerprint.eval.calibration import OperatingPoint, operating_points
from speakerprint.eval.metrics import compute_eer, compute_min_cllr, compute_min_dcf
from speakerprint.eval.scorefile import check_same_trials, read_trial_scores
from speakerprint.utils.io import atomic_write_text

__all__ = ["ReportSystem", "write_report"]

REPORT_P_TARGETS = (0.01, 0.05)


@dataclass
class ReportSystem:
    """One system of a report: a name, its scored trials and, optionally, how it was evaluated.

    Attributes:
        name: shown in tables and legends.
        trials: the trials, in the order of ``scores``.
        scores: (N,) scores.
        settings: free-form facts shown under the system (bundle, condition, normalisation...).
    """

    name: str
    trials: Sequence[Trial]
    scores: np.ndarray
    settings: dict[str, Any] = field(default_factory=dict)

    @property
    def labels(self) -> np.ndarray:
        return np.array([t.label for t in self.trials], dtype=np.int64)

    @classmethod
    def from_file(cls, path: str | os.PathLike, name: str | None = None) -> ReportSystem:
        """A score file (``LABEL ENROL TEST SCORE``), or the JSON record of ``speakerprint eval
        --out`` run with ``--scores`` (its scores file is read, its settings shown).

        Raises:
            ManifestError: an unreadable file, or an eval record that wrote no scores file.
        """
        path = Path(path)
        settings: dict[str, Any] = {}
        scores_path = path
        if path.suffix == ".json":
            try:
                record = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
                raise ManifestError(f"cannot read the eval record {path}: {e}") from None
            if not isinstance(record, dict) or not record.get("scores_file"):
                raise ManifestError(
                    f"{path}: this eval record has no scores file; run `speakerprint eval ... "
                    "--scores FILE --out RECORD.json` to keep the per-trial scores"
                )
            scores_path = Path(record["scores_file"])
            if not scores_path.is_absolute() and not scores_path.exists():
                scores_path = path.parent / scores_path
            settings = _settings_of(record)
        trials, scores = read_trial_scores(scores_path)
        return cls(name or path.stem, trials, scores, settings)


def _settings_of(record: Mapping[str, Any]) -> dict[str, Any]:
    settings = {key: record[key] for key in ("bundle", "manifest", "trials") if record.get(key)}
    condition = record.get("condition") or {}
    if condition:
        settings["condition"] = ", ".join(f"{k}={v}" for k, v in condition.items())
    norm = record.get("normalization") or {}
    if norm.get("method", "none") != "none":
        top_k = f", top_k {norm['top_k']}" if norm.get("top_k") else ""
        settings["normalisation"] = (
            f"{norm['method']} against {norm.get('num_cohort_speakers')} cohort speakers "
            f"({norm.get('cohort')}){top_k}"
        )
    return settings


@dataclass(frozen=True)
class _Figures:
    num_target: int
    num_nontarget: int
    eer: float
    eer_threshold: float
    min_dcfs: tuple[float, ...]
    min_cllr: float
    points: tuple[OperatingPoint, ...]


def _figures(system: ReportSystem) -> _Figures:
    labels = system.labels
    eer = compute_eer(system.scores, labels)
    return _Figures(
        num_target=int(labels.sum()),
        num_nontarget=int(len(labels) - labels.sum()),
        eer=eer.eer,
        eer_threshold=eer.threshold,
        min_dcfs=tuple(
            compute_min_dcf(system.scores, labels, p_target=p).min_dcf for p in REPORT_P_TARGETS
        ),
        min_cllr=compute_min_cllr(system.scores, labels),
        points=tuple(operating_points(system.scores, labels)),
    )


def _slug(name: str, taken: set[str]) -> str:
    base = re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("._") or "system"
    slug, n = base, 2
    while slug in taken:
        slug, n = f"{base}_{n}", n + 1
    taken.add(slug)
    return slug


def write_report(
    out_dir: str | os.PathLike,
    systems: Sequence[ReportSystem],
    *,
    title: str = "Evaluation report",
    note: str = "",
) -> dict[str, Path]:
    """Write ``report.md``, ``report.html``, ``det.png`` and one ``hist_<system>.png`` per system
    into ``out_dir``; returns the paths by kind (``markdown``, ``html``, ``det``).

    Raises:
        ConfigError: no systems, or two systems with the same name.
        ManifestError: the systems do not score the same trials in the same order.
    """
    from speakerprint.viz._common import new_figure, save_figure
    from speakerprint.viz.scores import plot_det, plot_score_histograms

    if not systems:
        raise ConfigError("a report needs at least one system")
    names = [s.name for s in systems]
    if len(set(names)) != len(names):
        raise ConfigError(f"report systems need distinct names, got {names}")
    check_same_trials([(s.name, s.trials) for s in systems])
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    figures = [_figures(s) for s in systems]

    det_fig = new_figure(5.5, 5.5)
    plot_det({s.name: (s.scores, s.labels) for s in systems}, ax=det_fig.add_subplot())
    save_figure(det_fig, out / "det.png")
    taken: set[str] = set()
    hist_files = []
    for system, fig_data in zip(systems, figures):
        fig = new_figure(6.5, 3.8)
        ax = plot_score_histograms(
            system.scores, system.labels, ax=fig.add_subplot(), threshold=fig_data.eer_threshold
        )
        ax.set_title(f"{system.name}: EER {100 * fig_data.eer:.2f}%")
        hist_files.append(f"hist_{_slug(system.name, taken)}.png")
        save_figure(fig, out / hist_files[-1])

    markdown = _markdown(title, note, systems, figures, hist_files)
    atomic_write_text(out / "report.md", markdown)
    atomic_write_text(out / "report.html", _html(title, note, systems, figures, hist_files))
    return {"markdown": out / "report.md", "html": out / "report.html", "det": out / "det.png"}


def _summary_rows(systems: Sequence[ReportSystem], figures: Sequence[_Figures]) -> list[list[str]]:
    return [
        [
            s.name,
            f"{f.num_target} / {f.num_nontarget}",
            f"{100 * f.eer:.2f}",
            *(f"{d:.4f}" for d in f.min_dcfs),
            f"{f.min_cllr:.4f}",
        ]
        for s, f in zip(systems, figures)
    ]


_SUMMARY_HEADER = [
    "system",
    "target / non-target trials",
    "EER (%)",
    *(f"minDCF (p_target={p})" for p in REPORT_P_TARGETS),
    "minCllr",
]
_POINT_HEADER = ["operating point", "threshold", "false accepts (%)", "misses (%)"]


def _point_rows(f: _Figures) -> list[list[str]]:
    return [
        [
            p.name,
            f"{p.threshold:.4f}",
            f"{100 * p.false_accept_rate:.2f}",
            f"{100 * p.miss_rate:.2f}",
        ]
        for p in f.points
    ]


def _md_table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(r) + " |" for r in rows]


_COSTS = "minDCF with C_miss = C_fa = 1; thresholds accept a trial if score >= threshold."
_OPTIMISTIC = (
    "The thresholds are measured on these trials, so their error rates here are optimistic: "
    "choose a deployment threshold on development trials (`speakerprint calibrate`)."
)


def _markdown(title, note, systems, figures, hist_files) -> str:
    lines = [f"# {title}", ""]
    if note:
        lines += [note, ""]
    lines += _md_table(_SUMMARY_HEADER, _summary_rows(systems, figures))
    lines += ["", _COSTS, "", "![DET curves](det.png)", ""]
    for system, f, hist in zip(systems, figures, hist_files):
        lines += [f"## {system.name}", ""]
        lines += [f"- {key}: {value}" for key, value in system.settings.items()]
        if system.settings:
            lines.append("")
        lines += [f"![{system.name} score histograms]({hist})", ""]
        lines += _md_table(_POINT_HEADER, _point_rows(f)) + [""]
    lines += [_OPTIMISTIC, ""]
    return "\n".join(lines)


def _html_table(header: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _html(title, note, systems, figures, hist_files) -> str:
    e = html.escape
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{e(title)}</title>",
        "<style>body{font-family:sans-serif;max-width:60em;margin:2em auto}"
        "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #bbb;"
        "padding:.25em .6em;text-align:right}td:first-child,th:first-child{text-align:left}"
        "img{max-width:100%}</style></head><body>",
        f"<h1>{e(title)}</h1>",
    ]
    if note:
        parts.append(f"<p>{e(note)}</p>")
    parts.append(_html_table(_SUMMARY_HEADER, _summary_rows(systems, figures)))
    parts.append(f"<p>{e(_COSTS)}</p>")
    parts.append('<img src="det.png" alt="DET curves">')
    for system, f, hist in zip(systems, figures, hist_files):
        parts.append(f"<h2>{e(system.name)}</h2>")
        if system.settings:
            items = "".join(
                f"<li>{e(str(k))}: {e(str(v))}</li>" for k, v in system.settings.items()
            )
            parts.append(f"<ul>{items}</ul>")
        parts.append(f'<img src="{e(hist)}" alt="{e(system.name)} score histograms">')
        parts.append(_html_table(_POINT_HEADER, _point_rows(f)))
    parts.append(f"<p>{e(_OPTIMISTIC)}</p></body></html>")
    return "\n".join(parts) + "\n"
