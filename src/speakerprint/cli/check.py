"""`speakerprint check`: validate a manifest and its trial lists before a long run."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from speakerprint.cli.app import app, clean_errors


@app.command()
@clean_errors
def check(
    manifest: Annotated[Path, typer.Argument(help="Manifest (JSONL) to check")],
    trials: Annotated[
        list[Path] | None,
        typer.Option(
            "--trials", help="A trial list whose ids must be in the manifest (repeatable)"
        ),
    ] = None,
    scan: Annotated[
        bool,
        typer.Option(
            "--scan",
            help="Also decode every file: finite, not silent, sample rate and duration as stated",
        ),
    ] = False,
) -> None:
    """Check a manifest: JSON lines, fields, duplicate ids, missing files, trial ids; with --scan
    every file decodes and matches its line. Lists every problem with its line; exit status 1 if
    there is any."""
    from speakerprint.data.check import check_manifest

    def progress(done: int, total: int) -> None:
        if sys.stderr.isatty() and (done == total or done % 100 == 0):
            typer.echo(f"\rscanned {done}/{total}", err=True, nl=done == total)

    report = check_manifest(manifest, trials=trials or [], scan=scan, progress=progress)
    for problem in report.problems:
        typer.echo(problem)
    typer.echo(report.summary())
    if not report.ok:
        raise typer.Exit(1)
