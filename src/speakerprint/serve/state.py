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
from speakerprint.inference.speech import DEFAULT_MIN_SPEECH_S, check_min_speech_s
from speakerprint.utils.memory import PeriodicHeapRelease

if TYPE_CHECKING:
    from speakerprint.inference import SpeakerEncoder

__all__ = ["ApiError", "ServeLimits", "ServiceState"]

#: Form overhead allowed on top of the uploads (boundaries, part headers, text fields).
_FORM_OVERHEAD_BYTES = 64 * 1024
#: Text fields one form may have, and the bytes of each (a speaker name, a threshold, a top_k).
_MAX_FORM_FIELDS = 8
_MAX_FIELD_BYTES = 64 * 1024
_SUFFIX = re.compile(r"\.[A-Za-z0-9]{1,8}")

T = TypeVar("T")


@dataclass(frozen=True)
class ServeLimits:
    """What one request may send.

    Attributes:
        max_upload_mb: the largest upload, per file, in MiB.
        max_duration_s: the longest audio, per file, in seconds.
        max_enroll_files: the most recordings one ``/enroll`` request may carry.
        inference_threads: uploads decoded at once.
        batch_max_size: the most waveforms of concurrent requests embedded in one forward pass;
            1 embeds each request alone, model calls serialised by a lock (the former service).
        batch_wait_ms: how long a waveform waits for others to share its forward pass.
        body_timeout_s: the longest a request body may take to arrive, from the end of its
            headers, in seconds; a slower one (a client trickling bytes to hold a connection
            open) is answered 408 and its connection closed.
        min_speech_s: the least speech (seconds, energy VAD) each recording of ``/verify``,
            ``/enroll`` and ``/identify`` must hold, else 422 ``too_little_speech``
            (:mod:`speakerprint.inference.speech`); 0 turns the check off.
    """

    max_upload_mb: float = 10.0
    max_duration_s: float = 60.0
    max_enroll_files: int = 20
    inference_threads: int = 2
    batch_max_size: int = 16
    batch_wait_ms: float = 5.0
    body_timeout_s: float = 30.0
    min_speech_s: float = DEFAULT_MIN_SPEECH_S

    def __post_init__(self) -> None:
        check_min_speech_s(self.min_speech_s)
        for name in ("max_upload_mb", "max_duration_s", "body_timeout_s"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ConfigError(f"{name} must be a number, got {value!r}")
            if not (math.isfinite(value) and value > 0):
                raise ConfigError(f"{name} must be a positive number, got {value!r}")
        if isinstance(self.batch_wait_ms, bool) or not isinstance(self.batch_wait_ms, (int, float)):
            raise ConfigError(f"batch_wait_ms must be a number, got {self.batch_wait_ms!r}")
        if not (math.isfinite(self.batch_wait_ms) and 0 <= self.batch_wait_ms <= 1000):
            raise ConfigError(f"batch_wait_ms must be in [0, 1000], got {self.batch_wait_ms!r}")
        for name in ("max_enroll_files", "inference_threads", "batch_max_size"):
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

    @property
    def form_limits(self) -> dict[str, int]:
        """The form parser's limits on text fields (Starlette's ``Request.form`` arguments): the
        forms have at most two, each a name or a number. Starlette's defaults (1000 fields of
        1 MiB each) would let one /enroll request hold its whole body limit in memory."""
        return {"max_fields": _MAX_FORM_FIELDS, "max_part_size": _MAX_FIELD_BYTES}


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

    The upload is copied to a temporary file named ``upload`` plus its extension when that is
    plain (load_audio picks the decoder by extension and falls back to FFmpeg's probing); the
    client's file name never becomes a path. Audio over ``max_duration_s`` is refused from the
    header, or once decoding passes the limit (a header can lie, and a small compressed file can
    decode to hours), so no upload costs more than the limit's worth of samples.
    """
    from speakerprint.audio import AudioLoadError, AudioTooLongError, load_audio

    filename = upload.filename
    suffix = Path(filename or "").suffix
    suffix = suffix if _SUFFIX.fullmatch(suffix) else ""
    with tempfile.TemporaryDirectory(prefix="speakerprint-serve-") as tmp:
        path = Path(tmp) / f"upload{suffix}"
        upload.file.seek(0)
        with open(path, "wb") as out:
            shutil.copyfileobj(upload.file, out, 1024 * 1024)
        try:
            wav = load_audio(path, sample_rate, max_duration_s=limits.max_duration_s)
        except AudioTooLongError as e:
            raise ApiError(
                413, "audio_too_long", f"{field}: {e.reason}", field=field, filename=filename
            ) from None
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
        self._release_heap = PeriodicHeapRelease()
        self._decoding = threading.BoundedSemaphore(limits.inference_threads)
        # Requests between the start of their decoding and their hand-over to the batcher: the
        # batcher waits for more waveforms only while some are on their way.
        self._coming = 0
        self._coming_lock = threading.Lock()
        self._job = threading.local()
        self._limiter = None  # made in the event loop (anyio 3 needs one running)
        self.means_cache = None
        if self.store_path is not None and not is_store_url(self.store_path):
            from speakerprint.serve.gallery import SpeakerMeansCache

            self.means_cache = SpeakerMeansCache(self.store_path)
        from speakerprint.serve.observe import Metrics

        self.metrics = Metrics()
        self.batcher = None
        if limits.batch_max_size > 1:
            from speakerprint.serve.batcher import DynamicBatcher

            self.batcher = DynamicBatcher(
                encoder.embed_batch,
                max_batch=limits.batch_max_size,
                max_wait_ms=limits.batch_wait_ms,
                on_batch=self.metrics.batch_size.observe,
                expected=lambda: self._coming,
            )
            self.metrics.batch_queue.set_function(lambda: self.batcher.pending)
        self._store_pool = None  # PostgreSQL: connections kept open and checked, not one a request
        if self.store_path is not None and is_store_url(self.store_path):
            from speakerprint.inference.store import PgStorePool

            self._store_pool = PgStorePool(self.store_path)
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
        """The store, made for the served model if missing: a new SQLite connection (an
        EnrollmentStore), or a PgEnrollmentStore on a connection of the pool for a URL, given
        back when the store is closed. A PostgreSQL server that is down or restarting raises
        StoreUnavailableError (503) after the pool's timeout, and is reconnected to once back."""
        from speakerprint.inference.store import open_store

        checks = dict(
            model_fingerprint=self.fingerprint,
            embed_dim=self.encoder.embed_dim,
            model_path=self.model_path,
            create=True,
            legacy_fingerprints=self.encoder.legacy_fingerprints,  # computed once, then cached
        )
        if self._store_pool is not None:
            return self._store_pool.open(**checks)
        return open_store(self.store_path, **checks)

    # -- the model, called from worker threads

    async def run(self, fn: Callable[..., T], *args) -> T:
        """``fn(*args)`` in a worker thread.

        Serial (``batch_max_size`` 1): at most ``inference_threads`` jobs at once, their model
        calls taking turns on a lock. Batched: enough threads for full batches to form while
        others decode (a thread waiting for its batch uses no CPU); decoding alone is held to
        ``inference_threads`` at once by :meth:`decode`.
        """
        from anyio import CapacityLimiter, to_thread

        if self._limiter is None:
            threads = self.limits.inference_threads
            if self.batcher is not None:
                threads += 2 * self.limits.batch_max_size
            self._limiter = CapacityLimiter(threads)
        return await to_thread.run_sync(self._job_of, fn, *args, limiter=self._limiter)

    def _job_of(self, fn: Callable[..., T], *args) -> T:
        try:
            return fn(*args)
        finally:
            self._arrived()  # a job that failed before embedding is not awaited any more

    def _coming_up(self) -> None:
        if not getattr(self._job, "coming", False):
            with self._coming_lock:
                self._coming += 1
            self._job.coming = True

    def _arrived(self) -> None:
        if getattr(self._job, "coming", False):
            with self._coming_lock:
                self._coming -= 1
            self._job.coming = False

    def decode(self, field: str, upload) -> np.ndarray:
        self._coming_up()
        with self._decoding:
            return decode_upload(field, upload, self.encoder.sample_rate, self.limits)

    def embed(self, wav: np.ndarray) -> np.ndarray:
        """One embedding: in a batch with concurrent requests', or alone under the model lock."""
        if self.batcher is not None:
            self._arrived()
            return self.batcher.embed(wav)
        with self._model_lock:
            emb = self.encoder.embed(wav)
            self._release_heap()  # as the batcher does: lengths vary, glibc's heap fragments
        self.metrics.batch_size.observe(1)
        return emb

    def embed_many(self, wavs: list[np.ndarray]) -> list[np.ndarray]:
        """The embeddings of one request's waveforms (queued together when batching)."""
        if self.batcher is not None:
            self._arrived()
            return self.batcher.embed_many(wavs)
        return [self.embed(w) for w in wavs]

    def verify(
        self,
        wav_a: np.ndarray,
        wav_b: np.ndarray,
        threshold: float | None,
        speech_s: tuple[float, float] | None = None,
    ):
        emb_a, emb_b = self.embed_many([wav_a, wav_b])
        return self.encoder.verify_embeddings(emb_a, emb_b, threshold=threshold, speech_s=speech_s)

    def speech(self, field: str, upload, wav: np.ndarray, *, required: bool = True) -> float:
        """Seconds of speech in a decoded upload, measured in the request's worker thread (not
        by the model): :func:`~speakerprint.inference.speech.require_speech` with
        ``limits.min_speech_s`` when ``required``, its refusal a 422 ``too_little_speech``."""
        from speakerprint.inference.speech import TooLittleSpeechError, require_speech

        name = field if upload.filename is None else f"{field} ({upload.filename})"
        needed = self.limits.min_speech_s if required else 0.0
        try:
            return require_speech(wav, self.encoder.sample_rate, source=name, min_speech_s=needed)
        except TooLittleSpeechError as e:
            raise ApiError(
                422, "too_little_speech", str(e), field=field, filename=upload.filename
            ) from None

    def close(self) -> None:
        """Stop the batcher's model thread (what is waiting is embedded first)."""
        if self.batcher is not None:
            self.batcher.close()
        if self.means_cache is not None:
            self.means_cache.close()
        if self._store_pool is not None:
            self._store_pool.close()

    # -- identification

    def _no_speakers(self) -> ApiError:
        return ApiError(
            409, "no_speakers", f"the store {self.store_name} has no speakers: enroll first"
        )

    def require_speakers(self) -> None:
        """409 when the store has no speakers (checked before decoding a query)."""
        with self.open_store() as store:
            if self.means_cache is not None:
                empty = not self.means_cache.speaker_means(store)[0]
            else:
                empty = not store.speakers()
        if empty:
            raise self._no_speakers()

    def identify(self, embedding: np.ndarray, threshold: float, top_k: int):
        """The store's :meth:`identify`; for SQLite from the cached speaker means."""
        from speakerprint.inference.store import Identification

        with self.open_store() as store:
            if self.means_cache is None:
                return store.identify(
                    embedding, threshold=threshold, model_fingerprint=self.fingerprint, top_k=top_k
                )
            names, means = self.means_cache.speaker_means(store)
        if not names:  # all removed since require_speakers
            raise self._no_speakers()
        return Identification.rank(names, means, embedding, threshold, top_k)

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
