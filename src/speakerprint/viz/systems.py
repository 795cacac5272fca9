"""A scored system, read from a score file or an eval record: what reports and score figures
read (``viz.report`` and ``viz.scores`` both build on it)."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from speakerprint.data.trials import Trial
from speakerprint.errors import ManifestError
from speakerprint.eval.scorefile import read_trial_scores

__all__ = ["ReportSystem"]


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
