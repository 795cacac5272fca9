"""`speakerprint diarize`: who spoke when, one RTTM per file (speakerprint.diarize)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from speakerprint.cli.app import MODEL_HELP, app, clean_errors


@app.command()
@clean_errors
def diarize(
    files: Annotated[list[Path], typer.Argument(help="Recordings to diarize")],
    out: Annotated[Path, typer.Option(help="Folder for FILE_STEM.rttm (and .json, .png)")],
    model: Annotated[
        str | None, typer.Option(help=f"{MODEL_HELP} (default: the shipped model)")
    ] = None,
    num_speakers: Annotated[
        int | None, typer.Option(help="The number of speakers, when known")
    ] = None,
    min_speakers: Annotated[int, typer.Option(help="Fewest speakers to find")] = 1,
    max_speakers: Annotated[int, typer.Option(help="Most speakers to find")] = 8,
    method: Annotated[
        str, typer.Option(help="ahc (agglomerative on cosine) or spectral (eigengap)")
    ] = "ahc",
    threshold: Annotated[
        float | None,
        typer.Option(help="Cosine at which windows are one speaker (default: the model's)"),
    ] = None,
    vad: Annotated[str, typer.Option(help="energy or silero (extra vad)")] = "energy",
    window_s: Annotated[float, typer.Option(help="Embedding window, seconds")] = 1.5,
    hop_s: Annotated[float, typer.Option(help="Between window starts, seconds")] = 0.75,
    db: Annotated[
        str | None,
        typer.Option("--db", help="Enrollment store: clusters matching a speaker take its name"),
    ] = None,
    json_: Annotated[bool, typer.Option("--json", help="Also write FILE_STEM.json")] = False,
    plot: Annotated[
        bool, typer.Option("--plot", help="Also draw FILE_STEM.png (extra viz)")
    ] = False,
    progress: Annotated[bool, typer.Option(help="Show a progress bar")] = True,
) -> None:
    """Find who spoke when in each recording; writes OUT/<file stem>.rttm per file."""
    from speakerprint.diarize import SpeakerBounds, diarize
    from speakerprint.errors import ConfigError
    from speakerprint.inference import SpeakerEncoder
    from speakerprint.utils.io import atomic_write_text

    SpeakerBounds(num_speakers, min_speakers, max_speakers)  # bad bounds fail before loading
    if method not in ("ahc", "spectral"):
        raise ConfigError(f"--method must be ahc or spectral, got {method!r}")
    stems = [f.stem for f in files]
    repeated = sorted({s for s in stems if stems.count(s) > 1})
    if repeated:
        raise ConfigError(f"two files share the stem {repeated[0]!r}: their RTTM would collide")
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} is a file; name a folder")
    if plot:
        from speakerprint.viz._common import require_matplotlib

        require_matplotlib()
    enc = SpeakerEncoder.from_pretrained(model)
    out.mkdir(parents=True, exist_ok=True)
    for file in files:
        result = diarize(
            file,
            encoder=enc,
            num_speakers=num_speakers,
            min_speakers=min_speakers,
            max_speakers=max_speakers,
            method=method,
            threshold=threshold,
            window_s=window_s,
            hop_s=hop_s,
            vad=vad,
            store=db,
            progress=progress,
        )
        written = [result.write_rttm(out / f"{file.stem}.rttm")]
        if json_:
            written.append(out / f"{file.stem}.json")
            atomic_write_text(written[-1], result.to_json() + "\n")
        if plot:
            from speakerprint.viz.timeline import plot_timeline

            written.append(
                plot_timeline(result.turns, out / f"{file.stem}.png", duration_s=result.duration_s)
            )
        for note in result.notes:
            typer.echo(f"note: {note}", err=True)
        typer.echo(
            f"{file}: {len(result.labels())} speaker(s) ({', '.join(result.labels()) or 'none'}), "
            f"{len(result.turns)} turn(s), {result.speech_s:.1f} s of speech in "
            f"{result.duration_s:.1f} s -> {', '.join(str(p) for p in written)}"
        )
