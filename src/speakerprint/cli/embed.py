"""`speakerprint embed`: batch extraction of embeddings from files, folders, manifests and wav.scp.

Inputs, any mix of:
  - audio files: the key is the path as given;
  - folders: every audio file below them (recursive), keyed by the folder as given joined with
    the file's path inside it;
  - JSONL manifests (``*.jsonl``): keyed by ``utt_id``;
  - Kaldi ``wav.scp`` files (``*.scp``): ``<key> <path>`` per line, paths relative to the working
    directory as in Kaldi; piped commands (``... |``) and ark offsets are refused.

Outputs, chosen by ``--format`` or the extension of ``--out``:
  - ``npz``: one array (D,) per key;
  - ``npy``: one (N, D) float32 matrix plus ``OUT.keys.txt`` with the N keys in row order;
  - ``ark``: Kaldi binary float vectors (what ``copy-vector`` reads) plus ``OUT.scp`` with the byte
    offset of each vector;
  - ``jsonl``: ``{"key": ..., "embedding": [...]}`` per line.

Recordings are sorted by duration and packed into batches of at most ``--batch-seconds`` of padded
audio, so little compute goes to padding; padding never changes an embedding. Recordings over a
minute are embedded from streamed windows (:func:`speakerprint.inference.extract.embed_recording`).
The library is :mod:`speakerprint.inference.extract`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from speakerprint.cli.app import MODEL_HELP, app, clean_errors


@app.command()
@clean_errors
def embed(
    inputs: Annotated[
        list[Path],
        typer.Argument(help="Audio files, folders (recursive), JSONL manifests, Kaldi wav.scp"),
    ],
    out: Annotated[
        Path, typer.Option(help="Output file: .npz, .npy (+ .keys.txt), .ark (+ .scp), .jsonl")
    ],
    format_: Annotated[
        str | None,
        typer.Option("--format", help="npz, npy, ark or jsonl (default: from --out's extension)"),
    ] = None,
    model: Annotated[
        str | None, typer.Option(help=f"{MODEL_HELP} (default: the shipped model)")
    ] = None,
    batch_seconds: Annotated[
        float, typer.Option(help="Most padded audio per batch, in seconds")
    ] = 120.0,
    device: Annotated[str, typer.Option(help="cpu, cuda, cuda:1 ...")] = "cpu",
    skip_bad: Annotated[
        bool,
        typer.Option(
            "--skip-bad",
            help="Skip unreadable files (listed in OUT.skipped.txt) instead of failing",
        ),
    ] = False,
    progress: Annotated[bool, typer.Option(help="Show a progress bar")] = True,
    compile_: Annotated[
        bool,
        typer.Option(
            "--compile",
            help="Run the encoder through torch.compile: faster on long jobs, after a compile "
            "of up to a minute (needs a C++ compiler on CPU)",
        ),
    ] = False,
) -> None:
    """Embed many recordings into one file; keys are the paths as given (utt_id for manifests,
    the key for wav.scp)."""

    from speakerprint.errors import ConfigError
    from speakerprint.inference import SpeakerEncoder
    from speakerprint.inference.extract import (
        FORMATS,
        check_keys,
        collect_inputs,
        companion_path,
        extract_embeddings,
        write_embeddings,
    )
    from speakerprint.train.device import resolve_device
    from speakerprint.utils.io import atomic_write_text

    fmt = format_ if format_ is not None else out.suffix.lower().lstrip(".")
    if fmt not in FORMATS:
        where = f"--format {format_}" if format_ is not None else f"the extension of --out {out}"
        raise ConfigError(f"{where}: the output format must be one of {', '.join(FORMATS)}")
    if not batch_seconds > 0:
        raise ConfigError(f"--batch-seconds must be positive, got {batch_seconds}")
    device = str(resolve_device(device, option="--device"))  # the one check, as train's
    if out.is_dir():
        raise ConfigError(f"--out {out} is a folder; name a file")

    items = collect_inputs(inputs)
    check_keys([i.key for i in items], fmt)
    enc = SpeakerEncoder.from_pretrained(model, device=device, compile=compile_)
    result = extract_embeddings(
        enc, items, batch_seconds=batch_seconds, skip_bad=skip_bad, progress=progress
    )
    written = write_embeddings(out, fmt, result.keys, result.embeddings)
    lines = [
        f"wrote {len(result.keys)} embeddings of dimension {enc.embed_dim} to "
        + ", ".join(str(p) for p in written)
    ]
    if result.skipped:
        skipped_file = companion_path(out, ".skipped.txt")
        atomic_write_text(skipped_file, "".join(f"{p}\t{r}\n" for p, r in result.skipped))
        lines.append(f"skipped {len(result.skipped)} unreadable file(s), listed in {skipped_file}")
    lines.append(
        f"{result.audio_s:.1f} s of audio in {result.wall_s:.1f} s on {enc.device}: "
        f"{result.audio_s / max(result.wall_s, 1e-9):.1f} s of audio per second"
    )
    typer.echo("\n".join(lines))
