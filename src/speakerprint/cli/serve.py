"""`speakerprint serve`: the HTTP service (see speakerprint.serve.app) under uvicorn."""

from __future__ import annotations

from typing import Annotated

import typer

from speakerprint.cli.app import MIN_SPEECH_HELP, MODEL_HELP, app, clean_errors, min_speech_s

_LOOPBACK = {"127.0.0.1", "localhost", "::1"}


@app.command()
@clean_errors
def serve(
    model: Annotated[
        str | None,
        typer.Option(
            help=f"{MODEL_HELP} (default: the model the --db store was made with, else the "
            "shipped model)"
        ),
    ] = None,
    db: Annotated[
        str | None,
        typer.Option(
            help="Enrollment store (SQLite file or postgresql:// URL; made if missing). Without "
            "it /enroll, /identify and /speakers answer 404"
        ),
    ] = None,
    host: Annotated[str, typer.Option(help="Address to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port")] = 8000,
    api_key: Annotated[
        str | None,
        typer.Option(
            envvar="SPEAKERPRINT_API_KEY",
            show_envvar=True,
            help="Require this key in the X-API-Key header on every endpoint but /health",
        ),
    ] = None,
    max_upload_mb: Annotated[float, typer.Option(help="Largest upload per file, MiB")] = 10.0,
    max_duration_s: Annotated[float, typer.Option(help="Longest audio per file, seconds")] = 60.0,
    max_enroll_files: Annotated[
        int, typer.Option(help="Most recordings in one /enroll request")
    ] = 20,
    inference_threads: Annotated[int, typer.Option(help="Uploads decoded at once")] = 2,
    batch_max_size: Annotated[
        int,
        typer.Option(
            help="Most waveforms of concurrent requests embedded in one forward pass "
            "(1: each request alone, model calls take turns)"
        ),
    ] = 16,
    batch_wait_ms: Annotated[
        float, typer.Option(help="How long a waveform waits for others to share its forward pass")
    ] = 5.0,
    body_timeout_s: Annotated[
        float,
        typer.Option(help="Longest a request body may take to arrive, seconds (408 after)"),
    ] = 30.0,
    min_speech: Annotated[
        float | None, typer.Option("--min-speech-s", help=MIN_SPEECH_HELP, show_default=False)
    ] = None,
    workers: Annotated[
        int,
        typer.Option(
            help="Server processes on the port, each with its own copy of the model (memory "
            "grows with each); SQLite stores are shared through WAL, PostgreSQL through a pool "
            "per process"
        ),
    ] = 1,
    log_level: Annotated[
        str, typer.Option(help="uvicorn's log level: critical, error, warning, info, debug")
    ] = "info",
) -> None:
    """Serve embed, verify, enroll and identify over HTTP (FastAPI + uvicorn).

    Endpoints: GET /health, POST /embed, /verify, /enroll, /identify, GET /speakers,
    DELETE /speakers/{name}; uploads are multipart file fields. Needs the "serve" extra
    (fastapi, uvicorn, python-multipart).
    """
    from speakerprint.cli.store import _store_model
    from speakerprint.errors import ConfigError

    if not 0 <= port <= 65535:
        raise ConfigError(f"--port must be between 0 and 65535, got {port}")
    if workers < 1:
        raise ConfigError(f"--workers must be at least 1, got {workers}")
    if log_level not in ("critical", "error", "warning", "info", "debug", "trace"):
        raise ConfigError(
            f"--log-level must be one of critical, error, warning, info, debug; got {log_level!r}"
        )
    try:
        import uvicorn

        from speakerprint.serve import create_app

        settings = dict(  # create_app's arguments; each worker of --workers gets them as JSON
            model=_store_model(db, model) if db is not None else model,
            store=db,
            api_key=api_key,
            max_upload_mb=max_upload_mb,
            max_duration_s=max_duration_s,
            max_enroll_files=max_enroll_files,
            inference_threads=inference_threads,
            batch_max_size=batch_max_size,
            batch_wait_ms=batch_wait_ms,
            body_timeout_s=body_timeout_s,
            min_speech_s=min_speech_s(min_speech),
        )
        # Built here also with --workers: a bad option, model or store is one error, not one
        # per worker, and the store is made (or migrated) once.
        application = create_app(**settings)
    except ImportError as e:
        from speakerprint.serve import INSTALL_HINT

        message = str(e) if INSTALL_HINT in str(e) else f"{e}: {INSTALL_HINT}"
        raise ConfigError(message) from None
    encoder = application.state.encoder
    typer.echo(
        f"serving {encoder.path} (fingerprint {encoder.fingerprint[:16]}...) on "
        f"http://{host}:{port}; store: {application.state.store_name or 'none'}; API key: "
        f"{'required' if api_key is not None else 'not required'}",
        err=True,
    )
    if api_key is None and host not in _LOOPBACK:
        typer.echo(
            f"warning: listening on {host} without an API key: anyone who can reach it can "
            "enroll and remove speakers (set --api-key or SPEAKERPRINT_API_KEY)",
            err=True,
        )
    logging = {"log_level": log_level, "log_config": _log_config(log_level), "access_log": False}
    if workers == 1:
        uvicorn.run(application, host=host, port=port, **logging)
        return
    _run_workers(application, settings, workers, host=host, port=port, **logging)


def _log_config(log_level: str) -> dict:
    """uvicorn's logging configuration plus the service's request log (``speakerprint.serve``:
    one line per request with its id, which replaces uvicorn's access log). uvicorn applies it
    in every worker process."""
    import copy

    from uvicorn.config import LOGGING_CONFIG

    config = copy.deepcopy(LOGGING_CONFIG)
    config["loggers"]["speakerprint.serve"] = {
        "handlers": ["default"],
        "level": "INFO" if log_level == "trace" else log_level.upper(),
        "propagate": False,
    }
    return config


def _run_workers(application, settings: dict, workers: int, **uvicorn_options) -> None:
    """uvicorn's process supervisor with ``workers`` processes, each building the app from
    ``settings`` (:func:`speakerprint.serve.app.app_from_environment`); ``application`` was
    only the check, and its threads and connections are closed first."""
    import json
    import os

    import uvicorn

    from speakerprint.serve.app import SETTINGS_ENV

    application.state.service.close()
    os.environ[SETTINGS_ENV] = json.dumps(settings)  # inherited by the worker processes
    uvicorn.run(
        "speakerprint.serve.app:app_from_environment",
        factory=True,
        workers=workers,
        **uvicorn_options,
    )
