"""What the service's endpoints share: the limits, the client errors, and the app state that owns
the model, its lock, the worker threads and the store.

Nothing here imports FastAPI: :func:`~speakerprint.serve.app.create_app` imports it (naming the
extra when it is missing) before it builds the state and the routes.
"""

from __future__ import annotations

import math
import os
import re
import shutil
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np

from speakerprint.errors import ConfigError

if TYPE_CHECKING:
    from speakerprint.inference import SpeakerEncoder

__all__ = ["ApiError", "ServeLimits", "ServiceState"]

#: Form overhead allowed on top of the uploads (boundaries, part headers, text fields).
_FORM_OVERHEAD_BYTES = 64 * 1024
_SUFFIX = re.compile(r"\.[A-Za-z0-9]{1,8}")

T = TypeVar("T")


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


# -- uploads -------------------------------------------------------------------------------------


def _upload_size(upload) -> int:
    """Bytes of a parsed upload (its spooled file), without reading it."""
    f = upload.file
    position = f.tell()
    f.seek(0, os.SEEK_END)
    size = f.tell()
    f.seek(position)
    return size


def check_uploads(uploads: list[tuple[str, Any]], limits: ServeLimits) -> None:
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


def decode_upload(field: str, upload, sample_rate: int, limits: ServeLimits) -> np.ndarray:
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


def source_name(field: str, upload) -> str:
    """How a response names an upload: its file name, or else its form field."""
    return upload.filename or field


# -- the app state -------------------------------------------------------------------------------


class ServiceState:
    """The one object the endpoints share, handed to each by a FastAPI dependency.

    It owns the encoder (every model call holds its lock, so concurrent requests get exactly the
    embeddings of the Python API), the worker threads (at most ``limits.inference_threads``
    requests decode and embed at once) and the store (each request opens its own connection).
    Made at startup: a store made for another model fails here, and one an older release made
    for the same weights is migrated here, not on the first request.
    """

    def __init__(
        self,
        encoder: SpeakerEncoder,
        store: str | os.PathLike | None,
        limits: ServeLimits,
        *,
        api_key_required: bool,
    ) -> None:
        from speakerprint.inference.store import is_store_url, redact_url

        self.encoder = encoder
        self.limits = limits
        self.api_key_required = api_key_required
        self.fingerprint = encoder.fingerprint
        if store is not None and is_store_url(store):
            self.store_path, self.store_name = store, redact_url(store)  # Path folds the "//"
        else:
            self.store_path = None if store is None else Path(store)
            self.store_name = None if store is None else str(self.store_path)  # printable
        self.model_path = None if encoder.path is None else str(encoder.path.resolve())
        self._model_lock = threading.Lock()
        self._limiter = None  # made in the event loop (anyio 3 needs one running)
        if self.store_path is not None:
            self.open_store().close()

    # -- the store

    def require_store(self) -> None:
        """404 when the server was started without a store."""
        if self.store_path is None:
            raise ApiError(
                404,
                "no_store",
                "this server has no enrollment store (start it with `speakerprint serve --db`)",
            )

    def open_store(self):
        """A new connection to the store (an EnrollmentStore, or a PgEnrollmentStore for a URL),
        made for the served model if missing."""
        from speakerprint.inference.store import open_store

        return open_store(
            self.store_path,
            model_fingerprint=self.fingerprint,
            embed_dim=self.encoder.embed_dim,
            model_path=self.model_path,
            create=True,
            legacy_fingerprints=self.encoder.legacy_fingerprints,  # computed once, then cached
        )

    # -- the model, called from worker threads

    async def run(self, fn: Callable[..., T], *args) -> T:
        """``fn(*args)`` in a worker thread, at most ``inference_threads`` at once."""
        from anyio import CapacityLimiter, to_thread

        if self._limiter is None:
            self._limiter = CapacityLimiter(self.limits.inference_threads)
        return await to_thread.run_sync(fn, *args, limiter=self._limiter)

    def decode(self, field: str, upload) -> np.ndarray:
        return decode_upload(field, upload, self.encoder.sample_rate, self.limits)

    def embed(self, wav: np.ndarray) -> np.ndarray:
        with self._model_lock:
            return self.encoder.embed(wav)

    def verify(self, wav_a: np.ndarray, wav_b: np.ndarray, threshold: float | None):
        with self._model_lock:
            return self.encoder.verify(wav_a, wav_b, threshold=threshold)

    # -- request checks, run by the endpoints once FastAPI has validated the form

    def check_uploads(self, uploads: list[tuple[str, Any]]) -> None:
        check_uploads(uploads, self.limits)

    def decision_threshold(self, given: float | None) -> tuple[float, str]:
        """:meth:`Bundle.decision_threshold`, its errors as 422s naming the field."""
        from speakerprint.errors import BundleError

        try:
            return self.encoder.bundle.decision_threshold(given)
        except ConfigError as e:
            raise ApiError(422, "invalid_field", str(e), field="threshold") from None
        except BundleError as e:
            raise ApiError(422, "no_threshold", str(e), field="threshold") from None
