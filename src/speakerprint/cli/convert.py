"""``speakerprint convert``: peer toolkits' pretrained checkpoints to bundles."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from speakerprint.cli.app import app, clean_errors


@app.command("convert")
@clean_errors
def convert_cmd(
    source: Annotated[
        str,
        typer.Argument(help="speechbrain, wespeaker, nemo, pyannote, resemblyzer or speakerlab"),
    ],
    checkpoint: Annotated[
        Path,
        typer.Argument(
            help="SpeechBrain embedding_model.ckpt, WeSpeaker avg_model.pt, a NeMo .nemo archive "
            "or Resemblyzer's pretrained.pt (or the folder holding it)"
        ),
    ],
    out: Annotated[Path, typer.Option("--out", help="The bundle folder to write")],
    config: Annotated[
        Path | None,
        typer.Option(
            help="The peer's config file: WeSpeaker config.yaml, SpeechBrain hyperparams.yaml "
            "(default: beside the checkpoint)"
        ),
    ] = None,
) -> None:
    """Convert a peer toolkit's pretrained checkpoint into a speakerprint bundle."""
    from speakerprint.convert import convert

    path = convert(source, checkpoint, out, config=config)
    typer.echo(f"wrote {path}")
