"""CLI: ``eval-diarization REF.rttm HYP.rttm``, DER with its three parts per file and in total."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from speakerprint.cli.app import app, clean_errors

# Scored when no --collar is given: the NIST standard and none, in seconds on each side.
DEFAULT_COLLARS_S = (0.25, 0.0)


def _percent(rate: float) -> str:
    return f"{100 * rate:6.2f}%" if rate != float("inf") else "    inf"


def _table(report, collar_s: float, skip_overlap: bool) -> list[str]:
    overlap = "overlap not scored" if skip_overlap else "overlap scored"
    lines = [
        f"collar {collar_s:g} s each side, {overlap}",
        f"  {'file':<24} {'DER':>7} {'missed':>7} {'f.alarm':>7} {'confus.':>7} {'speech_s':>9}",
    ]
    rows = [*report.per_file.items(), ("TOTAL", report.total)]
    for name, score in rows:
        lines.append(
            f"  {name:<24} {_percent(score.der)} {_percent(score.missed)} "
            f"{_percent(score.false_alarm)} {_percent(score.confusion)} {score.total_s:9.2f}"
        )
    return lines


@app.command("eval-diarization")
@clean_errors
def eval_diarization_cmd(
    reference: Annotated[Path, typer.Argument(help="Reference RTTM")],
    hypothesis: Annotated[Path, typer.Argument(help="Hypothesis RTTM (e.g. from diarize)")],
    collar: Annotated[
        list[float] | None,
        typer.Option(
            "--collar",
            help="Seconds not scored on each side of every reference boundary (NIST's "
            "convention), repeatable [default: 0.25 and 0]",
        ),
    ] = None,
    skip_overlap: Annotated[
        bool, typer.Option("--skip-overlap", help="Do not score regions where speakers overlap")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table")] = False,
) -> None:
    """Diarization error rate (missed speech, false alarm, speaker confusion) of HYP against REF,
    per file and in total (seconds summed over files, as NIST's md-eval does)."""
    from speakerprint.data.rttm import read_rttm
    from speakerprint.errors import ConfigError, ManifestError
    from speakerprint.eval.diarization import diarization_error_files

    collars = tuple(collar) if collar else DEFAULT_COLLARS_S
    bad = [c for c in collars if not (c >= 0 and c != float("inf"))]
    if bad:
        raise ConfigError(f"--collar must be a finite number of seconds >= 0, got {bad[0]}")
    ref, hyp = read_rttm(reference), read_rttm(hypothesis)
    if not ref:
        raise ManifestError(f"{reference}: no SPEAKER turns, so nothing to score against")
    reports = [
        diarization_error_files(ref, hyp, collar_s=c, skip_overlap=skip_overlap) for c in collars
    ]
    missing_hyp, missing_ref = reports[0].missing_in_hypothesis, reports[0].missing_in_reference
    if as_json:
        out = {
            "reference": str(reference),
            "hypothesis": str(hypothesis),
            "missing_in_hypothesis": missing_hyp,
            "missing_in_reference": missing_ref,
            "scores": [
                {
                    "collar_s": r.total.collar_s,
                    "skip_overlap": skip_overlap,
                    "total": r.total.to_dict(),
                    "per_file": {k: s.to_dict() for k, s in r.per_file.items()},
                }
                for r in reports
            ],
        }
        typer.echo(json.dumps(out, indent=2))
        return
    lines = []
    if missing_hyp:
        lines.append(f"in {reference} only, scored as missed speech: {', '.join(missing_hyp)}")
    if missing_ref:
        lines.append(f"in {hypothesis} only, not scored: {', '.join(missing_ref)}")
    for r in reports:
        lines += _table(r, r.total.collar_s, skip_overlap)
    typer.echo("\n".join(lines))
