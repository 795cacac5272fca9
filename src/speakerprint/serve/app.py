"""The HTTP service behind ``speakerprint serve``: embed, verify, enroll and identify over HTTP.

Endpoints (JSON responses; uploads are ``multipart/form-data`` file fields):

- ``GET /health``: the model (fingerprint, embedding size, sample rate, threshold), the store and
  the limits. The only endpoint that never needs the API key.
- ``POST /embed``: ``audio`` -> the embedding (a list of ``embed_dim`` floats) and the duration.
- ``POST /verify``: ``a``, ``b`` (and an optional ``threshold``) -> what
  ``speakerprint verify --json`` prints (score, threshold, same_speaker, threshold_source, and
  ``llr`` for a calibrated model), from :meth:`SpeakerEncoder.verify` on the decoded uploads,
  plus the ``decision`` in words.
- ``POST /enroll``: ``name`` and one or more ``audio`` fields -> the speaker's new total.
- ``POST /identify``: ``audio`` (``top_k``, optional ``threshold``) -> ranked speakers, the
  decision being the best one or ``"unknown"`` below the threshold.
- ``GET /speakers``, ``DELETE /speakers/{name}``.

The enrollment endpoints mirror ``speakerprint enroll / identify / speakers / remove`` on an
:func:`~speakerprint.inference.store.open_store` store made for the served model (a store made
by an older release for the same weights is migrated at startup).

Errors are JSON ``{"error": code, "detail": message, "field": ..., "filename": ...}``:
401 missing or wrong ``X-API-Key``; 413 an upload over ``max_upload_mb`` (counted as the body
streams in, so an oversized request is refused before it is all read, let alone decoded) or audio
longer than ``max_duration_s`` (read from the header before decoding); 400 an empty upload;
415 bytes that are not decodable audio; 422 a bad form field; 404 an unknown speaker or no store;
409 identification against an empty store.

Inference is CPU-bound: each request's decoding and embedding run in worker threads, at most
``inference_threads`` requests at once, and model calls are serialised by a lock, so concurrent
requests get exactly the embeddings of the Python API. Each request opens its own SQLite (or
PostgreSQL) connection; the store's transactions make concurrent writers wait for each other.

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

import os
from typing import TYPE_CHECKING

from speakerprint.errors import ConfigError
from speakerprint.serve.state import ApiError, ServeLimits

if TYPE_CHECKING:
    from speakerprint.inference import SpeakerEncoder

__all__ = ["INSTALL_HINT", "ApiError", "ServeLimits", "create_app"]

INSTALL_HINT = "pip install 'speakerprint[serve]'"


def _import_web():
    """fastapi and its form parser, or an ImportError naming the extra."""
    try:
        import fastapi
        import starlette  # noqa: F401

        try:  # python-multipart >= 0.0.13 names its module python_multipart
            import python_multipart  # noqa: F401
        except ImportError:
            import multipart  # noqa: F401
    except ImportError as e:
        raise ImportError(
            f"the HTTP service needs fastapi, uvicorn and python-multipart ({e}): {INSTALL_HINT}"
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
        inference_threads: requests decoded and embedded at once.

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
    from speakerprint.serve.routes import ERROR_HANDLERS, router
    from speakerprint.serve.state import ServiceState

    limits = ServeLimits(
        max_upload_mb=max_upload_mb,
        max_duration_s=max_duration_s,
        max_enroll_files=max_enroll_files,
        inference_threads=inference_threads,
    )
    if api_key is not None and not api_key.strip():
        raise ConfigError("the API key must not be empty (leave it unset to serve without one)")
    encoder = model if isinstance(model, SpeakerEncoder) else SpeakerEncoder.from_pretrained(model)
    service = ServiceState(encoder, store, limits, api_key_required=api_key is not None)

    application = fastapi.FastAPI(
        title="speakerprint",
        version=__version__,
        description="Speaker embeddings, verification and identification over HTTP.",
    )
    application.add_middleware(Guard, api_key=api_key, limits=limits)
    for exception, handler in ERROR_HANDLERS.items():
        application.add_exception_handler(exception, handler)
    application.include_router(router)
    application.state.service = service  # what the endpoints get through their dependency
    application.state.encoder = encoder
    application.state.store_path = service.store_path
    application.state.store_name = service.store_name  # printable: a URL without its password
    application.state.limits = limits
    return application
