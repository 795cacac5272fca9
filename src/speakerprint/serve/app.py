"""The HTTP service behind ``speakerprint serve``: embed, verify, enroll and identify over HTTP.

Endpoints (JSON responses; uploads are ``multipart/form-data`` file fields):

- ``GET /health``: the model (fingerprint, embedding size, sample rate, threshold), the store and
  the limits. The only endpoint that never needs the API key.
- ``POST /embed``: ``audio`` -> the embedding (a list of ``embed_dim`` floats), the duration
  and ``speech_s`` (reported, never refused).
- ``POST /verify``: ``a``, ``b`` (and an optional ``threshold``) -> what
  ``speakerprint verify --json`` prints (score, threshold, same_speaker, threshold_source,
  ``llr`` for a calibrated model, ``speech_s`` ``{"a", "b"}``), from :meth:`SpeakerEncoder.verify`
  on the decoded uploads, plus the ``decision`` in words.
- ``POST /enroll``: ``name`` and one or more ``audio`` fields -> the speaker's new total and
  ``speech_s`` (a list, one per upload).
- ``POST /identify``: ``audio`` (``top_k``, optional ``threshold``) -> ranked speakers, the
  decision being the best one or ``"unknown"`` below the threshold, and ``speech_s``.

Too little speech: ``/verify``, ``/enroll`` and ``/identify`` measure the speech of every
upload (energy VAD, :mod:`speakerprint.inference.speech`) and refuse one with less than
``min_speech_s`` (default 1 s) with 422 ``too_little_speech``, naming the field and file, as the
CLI and the Python API refuse it: silence or a fragment gives a score that says nothing about
the speaker (silence against silence scores near 1), so no decision is made from it, and an
``/enroll`` with such an upload enrolls nothing.
- ``GET /speakers``, ``DELETE /speakers/{name}``.

The enrollment endpoints mirror ``speakerprint enroll / identify / speakers / remove`` on an
:func:`~speakerprint.inference.store.open_store` store made for the served model (a store made
by an older release for the same weights is migrated at startup).

Errors are JSON ``{"error": code, "detail": message, "field": ..., "filename": ...}``:
401 missing or wrong ``X-API-Key``; 413 an upload over ``max_upload_mb`` (counted as the body
streams in, so an oversized request is refused before it is all read, let alone decoded) or audio
longer than ``max_duration_s`` (from the header, or once decoding passes the limit); 408 a body
slower than ``body_timeout_s``; 400 an empty upload or a form the parser refuses (too many
parts, a part header or text field too large); 415 bytes that are not decodable audio; 422 a bad
form field or too little speech (``too_little_speech``); 404 an unknown speaker or no store;
409 identification against an empty store.
What hostile clients get, case by case, is in docs/reliability.md.

Inference is CPU-bound: each request decodes its uploads in a worker thread (at most
``inference_threads`` at once), then hands the waveforms to a dynamic batcher
(:mod:`speakerprint.serve.batcher`): waveforms of concurrent requests that arrive within
``batch_wait_ms`` of each other, up to ``batch_max_size``, are embedded in one forward pass,
in buckets of similar length. Padding is masked, so each embedding equals the Python API's for
the same audio (cosine >= 0.99999, tests/serve/test_batching.py). ``batch_max_size=1`` gives
the former service: one forward pass per waveform, model calls taking turns on a lock.
Each request opens its own SQLite connection, or takes a PostgreSQL one from a pool
(:class:`~speakerprint.inference.store.PgStorePool`); the store's transactions make concurrent
writers wait for each other, and an enrollment is all there or not at all, whenever the process
or the database server dies. A store that cannot be reached (PostgreSQL down or restarting, an
SQLite file locked past its busy timeout) is answered with 503 ``store_unavailable`` and
``Retry-After``; the pool reconnects by itself once the server is back.

Several processes (``speakerprint serve --workers N``) run :func:`app_from_environment`, each
with its own model and store connections, on one port.

Where things live: :class:`~speakerprint.serve.state.ServiceState` owns the encoder, its lock,
the worker threads and the store; the endpoints (:mod:`speakerprint.serve.routes`) are plain
functions that get it through a dependency; the API key and body size are checked by an ASGI
middleware (:mod:`speakerprint.serve.guard`) and every error is answered by one exception handler
per kind (``routes.ERROR_HANDLERS``).

FastAPI, uvicorn and python-multipart are imported by :func:`create_app`, never by
``import speakerprint``; without them it raises an ImportError naming
``pip install 'speakerprint[serve]'``.

>>> app = create_app(model="runs/x/bundle", store="speakers.db", api_key="s3cret")  # doctest: +SKIP
>>> import uvicorn; uvicorn.run(app, host="127.0.0.1", port=8000)  # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import inspect
import os
from typing import TYPE_CHECKING

from speakerprint.errors import ConfigError
from speakerprint.serve.state import ApiError, ServeLimits

if TYPE_CHECKING:
    from speakerprint.inference import SpeakerEncoder

__all__ = [
    "INSTALL_HINT",
    "SETTINGS_ENV",
    "ApiError",
    "ServeLimits",
    "app_from_environment",
    "create_app",
]

INSTALL_HINT = "pip install 'speakerprint[serve]'"
#: The environment variable holding :func:`create_app`'s arguments (a JSON object) for
#: :func:`app_from_environment`.
SETTINGS_ENV = "SPEAKERPRINT_SERVE_SETTINGS"


def _import_web():
    """fastapi and its form parser, or an ImportError naming the extra."""
    try:
        import fastapi
        import prometheus_client  # noqa: F401
        import starlette  # noqa: F401

        try:  # python-multipart >= 0.0.13 names its module python_multipart
            import python_multipart  # noqa: F401
        except ImportError:
            import multipart  # noqa: F401
    except ImportError as e:
        raise ImportError(
            f"the HTTP service needs fastapi, uvicorn, python-multipart and prometheus-client ({e}): {INSTALL_HINT}"
        ) from e
    return fastapi


def create_app(
    model: SpeakerEncoder | str | os.PathLike | None = None,
    store: str | os.PathLike | None = None,
    api_key: str | None = None,
    max_upload_mb: float = ServeLimits.max_upload_mb,
    max_duration_s: float = ServeLimits.max_duration_s,
    *,
    max_enroll_files: int = ServeLimits.max_enroll_files,
    inference_threads: int = ServeLimits.inference_threads,
    batch_max_size: int = ServeLimits.batch_max_size,
    batch_wait_ms: float = ServeLimits.batch_wait_ms,
    body_timeout_s: float = ServeLimits.body_timeout_s,
    min_speech_s: float = ServeLimits.min_speech_s,
):
    """The FastAPI application of the service (see the module docstring for the endpoints).

    Args:
        model: a :class:`~speakerprint.inference.SpeakerEncoder`, a bundle folder, or None for
            the model that ships with speakerprint. It must have a fingerprint (be loaded from a
            folder), which the store checks.
        store: the enrollment store's SQLite file or ``postgresql://`` URL, made for this model
            if missing; None serves no store (the enrollment endpoints answer 404).
        api_key: when set, every endpoint but ``/health`` needs it in the ``X-API-Key`` header.
        max_upload_mb: the largest upload per file, in MiB.
        max_duration_s: the longest audio per file, in seconds.
        max_enroll_files: the most recordings in one ``/enroll`` request.
        inference_threads: uploads decoded at once.
        batch_max_size: the most waveforms of concurrent requests embedded in one forward pass
            (dynamic batching, :mod:`speakerprint.serve.batcher`); 1 embeds each request alone
            under a model lock.
        batch_wait_ms: how long a waveform waits for others to share its forward pass.
        body_timeout_s: the longest a request body may take to arrive, in seconds (408 after).
        min_speech_s: the least speech per recording of /verify, /enroll and /identify, in
            seconds (422 ``too_little_speech`` under it); 0 turns the check off.

    Raises:
        ImportError: fastapi, uvicorn or python-multipart is missing (names the extra).
        ConfigError: a bad limit or an empty API key.
        BundleError, StoreError: the model cannot be loaded, or the store was made for another
            model or is not a store.
    """
    fastapi = _import_web()
    from speakerprint import __version__
    from speakerprint.inference import SpeakerEncoder
    from speakerprint.serve.guard import Guard
    from speakerprint.serve.observe import Observer
    from speakerprint.serve.routes import ERROR_HANDLERS, router
    from speakerprint.serve.state import ServiceState

    limits = ServeLimits(
        max_upload_mb=max_upload_mb,
        max_duration_s=max_duration_s,
        max_enroll_files=max_enroll_files,
        inference_threads=inference_threads,
        batch_max_size=batch_max_size,
        batch_wait_ms=batch_wait_ms,
        body_timeout_s=body_timeout_s,
        min_speech_s=min_speech_s,
    )
    if api_key is not None and not api_key.strip():
        raise ConfigError("the API key must not be empty (leave it unset to serve without one)")
    encoder = model if isinstance(model, SpeakerEncoder) else SpeakerEncoder.from_pretrained(model)
    service = ServiceState(encoder, store, limits, api_key_required=api_key is not None)

    @contextlib.asynccontextmanager
    async def lifespan(app):
        yield
        service.close()  # the batcher's model thread embeds what is waiting, then stops

    # FastAPI >= 0.164 passes form_limits to the form parser; older releases parse with
    # Starlette's defaults (1000 text fields of 1 MiB each, still within the guard's body limit).
    takes_form_limits = "form_limits" in inspect.signature(fastapi.FastAPI).parameters
    application = fastapi.FastAPI(
        lifespan=lifespan,
        title="speakerprint",
        version=__version__,
        description="Speaker embeddings, verification and identification over HTTP.",
        **({"form_limits": limits.form_limits} if takes_form_limits else {}),
    )
    application.add_middleware(Guard, api_key=api_key, limits=limits)
    application.add_middleware(Observer, metrics=service.metrics)  # outermost: sees every answer
    for exception, handler in ERROR_HANDLERS.items():
        application.add_exception_handler(exception, handler)
    application.include_router(router)
    application.state.service = service  # what the endpoints get through their dependency
    application.state.encoder = encoder
    application.state.store_path = service.store_path
    application.state.store_name = service.store_name  # printable: a URL without its password
    application.state.limits = limits
    return application


def app_from_environment():
    """:func:`create_app` with the arguments in the ``SPEAKERPRINT_SERVE_SETTINGS`` environment
    variable (a JSON object of its keyword arguments): the app factory each worker process of
    ``speakerprint serve --workers N`` calls (uvicorn's ``factory=True``), since uvicorn starts
    several workers from an import string, not from an app object.

    Each worker loads its own copy of the model and opens its own store connections.

    >>> os.environ[SETTINGS_ENV] = '{"model": "runs/x/bundle", "store": "speakers.db"}'
    ... # doctest: +SKIP
    >>> uvicorn.run("speakerprint.serve.app:app_from_environment", factory=True, workers=4)
    ... # doctest: +SKIP

    Raises:
        ConfigError: the variable is missing or not a JSON object; and as :func:`create_app`.
    """
    import json

    raw = os.environ.get(SETTINGS_ENV)
    try:
        settings = json.loads(raw) if raw is not None else None
    except json.JSONDecodeError as e:
        raise ConfigError(f"{SETTINGS_ENV} is not JSON: {e}") from None
    if not isinstance(settings, dict):
        raise ConfigError(
            f"{SETTINGS_ENV} must hold create_app's arguments as a JSON object, got {raw!r}"
        )
    return create_app(**settings)
