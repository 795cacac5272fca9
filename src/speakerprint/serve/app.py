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

FastAPI, uvicorn and python-multipart are imported by :func:`create_app`, never by
``import speakerprint``; without them it raises an ImportError naming
``pip install 'speakerprint[serve]'``.

>>> app = create_app(model="runs/x/bundle", store="speakers.db", api_key="s3cret")  # doctest: +SKIP
>>> import uvicorn; uvicorn.run(app, host="127.0.0.1", port=8000)  # doctest: +SKIP
"""

# No ``from __future__ import annotations`` here: FastAPI reads the endpoints' annotations at
# run time, and the endpoints are closures over names imported inside create_app.

import hmac
import json
import logging
import math
import os
import re
import shutil
import tempfile
import threading
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import numpy as np

from speakerprint.errors import ConfigError, SpeakerprintError

if TYPE_CHECKING:
    from speakerprint.inference import SpeakerEncoder

__all__ = ["INSTALL_HINT", "ServeLimits", "create_app"]

INSTALL_HINT = "pip install 'speakerprint[serve]'"
API_KEY_HEADER = "X-API-Key"

logger = logging.getLogger(__name__)

#: Form overhead allowed on top of the uploads (boundaries, part headers, text fields).
_FORM_OVERHEAD_BYTES = 64 * 1024
#: Paths that never need the API key.
_OPEN_PATHS = frozenset({"/health"})
_SUFFIX = re.compile(r"\.[A-Za-z0-9]{1,8}")


@dataclass(frozen=True)
class ServeLimits:
    """What one request may send.

    Attributes:
        max_upload_mb: the largest upload, per file, in MiB.
        max_duration_s: the longest audio, per file, in seconds.
        max_enroll_files: the most recordings one ``/enroll`` request may carry.
        inference_threads: requests decoded and embedded at once (model calls are serialised).
    """

    max_upload_mb: float = 10.0
    max_duration_s: float = 60.0
    max_enroll_files: int = 20
    inference_threads: int = 2

    def __post_init__(self) -> None:
        for name in ("max_upload_mb", "max_duration_s"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ConfigError(f"{name} must be a number, got {value!r}")
            if not (math.isfinite(value) and value > 0):
                raise ConfigError(f"{name} must be a positive number, got {value!r}")
        for name in ("max_enroll_files", "inference_threads"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"{name} must be a whole number >= 1, got {value!r}")

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * 1024 * 1024)

    def body_limit(self, path: str) -> int:
        """The most bytes a request body to ``path`` may have: its uploads plus form overhead."""
        files = {"/embed": 1, "/identify": 1, "/verify": 2, "/enroll": self.max_enroll_files}
        return files.get(path, 0) * self.max_upload_bytes + _FORM_OVERHEAD_BYTES


class ApiError(Exception):
    """A client error: answered with ``status`` and a JSON body naming the field and file."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        field: str | None = None,
        filename: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.body: dict[str, Any] = {"error": code, "detail": message}
        if field is not None:
            self.body["field"] = field
        if filename is not None:
            self.body["filename"] = filename


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


# -- the ASGI guard: API key and body size, before any route reads the body ----------------------


async def _send_json(send, status: int, body: dict) -> None:
    data = json.dumps(body).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(data)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": data})


class _Guard:
    """Pure ASGI middleware: checks the API key and the declared body size before the app runs,
    then counts body bytes as they arrive and stops the request once they exceed the limit.

    Done here rather than in route dependencies because FastAPI parses (and spools) a form body
    before it runs a route's dependencies.
    """

    def __init__(
        self,
        app,
        *,
        api_key: str | None,
        limits: ServeLimits,
        too_large: Callable[[dict], Exception],
    ) -> None:
        self.app = app
        self.api_key = None if api_key is None else api_key.encode()
        self.limits = limits
        self.too_large = too_large

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope["path"]
        headers = dict(scope.get("headers") or [])
        if self.api_key is not None and path not in _OPEN_PATHS:
            given = headers.get(API_KEY_HEADER.lower().encode())
            if given is None:
                await _send_json(
                    send,
                    401,
                    {"error": "missing_api_key", "detail": f"send the {API_KEY_HEADER} header"},
                )
                return
            if not hmac.compare_digest(given, self.api_key):
                await _send_json(
                    send, 401, {"error": "wrong_api_key", "detail": f"wrong {API_KEY_HEADER}"}
                )
                return
        limit = self.limits.body_limit(path)
        declared = headers.get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            await _send_json(send, 413, self._too_large_body(path, int(declared), limit, False))
            return

        received = 0

        async def counting_receive():
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise self.too_large(self._too_large_body(path, received, limit, True))
            return message

        await self.app(scope, counting_receive, send)

    def _too_large_body(self, path: str, size: int, limit: int, streamed: bool) -> dict:
        size_text = f"sent at least {size}" if streamed else f"declares {size}"
        return {
            "error": "upload_too_large",
            "detail": (
                f"the request to {path} {size_text} bytes, over its limit of {limit} bytes "
                f"(at most {self.limits.max_upload_mb:g} MiB per upload)"
            ),
        }


# -- uploads -------------------------------------------------------------------------------------


def _upload_size(upload) -> int:
    """Bytes of a parsed upload (its spooled file), without reading it."""
    f = upload.file
    position = f.tell()
    f.seek(0, os.SEEK_END)
    size = f.tell()
    f.seek(position)
    return size


def _check_uploads(uploads: list[tuple[str, Any]], limits: ServeLimits) -> None:
    """Size checks of every upload, before any is decoded: 413 over the limit, 400 empty."""
    for field, upload in uploads:
        size = _upload_size(upload)
        if size > limits.max_upload_bytes:
            raise ApiError(
                413,
                "upload_too_large",
                f"{field}: {size} bytes, over the limit of {limits.max_upload_mb:g} MiB",
                field=field,
                filename=upload.filename,
            )
        if size == 0:
            raise ApiError(
                400,
                "empty_upload",
                f"{field}: the upload is empty (0 bytes)",
                field=field,
                filename=upload.filename,
            )


def _decode(field: str, upload, sample_rate: int, limits: ServeLimits) -> np.ndarray:
    """An upload as a mono float32 waveform at ``sample_rate``, through ``load_audio``.

    The upload is copied to a temporary file keeping its extension (load_audio picks the decoder
    by extension and falls back to FFmpeg's probing). The duration is read from the header before
    decoding, and checked again after it (a header can lie).
    """
    from speakerprint.audio import AudioLoadError, audio_info, load_audio

    filename = upload.filename
    suffix = Path(filename or "").suffix
    suffix = suffix if _SUFFIX.fullmatch(suffix) else ""
    too_long = "{field}: {duration:.2f} s of audio, over the limit of {limit:g} s"
    with tempfile.TemporaryDirectory(prefix="speakerprint-serve-") as tmp:
        path = Path(tmp) / f"upload{suffix}"
        upload.file.seek(0)
        with open(path, "wb") as out:
            shutil.copyfileobj(upload.file, out, 1024 * 1024)
        try:
            duration = audio_info(path).duration_s
            if duration > limits.max_duration_s:
                raise ApiError(
                    413,
                    "audio_too_long",
                    too_long.format(field=field, duration=duration, limit=limits.max_duration_s),
                    field=field,
                    filename=filename,
                )
            wav = load_audio(path, sample_rate)
        except AudioLoadError as e:
            # The reason may quote the temporary path: name the upload instead.
            reason = e.reason.replace(str(path), filename or field)
            raise ApiError(
                415,
                "undecodable_audio",
                f"{field}: not decodable audio: {reason}",
                field=field,
                filename=filename,
            ) from None
    duration = len(wav) / sample_rate
    if duration > limits.max_duration_s + 1.0 / sample_rate:
        raise ApiError(
            413,
            "audio_too_long",
            too_long.format(field=field, duration=duration, limit=limits.max_duration_s),
            field=field,
            filename=filename,
        )
    return wav


def _source_name(field: str, upload) -> str:
    return upload.filename or field


# -- the app -------------------------------------------------------------------------------------


def create_app(
    model: "SpeakerEncoder | str | os.PathLike | None" = None,
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
    from anyio import CapacityLimiter, to_thread
    from fastapi import File, Form, UploadFile
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse
    from starlette.exceptions import HTTPException

    from speakerprint import __version__
    from speakerprint.errors import BundleError
    from speakerprint.inference import SpeakerEncoder
    from speakerprint.inference.store import StoreError, is_store_url, redact_url
    from speakerprint.inference.store import open_store as open_enrollment_store

    limits = ServeLimits(
        max_upload_mb=max_upload_mb,
        max_duration_s=max_duration_s,
        max_enroll_files=max_enroll_files,
        inference_threads=inference_threads,
    )
    if api_key is not None and not api_key.strip():
        raise ConfigError("the API key must not be empty (leave it unset to serve without one)")
    encoder = model if isinstance(model, SpeakerEncoder) else SpeakerEncoder.from_pretrained(model)
    fingerprint = encoder.fingerprint
    if store is not None and is_store_url(store):
        store_path, store_name = store, redact_url(store)  # a Path would fold the URL's "//"
    else:
        store_path = None if store is None else Path(store)
        store_name = None if store is None else str(store_path)
    model_path = None if encoder.path is None else str(encoder.path.resolve())

    def open_store():  # an EnrollmentStore, or a PgEnrollmentStore for a URL
        return open_enrollment_store(
            store_path,
            model_fingerprint=fingerprint,
            embed_dim=encoder.embed_dim,
            model_path=model_path,
            create=True,
            legacy_fingerprints=encoder.legacy_fingerprints,  # computed once, then cached
        )

    if store_path is not None:
        # Fail now, not on the first request, if it is another model's; migrate it now if an
        # older release made it for these weights.
        open_store().close()

    model_lock = threading.Lock()
    limiters: list[CapacityLimiter] = []  # made in the event loop (anyio 3 needs one running)

    def embed(wav: np.ndarray) -> np.ndarray:
        with model_lock:
            return encoder.embed(wav)

    async def in_worker(fn, *args):
        if not limiters:
            limiters.append(CapacityLimiter(limits.inference_threads))
        return await to_thread.run_sync(fn, *args, limiter=limiters[0])

    def decision_threshold(given: float | None) -> tuple[float, str]:
        """:meth:`Bundle.decision_threshold`, its errors as 422s naming the field."""
        try:
            return encoder.bundle.decision_threshold(given)
        except ConfigError as e:
            raise ApiError(422, "invalid_field", str(e), field="threshold") from None
        except BundleError as e:
            raise ApiError(422, "no_threshold", str(e), field="threshold") from None

    def require_store() -> None:
        if store_path is None:
            raise ApiError(
                404,
                "no_store",
                "this server has no enrollment store (start it with `speakerprint serve --db`)",
            )

    def too_large(body: dict) -> Exception:
        # An HTTPException, so that FastAPI re-raises it from its body parsing as it is.
        return HTTPException(413, detail=body)

    application = fastapi.FastAPI(
        title="speakerprint",
        version=__version__,
        description="Speaker embeddings, verification and identification over HTTP.",
    )
    application.add_middleware(_Guard, api_key=api_key, limits=limits, too_large=too_large)
    application.state.encoder = encoder
    application.state.store_path = store_path
    application.state.store_name = store_name  # printable: a URL without its password
    application.state.limits = limits

    @application.exception_handler(ApiError)
    async def _api_error(request, exc: ApiError):
        return JSONResponse(exc.body, status_code=exc.status)

    @application.exception_handler(HTTPException)
    async def _http_error(request, exc: HTTPException):
        body = (
            exc.detail
            if isinstance(exc.detail, dict)
            else {
                "error": f"http_{exc.status_code}",
                "detail": str(exc.detail),
            }
        )
        return JSONResponse(body, status_code=exc.status_code, headers=exc.headers)

    @application.exception_handler(RequestValidationError)
    async def _invalid(request, exc: RequestValidationError):
        errors = exc.errors()
        fields = [str(e["loc"][-1]) for e in errors if e.get("loc")]
        detail = "; ".join(
            f"{'.'.join(str(p) for p in e.get('loc', ())[1:]) or 'request'}: {e.get('msg')}"
            for e in errors
        )
        body = {"error": "invalid_request", "detail": detail}
        if fields:
            body["field"] = fields[0]
        return JSONResponse(body, status_code=422)

    @application.exception_handler(StoreError)
    async def _store_error(request, exc: StoreError):
        # The store changed under the server (replaced, made for another model...).
        return JSONResponse({"error": "store_error", "detail": str(exc)}, status_code=409)

    @application.exception_handler(SpeakerprintError)
    async def _input_error(request, exc: SpeakerprintError):
        return JSONResponse({"error": "input_error", "detail": str(exc)}, status_code=422)

    @application.exception_handler(Exception)
    async def _internal_error(request, exc: Exception):
        # A bug, not the client's doing: uvicorn logs the traceback; the client gets JSON.
        detail = f"internal error ({type(exc).__name__}); see the server's log"
        return JSONResponse({"error": "internal_error", "detail": detail}, status_code=500)

    @application.get("/health")
    async def health() -> dict:
        try:
            threshold, source = encoder.bundle.decision_threshold()
        except BundleError:  # no measured threshold
            threshold = source = None
        return {
            "status": "ok",
            "version": __version__,
            "model": model_path,
            "model_fingerprint": fingerprint,
            "embed_dim": encoder.embed_dim,
            "sample_rate": encoder.sample_rate,
            "threshold": threshold,
            "threshold_source": source,
            "store": store_name,
            "api_key_required": api_key is not None,
            "limits": asdict(limits),
        }

    @application.post("/embed")
    async def embed_endpoint(audio: Annotated[UploadFile, File()]) -> dict:
        _check_uploads([("audio", audio)], limits)

        def job():
            wav = _decode("audio", audio, encoder.sample_rate, limits)
            return wav, embed(wav)

        wav, emb = await in_worker(job)
        return {
            "field": "audio",
            "filename": audio.filename,
            "duration_s": len(wav) / encoder.sample_rate,
            "embed_dim": int(emb.shape[0]),
            "model_fingerprint": fingerprint,
            "embedding": emb.astype(np.float64).tolist(),
        }

    @application.post("/verify")
    async def verify_endpoint(
        a: Annotated[UploadFile, File()],
        b: Annotated[UploadFile, File()],
        threshold: Annotated[float | None, Form()] = None,
    ) -> dict:
        _check_uploads([("a", a), ("b", b)], limits)
        decision_threshold(threshold)  # a bad or missing threshold is refused before decoding

        def job():
            wav_a = _decode("a", a, encoder.sample_rate, limits)
            wav_b = _decode("b", b, encoder.sample_rate, limits)
            with model_lock:
                return encoder.verify(wav_a, wav_b, threshold=threshold)

        result = await in_worker(job)
        return {
            "a": _source_name("a", a),
            "b": _source_name("b", b),
            **result.to_dict(),
            "decision": "same speaker" if result.same_speaker else "different speakers",
        }

    @application.post("/enroll")
    async def enroll_endpoint(
        name: Annotated[str, Form()], audio: Annotated[list[UploadFile], File()]
    ) -> dict:
        require_store()
        if not name.strip():
            raise ApiError(422, "invalid_field", "name must not be empty", field="name")
        if len(audio) > limits.max_enroll_files:
            raise ApiError(
                413,
                "too_many_uploads",
                f"audio: {len(audio)} recordings, over the limit of {limits.max_enroll_files}",
                field="audio",
            )
        fields = [(f"audio[{i}]", upload) for i, upload in enumerate(audio)]
        _check_uploads(fields, limits)

        def job():
            # Embed everything before opening the store: a bad file leaves the store untouched.
            embeddings = [
                embed(_decode(field, upload, encoder.sample_rate, limits))
                for field, upload in fields
            ]
            with open_store() as s:
                return s.enroll(
                    name,
                    embeddings,
                    sources=[_source_name(f, u) for f, u in fields],
                    model_fingerprint=fingerprint,
                )

        total = await in_worker(job)
        return {"name": name.strip(), "added": len(fields), "total": total}

    @application.post("/identify")
    async def identify_endpoint(
        audio: Annotated[UploadFile, File()],
        top_k: Annotated[int, Form(ge=1)] = 5,
        threshold: Annotated[float | None, Form()] = None,
    ) -> dict:
        require_store()
        _check_uploads([("audio", audio)], limits)
        value, source = decision_threshold(threshold)

        def job():
            with open_store() as s:
                if not s.speakers():
                    raise ApiError(
                        409, "no_speakers", f"the store {store_name} has no speakers: enroll first"
                    )
            emb = embed(_decode("audio", audio, encoder.sample_rate, limits))
            with open_store() as s:
                return s.identify(emb, threshold=value, model_fingerprint=fingerprint, top_k=top_k)

        result = await in_worker(job)
        return {
            "file": _source_name("audio", audio),
            **result.to_dict(),
            "threshold_source": source,
            "decision": result.speaker if result.known else "unknown",
        }

    @application.get("/speakers")
    async def speakers_endpoint() -> dict:
        require_store()

        def job():
            with open_store() as s:
                return s.speakers()

        entries = await in_worker(job)
        return {
            "store": store_name,
            "count": len(entries),
            "speakers": [asdict(e) for e in entries],
        }

    @application.delete("/speakers/{name}")
    async def remove_endpoint(name: str) -> dict:
        require_store()

        def job():
            with open_store() as s:
                try:
                    return s.remove(name)
                except StoreError as e:
                    raise ApiError(404, "unknown_speaker", str(e), field="name") from None

        count = await in_worker(job)
        return {"removed": name, "num_embeddings": count}

    return application
