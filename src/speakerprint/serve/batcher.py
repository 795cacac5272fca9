"""Dynamic batching: waveforms from concurrent requests embedded together in one forward pass.

A request's worker thread hands its decoded waveform to :meth:`DynamicBatcher.embed` and waits.
One model thread takes the first waveform waiting, keeps collecting for up to ``max_wait_ms``
(or until ``max_batch`` are waiting), then embeds them:

- **Length buckets.** The waiting waveforms are sorted by length and cut into groups whose
  longest is at most ``bucket_ratio`` times their shortest, so a 2 s request is not padded to
  the length of a 60 s one. Padding never changes a result (``SpeakerEncoder.embed_batch`` masks
  it), so buckets only save time.
- **One thread owns the model.** Model calls never overlap, as under the former lock, but a
  busy service now makes one call per bucket instead of one per request.
- **A lone request does not wait**: the service tells the batcher how many requests are still
  decoding, and the batcher waits (at most ``max_wait_ms``) only while some are; a request
  that arrives alone is embedded at once.

A failed batch (an exception in the model) fails each of its requests with that exception; the
model thread keeps serving. :meth:`close` drains what is waiting and stops the thread.

>>> batcher = DynamicBatcher(encoder.embed_batch, max_batch=16, max_wait_ms=5)  # doctest: +SKIP
>>> batcher.embed(wav)  # from any thread  # doctest: +SKIP
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass

import numpy as np

from speakerprint.errors import ConfigError
from speakerprint.utils.memory import PeriodicHeapRelease

__all__ = ["BatchStats", "DynamicBatcher", "length_buckets"]


def length_buckets(lengths: Sequence[int], max_batch: int, ratio: float) -> list[list[int]]:
    """Indices of ``lengths`` grouped for padding: sorted by length, each group at most
    ``max_batch`` long with its longest at most ``ratio`` times its shortest.

    >>> length_buckets([16000, 48000, 17000, 50000, 16500], max_batch=2, ratio=1.25)
    [[0, 4], [2], [1, 3]]
    """
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    groups: list[list[int]] = []
    for i in order:
        group = groups[-1] if groups else None
        if (
            group is not None
            and len(group) < max_batch
            and lengths[i] <= ratio * max(lengths[group[0]], 1)
        ):
            group.append(i)
        else:
            groups.append([i])
    return groups


@dataclass
class BatchStats:
    """Counters of a batcher's work, for /metrics: forward passes and the waveforms they held."""

    batches: int = 0
    waveforms: int = 0
    failures: int = 0


@dataclass
class _Pending:
    wav: np.ndarray
    future: Future


class DynamicBatcher:
    """Collects waveforms from many threads and embeds them in length-bucketed batches.

    Args:
        embed_batch: a list of mono float32 waveforms -> (B, D) embeddings, row i of waveform i
            (``SpeakerEncoder.embed_batch``).
        max_batch: the most waveforms in one forward pass.
        max_wait_ms: how long the first waiting waveform waits for others.
        bucket_ratio: the longest waveform of a batch over its shortest, at most.
        on_batch: called with each batch's size after it is embedded (metrics).
        expected: how many more waveforms are on their way (the service: requests being
            decoded). The batcher waits for others only while this is above 0, so a lone
            request is embedded at once. None: always wait up to ``max_wait_ms``.
    """

    def __init__(
        self,
        embed_batch: Callable[[list[np.ndarray]], np.ndarray],
        *,
        max_batch: int = 16,
        max_wait_ms: float = 5.0,
        bucket_ratio: float = 1.25,
        on_batch: Callable[[int], None] | None = None,
        expected: Callable[[], int] | None = None,
    ) -> None:
        if isinstance(max_batch, bool) or not isinstance(max_batch, int) or max_batch < 1:
            raise ConfigError(f"max_batch must be a whole number >= 1, got {max_batch!r}")
        if not (isinstance(max_wait_ms, (int, float)) and 0 <= max_wait_ms < math.inf):
            raise ConfigError(f"max_wait_ms must be a number >= 0, got {max_wait_ms!r}")
        if not (isinstance(bucket_ratio, (int, float)) and 1.0 <= bucket_ratio < math.inf):
            raise ConfigError(f"bucket_ratio must be a number >= 1, got {bucket_ratio!r}")
        self._embed_batch = embed_batch
        self.max_batch = max_batch
        self.max_wait_s = max_wait_ms / 1000.0
        self.bucket_ratio = float(bucket_ratio)
        self._on_batch = on_batch
        self._expected = expected
        self._release_heap = PeriodicHeapRelease()
        self.stats = BatchStats()
        self._queue: deque[_Pending] = deque()
        self._ready = threading.Condition()
        self._closed = False
        self._thread = threading.Thread(
            target=self._serve, name="speakerprint-batcher", daemon=True
        )
        self._thread.start()

    # -- callers

    def submit(self, wav: np.ndarray) -> Future:
        """Queue one waveform; the future gets its embedding (D,) or the model's exception."""
        future: Future = Future()
        with self._ready:
            if self._closed:
                raise RuntimeError("the batcher is closed")
            self._queue.append(_Pending(np.asarray(wav, dtype=np.float32), future))
            self._ready.notify()
        return future

    def embed(self, wav: np.ndarray) -> np.ndarray:
        """The embedding of one waveform, computed in a batch with whatever else is waiting."""
        return self.submit(wav).result()

    def embed_many(self, wavs: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Embeddings of several waveforms of one request, queued together."""
        futures = [self.submit(w) for w in wavs]
        return [f.result() for f in futures]

    @property
    def pending(self) -> int:
        """Waveforms waiting for a forward pass."""
        return len(self._queue)

    def close(self) -> None:
        """Embed what is waiting, then stop the model thread."""
        with self._ready:
            self._closed = True
            self._ready.notify()
        self._thread.join()

    # -- the model thread

    def _take(self) -> list[_Pending] | None:
        """The next waveforms to embed: the first one waiting, plus those that arrive within
        ``max_wait_s`` of it (up to ``max_batch``). None once closed and drained."""
        with self._ready:
            while not self._queue:
                if self._closed:
                    return None
                self._ready.wait()
            deadline = time.monotonic() + self.max_wait_s
            while len(self._queue) < self.max_batch and not self._closed:
                left = deadline - time.monotonic()
                if left <= 0 or (self._expected is not None and self._expected() <= 0):
                    break
                self._ready.wait(min(left, 0.001) if self._expected is not None else left)
            count = min(len(self._queue), self.max_batch)
            return [self._queue.popleft() for _ in range(count)]

    def _serve(self) -> None:
        while (taken := self._take()) is not None:
            for group in length_buckets(
                [len(p.wav) for p in taken], self.max_batch, self.bucket_ratio
            ):
                self._run([taken[i] for i in group])
            self._release_heap()  # batches of varying shapes fragment glibc's heap

    def _run(self, batch: list[_Pending]) -> None:
        live = [p for p in batch if p.future.set_running_or_notify_cancel()]
        if not live:
            return
        try:
            embeddings = self._embed_batch([p.wav for p in live])
        except BaseException as e:  # the callers get the model's exception; this thread goes on
            self.stats.failures += 1
            for p in live:
                p.future.set_exception(e)
            return
        self.stats.batches += 1
        self.stats.waveforms += len(live)
        if self._on_batch is not None:
            self._on_batch(len(live))
        for p, emb in zip(live, embeddings, strict=True):
            p.future.set_result(np.array(emb, dtype=np.float32))
