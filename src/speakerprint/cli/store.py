"""Enrollment store commands: enroll, identify, speakers, remove (see speakerprint.inference.store).

DB is an SQLite file or a ``postgresql://`` / ``postgres://`` URL
(speakerprint.inference.store.postgres); it stays a string, since a Path would fold the URL's "//".
A store made by an older release for the same weights is migrated when a command opens it with
the model (enroll, identify).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from speakerprint.cli.app import MIN_SPEECH_HELP, MODEL_HELP, app, clean_errors, min_speech_s

_MODEL_HELP = f"{MODEL_HELP} (default: the model the store was made with, else the shipped model)"
_DB_HELP = "Enrollment store: an SQLite file or a postgresql:// URL"


def _shown(db: str) -> str:
    """``db`` as printed: a URL without its password."""
    from speakerprint.inference.store import is_store_url, redact_url

    return redact_url(db) if is_store_url(db) else db


def _store_model(db: str | Path, model: str | None) -> str | None:
    """The bundle to use with store ``db``: the one given, else the one recorded in the store
    (when it is still there), else None (the shipped model). The fingerprint check decides."""
    from speakerprint.inference.store import open_store, store_exists

    if model is not None or not store_exists(db):
        return model
    with open_store(db) as store:
        recorded = store.model_path
    return recorded if recorded and Path(recorded).is_dir() else None


@app.command()
@clean_errors
def enroll(
    db: Annotated[str, typer.Argument(help=f"{_DB_HELP} (the store is made if missing)")],
    name: Annotated[str, typer.Argument(help="Speaker name")],
    files: Annotated[list[Path], typer.Argument(help="Enrollment recordings of the speaker")],
    model: Annotated[str | None, typer.Option(help=_MODEL_HELP)] = None,
    min_speech: Annotated[
        float | None, typer.Option("--min-speech-s", help=MIN_SPEECH_HELP, show_default=False)
    ] = None,
) -> None:
    """Add recordings of a speaker to an enrollment store (creating the store if needed)."""
    from speakerprint.inference import SpeakerEncoder
    from speakerprint.inference.extract import embed_speech
    from speakerprint.inference.store import check_speaker_name, open_store

    check_speaker_name(name)  # before any embedding: a bad name costs nothing
    needed = min_speech_s(min_speech)
    enc = SpeakerEncoder.from_pretrained(_store_model(db, model))
    # Embed everything before opening the store: a bad file, or one with too little speech,
    # leaves the store untouched (or unmade).
    recordings = [embed_speech(enc, f, min_speech_s=needed) for f in files]
    with open_store(
        db,
        model_fingerprint=enc.fingerprint,
        embed_dim=enc.embed_dim,
        model_path=str(enc.path.resolve()) if enc.path is not None else None,
        create=True,
        legacy_fingerprints=enc.legacy_fingerprints,
    ) as store:
        total = store.enroll(
            name,
            [r.embedding for r in recordings],
            sources=[str(f) for f in files],
            model_fingerprint=enc.fingerprint,
        )
    speech = ", ".join(f"{r.speech_s:.1f}" for r in recordings)
    typer.echo(
        f"enrolled {name}: {len(files)} new recording(s), {total} in all, in {_shown(db)} "
        f"(speech: {speech} s)"
    )


@app.command()
@clean_errors
def identify(
    db: Annotated[str, typer.Argument(help=_DB_HELP)],
    file: Annotated[Path, typer.Argument(help="Recording of the speaker to identify")],
    top_k: Annotated[int, typer.Option(help="Candidates to list")] = 5,
    threshold: Annotated[
        float | None,
        typer.Option(help="Lowest score accepted as a known speaker (default: the bundle's)"),
    ] = None,
    model: Annotated[str | None, typer.Option(help=_MODEL_HELP)] = None,
    min_speech: Annotated[
        float | None, typer.Option("--min-speech-s", help=MIN_SPEECH_HELP, show_default=False)
    ] = None,
    json_: Annotated[bool, typer.Option("--json", help="Print JSON")] = False,
) -> None:
    """Say which enrolled speaker a recording is, or "unknown" when none scores high enough."""
    import dataclasses

    from speakerprint.errors import ConfigError
    from speakerprint.inference import SpeakerEncoder
    from speakerprint.inference.extract import embed_speech
    from speakerprint.inference.store import open_store

    if top_k < 1:
        raise ConfigError(f"--top-k must be at least 1, got {top_k}")
    needed = min_speech_s(min_speech)
    with open_store(db) as store:
        enc = SpeakerEncoder.from_pretrained(_store_model(db, model))
        store.check_model(enc.fingerprint, enc.legacy_fingerprints)
        threshold, source = enc.bundle.decision_threshold(threshold)
        query = embed_speech(enc, file, min_speech_s=needed)
        result = store.identify(
            query.embedding, threshold=threshold, model_fingerprint=enc.fingerprint, top_k=top_k
        )
        result = dataclasses.replace(result, speech_s=query.speech_s)
    if json_:
        payload = {"file": str(file), **result.to_dict(), "threshold_source": source}
        typer.echo(json.dumps(payload, indent=2))
        return
    verdict = result.speaker if result.known else "unknown"
    lines = [
        f"{verdict}: best score {result.score:.4f}, threshold {threshold:.4f} ({source}); "
        f"{result.speech_s:.1f} s of speech"
    ]
    lines += [f"  {i}. {n}  {s:.4f}" for i, (n, s) in enumerate(result.candidates, start=1)]
    typer.echo("\n".join(lines))


@app.command()
@clean_errors
def speakers(db: Annotated[str, typer.Argument(help=_DB_HELP)]) -> None:
    """List the speakers of an enrollment store with their number of recordings."""
    from speakerprint.inference.store import open_store

    with open_store(db) as store:
        entries = store.speakers()
        model_path = store.model_path
    lines = [f"{e.name}\t{e.num_embeddings}" for e in entries]
    lines.append(
        f"{len(entries)} speaker(s) in {_shown(db)} (model: {model_path or 'not recorded'})"
    )
    typer.echo("\n".join(lines))


@app.command()
@clean_errors
def remove(
    db: Annotated[str, typer.Argument(help=_DB_HELP)],
    name: Annotated[str, typer.Argument(help="Speaker to remove")],
) -> None:
    """Remove a speaker and all its recordings from an enrollment store."""
    from speakerprint.inference.store import open_store

    with open_store(db) as store:
        count = store.remove(name)
    typer.echo(f"removed {name} ({count} recording(s)) from {_shown(db)}")
