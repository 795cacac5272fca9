"""Where a training run's records go: ``metrics.jsonl`` always, TensorBoard and W&B as asked.

``metrics.jsonl`` is the record of truth (one JSON object a line, read by ``speakerprint plot
curves`` and the results tables). The same numbers are mirrored as scalars to TensorBoard
(``RUN/tensorboard``, on by default when the ``tensorboard`` package is installed) and to
Weights & Biases (off by default). Training records become ``train/loss``, ``train/accuracy``,
``train/lr`` and ``train/margin``; dev evaluations ``dev/eer``, ``dev/min_dcf`` and the other
numbers of the record. On resume, everything past the resumed step is dropped from all three, so a
resumed run reads as if it had never stopped (W&B keeps the points an interrupted attempt logged
past the checkpoint; its x axis is the training step, so the repeated steps overlap).

At the end (and when a run stops early) a static summary, ``RUN/curves.png``, is drawn by the
drawer the caller hands in (the training loop hands in
:func:`speakerprint.viz.curves.draw_run_curves`, which needs the ``viz`` extra): training sits
below ``viz`` and does not import it.
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from speakerprint.errors import ConfigError

log = logging.getLogger(__name__)

__all__ = ["RunLog", "scalars_of", "tensorboard_available"]

TENSORBOARD_DIR = "tensorboard"
CURVES_FILE = "curves.png"
_WANDB_ID_FILE = "wandb_run_id"


def tensorboard_available() -> bool:
    """True when ``torch.utils.tensorboard`` can be imported (it needs the tensorboard package)."""
    try:
        import torch.utils.tensorboard  # noqa: F401
    except ImportError:
        return False
    return True


def scalars_of(record: dict[str, Any]) -> dict[str, float]:
    """The finite numbers of one metrics record, named for TensorBoard and W&B.

    Training records (no ``event``) go under ``train/``, ``dev`` records under ``dev/``; a
    skipped step counts under ``train/bad_steps_in_a_row``. Other events carry nothing to plot.
    """
    event = record.get("event")
    if event is None:
        prefix = "train/"
    elif event == "dev":
        prefix = "dev/"
    elif event == "skipped_step":
        value = record.get("bad_steps_in_a_row")
        return {"train/bad_steps_in_a_row": float(value)} if value is not None else {}
    else:
        return {}
    out = {}
    for key, value in record.items():
        if key in ("step", "event") or isinstance(value, bool):
            continue
        if isinstance(value, (int, float)) and math.isfinite(value):
            out[prefix + key] = float(value)
    return out


class RunLog:
    """The records of one run; only the main process writes (``enabled``).

    Args:
        run_dir: the run folder.
        resume_step: the step training resumes from, or None for a fresh run (which starts the
            records afresh).
        enabled: False on the other ranks under torchrun: every call is a no-op.
        tensorboard: True (required: an error if the package is missing), False, or "auto" (on
            when the package is installed, else one log line saying how to get it).
        wandb: mirror to Weights & Biases (needs the ``wandb`` package and its login or
            ``WANDB_MODE=offline``).
        wandb_project: the W&B project.
        config: the run's configuration, given to W&B.
        draw_curves: ``draw_curves(run_dir, out) -> out or None`` draws the summary figure at
            ``close``; it must never raise (see :func:`speakerprint.viz.curves.draw_run_curves`).
            None draws nothing.
    """

    def __init__(
        self,
        run_dir: str | os.PathLike,
        resume_step: int | None,
        *,
        enabled: bool = True,
        tensorboard: bool | str = "auto",
        wandb: bool = False,
        wandb_project: str = "speakerprint",
        config: dict[str, Any] | None = None,
        draw_curves: Callable[[Path, Path], Path | None] | None = None,
    ) -> None:
        self.run_dir = Path(run_dir)
        self._draw_curves = draw_curves
        self.path = self.run_dir / "metrics.jsonl"
        self.enabled = enabled
        self._tb = None
        self._wandb = None
        if not enabled:
            return
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self._restart_jsonl(resume_step)
        use_tb = tensorboard is True or (tensorboard == "auto" and tensorboard_available())
        if tensorboard not in (True, False, "auto"):
            raise ConfigError(f"train.tensorboard must be true, false or auto, got {tensorboard!r}")
        if use_tb:
            self._tb = _open_tensorboard(self.run_dir / TENSORBOARD_DIR, resume_step)
        elif tensorboard == "auto":
            log.info(
                "TensorBoard logging is off: the tensorboard package is not installed "
                "(pip install 'speakerprint[tensorboard]'); metrics.jsonl has every record"
            )
        if wandb:
            self._wandb = _open_wandb(self.run_dir, wandb_project, config or {})

    def _restart_jsonl(self, resume_step: int | None) -> None:
        if resume_step is not None and self.path.exists():
            kept = [
                line
                for line in self.path.read_text(encoding="utf-8").splitlines()
                if line.strip() and json.loads(line).get("step", 0) <= resume_step
            ]
            self.path.write_text("".join(line + "\n" for line in kept), encoding="utf-8")
        elif self.path.exists():
            self.path.unlink()

    def write(self, record: dict[str, Any]) -> None:
        if not self.enabled:
            return
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")
        scalars = scalars_of(record)
        if not scalars or "step" not in record:
            return
        step = int(record["step"])
        if self._tb is not None:
            for name, value in scalars.items():
                self._tb.add_scalar(name, value, global_step=step)
            if record.get("event") == "dev":
                self._tb.flush()  # dev points are rare and the ones people wait for
        if self._wandb is not None:
            self._wandb.log({"step": step, **scalars})

    def close(self, *, curves: bool = True) -> Path | None:
        """Flush and close the mirrors; draw ``RUN/curves.png`` if asked and a drawer was given.

        Returns the figure's path, or None when none was drawn. A figure that cannot be drawn is a
        warning, never an error: the records are safe in ``metrics.jsonl`` whatever happens here.
        """
        if not self.enabled:
            return None
        if self._tb is not None:
            self._tb.close()
            self._tb = None
        if self._wandb is not None:
            self._wandb.finish()
            self._wandb = None
        return self.draw_curves() if curves else None

    def draw_curves(self) -> Path | None:
        """Draw ``RUN/curves.png`` with the drawer given at construction; None without one."""
        if self._draw_curves is None:
            return None
        return self._draw_curves(self.run_dir, self.run_dir / CURVES_FILE)


def _open_tensorboard(log_dir: Path, resume_step: int | None):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError as e:
        raise ConfigError(
            "train.tensorboard is true but the tensorboard package is not installed: "
            "pip install 'speakerprint[tensorboard]' (or set train.tensorboard to auto or false)"
        ) from e
    # purge_step drops the events a previous attempt wrote past the resumed step.
    purge = resume_step + 1 if resume_step is not None else None
    return SummaryWriter(log_dir=str(log_dir), purge_step=purge)


def _open_wandb(run_dir: Path, project: str, config: dict[str, Any]):
    try:
        import wandb
    except ImportError as e:
        raise ConfigError(
            "train.wandb is true but the wandb package is not installed: "
            "pip install 'speakerprint[wandb]' (or set train.wandb to false)"
        ) from e
    # One W&B run per run folder: a resumed run continues it instead of starting a second one.
    id_file = run_dir / _WANDB_ID_FILE
    run_id = id_file.read_text(encoding="utf-8").strip() if id_file.exists() else None
    if run_id is None:
        run_id = wandb.util.generate_id()
        run_dir.mkdir(parents=True, exist_ok=True)
        id_file.write_text(run_id + "\n", encoding="utf-8")
    run = wandb.init(
        project=project,
        name=run_dir.name,
        dir=str(run_dir),
        config=config,
        id=run_id,
        resume="allow",
    )
    # Our own step as the x axis: W&B's internal step only grows, so after a resume from an
    # earlier checkpoint its step would no longer be the training step.
    run.define_metric("step")
    run.define_metric("*", step_metric="step")
    return run
