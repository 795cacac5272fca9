"""The enrolled speakers' mean embeddings of an SQLite store, kept in memory between requests.

Identification scores a query against every speaker's mean embedding. Computing the means reads
every enrollment embedding (about 50 ms for 10,000 speakers of two recordings each), which the
service would otherwise do on every ``/identify``. :class:`SpeakerMeansCache` keeps the last
means and recomputes them only when the store has changed since: it watches the file with one
connection of its own, on which ``PRAGMA data_version`` changes whenever any other connection, in
this process or another (``--workers``, the CLI), commits a write. A store replaced by another
file (another inode) is noticed too.

PostgreSQL stores score in the database (:meth:`PgEnrollmentStore.identify`) and need no cache.
"""

from __future__ import annotations

import os
import sqlite3
import threading
from pathlib import Path

import numpy as np

__all__ = ["SpeakerMeansCache"]


class SpeakerMeansCache:
    """``store.speaker_means()`` of one SQLite file, recomputed only after a change.

    Thread-safe: the service's worker threads share one.
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()  # the watch connection and the cached means
        self._refreshing = threading.Lock()  # held by the one thread recomputing the means
        self._watch: sqlite3.Connection | None = None
        self._inode: int | None = None
        self._cached: tuple[tuple[int, int], tuple[list[str], np.ndarray]] | None = None
        self.refreshes = 0  # how often the means were recomputed (tests, metrics)

    def _version(self) -> tuple[int, int]:
        """(inode, data_version): changes with every write committed by another connection."""
        inode = os.stat(self.path).st_ino
        if self._watch is None or inode != self._inode:
            if self._watch is not None:
                self._watch.close()
            self._watch = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            self._inode, self._cached = inode, None
        return inode, self._watch.execute("PRAGMA data_version").fetchone()[0]

    def speaker_means(self, store) -> tuple[list[str], np.ndarray]:
        """The means of ``store`` (an open EnrollmentStore of this file), from memory when the
        file has not changed since they were last computed."""
        with self._lock:
            version = self._version()  # read before the means: a write in between is seen next time
            if self._cached is not None and self._cached[0] == version:
                return self._cached[1]
        # One thread recomputes; the others that found the cache stale wait for it and reuse.
        with self._refreshing:
            with self._lock:
                version = self._version()
                if self._cached is not None and self._cached[0] == version:
                    return self._cached[1]
            means = store.speaker_means()
            with self._lock:
                self._cached = (version, means)
                self.refreshes += 1
        return means

    def close(self) -> None:
        with self._lock:
            if self._watch is not None:
                self._watch.close()
                self._watch = None
