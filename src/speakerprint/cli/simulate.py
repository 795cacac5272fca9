"""CLI: ``simulate-conversations MANIFEST --out DIR``, conversations for diarization tests."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from speakerprint.cli.app import app, clean_errors


@app.command("simulate-conversations")
@clean_errors
def simulate_conversations_cmd(
    manifest: Annotated[
        Path,
        typer.Argument(help="Utterances (JSONL); use speakers the model never saw, e.g. dev.jsonl"),
    ],
    out: Annotated[
        Path, typer.Option("--out", help="Folder for audio/, rttm/, reference.rttm and the index")
    ],
    num: Annotated[int, typer.Option("--num", help="Number of conversations")] = 50,
    min_speakers: Annotated[int, typer.Option(help="Fewest speakers in a conversation")] = 2,
    max_speakers: Annotated[int, typer.Option(help="Most speakers in a conversation")] = 4,
    overlap: Annotated[
        float, typer.Option(help="Target fraction of speech time with two speakers at once")
    ] = 0.0,
    pause_s: Annotated[
        tuple[float, float], typer.Option(help="MIN MAX seconds of pause between turns")
    ] = (0.2, 1.0),
    turn_s: Annotated[tuple[float, float], typer.Option(help="MIN MAX seconds a turn may last")] = (
        1.5,
        6.0,
    ),
    seed: Annotated[int, typer.Option(help="Seed: the same seed gives the same conversations")] = 0,
) -> None:
    """Simulate conversations from real utterances: audio, exact RTTM and an index."""
    from speakerprint.data.conversations import SimulationConfig, write_conversations

    config = SimulationConfig(
        num_conversations=num,
        min_speakers=min_speakers,
        max_speakers=max_speakers,
        overlap=overlap,
        pause_s=pause_s,
        turn_s=turn_s,
        seed=seed,
    )
    typer.echo(write_conversations(manifest, out, config).summary())
