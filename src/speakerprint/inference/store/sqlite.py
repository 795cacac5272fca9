"""The enrollment store in one SQLite file (stdlib ``sqlite3``).

A speaker has one or more enrollment embeddings, each with the file it came from; the model
record, the checks and identification's scoring are :class:`~speakerprint.inference.store.base.\
BaseEnrollmentStore`'s.

Every write is one transaction (``BEGIN IMMEDIATE``), so a crash or an error leaves the store as
it was, and concurrent writers wait for each other (up to :data:`BUSY_TIMEOUT_S`, then
:class:`~speakerprint.inference.store.base.StoreUnavailableError`) instead of interleaving. The
schema is versioned: a store written by a newer speakerprint is refused, not misread.

The file is in WAL mode (``journal_mode=WAL``, recorded in the file, so an older store is switched
on its first open): readers see the last committed state and never wait for a writer, nor a writer
for readers, which is what several service workers (``speakerprint serve --workers N``) on one
file need. ``synchronous=FULL``: each commit is flushed to disk (fsync of the WAL) before
``enroll`` returns, so an enrollment that was answered survives a killed process *and* a power
loss. ``NORMAL`` would skip that fsync; a killed process would still lose nothing (the commit is in
the OS's page cache), but a power cut could take back the last commits. The fsync costs a few
milliseconds, little next to embedding the recordings. A process killed mid-transaction leaves a
``-wal`` file whose uncommitted frames SQLite ignores when it next opens the store: no repair
step. WAL needs the file on a local disk (not NFS), as every SQLite store does with several
processes.

>>> enc = SpeakerEncoder.from_pretrained()  # doctest: +SKIP
>>> store = EnrollmentStore.open("speakers.db", model_fingerprint=enc.fingerprint,
...                              embed_dim=enc.embed_dim, create=True)  # doctest: +SKIP
>>> store.enroll("alice", [enc.embed("alice1.wav"), enc.embed("alice2.wav")],
...              sources=["alice1.wav", "alice2.wav"], model_fingerprint=enc.fingerprint)
... # doctest: +SKIP
>>> store.identify(enc.embed("who.wav"), threshold=0.37, model_fingerprint=enc.fingerprint)
... # doctest: +SKIP
Identification(speaker='alice', score=0.71, threshold=0.37, candidates=[('alice', 0.71), ...])
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import scipy.sparse

from speakerprint.inference.store.base import (
    BaseEnrollmentStore,
    Identification,
    SpeakerEntry,
    StoreError,
    StoreUnavailableError,
    normalise_rows,
    utc_now,
)

__all__ = ["BUSY_TIMEOUT_S", "EnrollmentStore"]

#: How long a write waits for another process's write transaction before giving up. Writes take
#: milliseconds; a wait this long means a stuck writer, and the caller hears so (503 in the service).
BUSY_TIMEOUT_S = 10.0

_SCHEMA = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE speakers (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    created_at TEXT NOT NULL
);
CREATE TABLE embeddings (
    id INTEGER PRIMARY KEY,
    speaker_id INTEGER NOT NULL REFERENCES speakers(id) ON DELETE CASCADE,
    source TEXT,
    vector BLOB NOT NULL,
    created_at TEXT NOT NULL
);
CREATE INDEX embeddings_by_speaker ON embeddings(speaker_id);
"""


class EnrollmentStore(BaseEnrollmentStore):
    """Enrolled speakers of one model in one SQLite file; open it with :meth:`open`."""

    def __init__(self, path: Path, connection: sqlite3.Connection, meta: dict[str, str]) -> None:
        self.path = path
        self._conn = connection
        self._meta = meta

    # -- opening -------------------------------------------------------------------------------

    @classmethod
    def open(
        cls,
        path: str | os.PathLike,
        *,
        model_fingerprint: str | None = None,
        embed_dim: int | None = None,
        model_path: str | None = None,
        create: bool = False,
        legacy_fingerprints: Sequence[str] = (),
    ) -> EnrollmentStore:
        """Open a store; with ``create=True`` make it when it does not exist yet.

        Args:
            path: the SQLite file.
            model_fingerprint: when given, the store must have been made for this model (checked
                on open); required to create one.
            embed_dim: the model's embedding size; required to create a store.
            model_path: where the model was loaded from, recorded on creation as a hint for
                later commands (the fingerprint, not the path, is what is checked).
            create: make the store if the file does not exist.
            legacy_fingerprints: the fingerprints the same model had under older releases
                (:func:`~speakerprint.models.bundle.legacy_model_fingerprints`): a store that
                recorded one of them is rewritten to ``model_fingerprint``, in one transaction.

        Raises:
            StoreError: no such store (and ``create`` is False), not a speakerprint store, a
                newer schema, or made for another model.
        """
        path = Path(path)
        if not path.exists() and not create:
            raise StoreError(f"enrollment store {path} does not exist (enroll a speaker first)")
        if path.is_dir():
            raise StoreError(f"enrollment store {path} is a folder, not a file")
        if create and (model_fingerprint is None or embed_dim is None):
            raise ValueError("creating a store needs model_fingerprint and embed_dim")
        # The file is never opened here but by SQLite: closing another descriptor of it would drop
        # the POSIX locks of this process's other connections (SQLite's "how to corrupt": another
        # process could then checkpoint and reset the WAL under them). Not a database is
        # SQLite's SQLITE_NOTADB, below.
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            conn = sqlite3.connect(path, isolation_level=None, timeout=BUSY_TIMEOUT_S)
        except sqlite3.Error as e:
            raise StoreError(f"cannot open enrollment store {path}: {e}") from None
        try:
            conn.execute("PRAGMA foreign_keys = ON")
            conn.execute("PRAGMA synchronous = FULL")
            store = cls(path, conn, {})
            # Read without a write lock: opening a store must not wait for another's writer.
            if not store._tables() and create:
                with store._transaction():
                    if not store._tables():  # another process may have made it meanwhile
                        store._create(model_fingerprint, embed_dim, model_path)
            if "meta" not in store._tables():
                raise StoreError(
                    f"{path} is an SQLite file but not an enrollment store (no meta table)"
                )
            store._use_wal()
            store._meta = dict(conn.execute("SELECT key, value FROM meta"))
        except sqlite3.DatabaseError as e:
            conn.close()
            not_a_database = "not a database" in str(e)
            if getattr(e, "sqlite_errorname", None) == "SQLITE_NOTADB" or not_a_database:
                raise StoreError(
                    f"{path} is not an enrollment store (not an SQLite file)"
                ) from None
            raise StoreError(f"{path} is not a readable enrollment store: {e}") from None
        except BaseException:
            conn.close()
            raise
        store._check_opened(model_fingerprint, embed_dim, legacy_fingerprints)
        return store

    def _tables(self) -> set[str]:
        rows = self._conn.execute("SELECT name FROM sqlite_master WHERE type='table'")
        return {row[0] for row in rows}

    def _create(self, model_fingerprint: str, embed_dim: int, model_path: str | None) -> None:
        """The tables and meta rows of a new store; inside a write transaction."""
        # Statement by statement: executescript() would commit the transaction.
        for statement in filter(str.strip, _SCHEMA.split(";")):
            self._conn.execute(statement)
        meta = self.new_meta(model_fingerprint, embed_dim, model_path)
        self._conn.executemany("INSERT INTO meta VALUES (?, ?)", meta.items())

    def _use_wal(self) -> None:
        """Switch the file to WAL mode (see the module docstring) unless it is already.

        A store that cannot switch (a read-only file or folder) stays as it is: it can still be
        read, and a write would fail there anyway.
        """
        (mode,) = self._conn.execute("PRAGMA journal_mode").fetchone()
        if mode.lower() != "wal":
            with contextlib.suppress(sqlite3.OperationalError):
                self._conn.execute("PRAGMA journal_mode = WAL")

    def _replace_fingerprint(self, old: str, new: str) -> str:
        with self._transaction() as conn:
            conn.execute(
                "UPDATE meta SET value = ? WHERE key = 'model_fingerprint' AND value = ?",
                (new, old),
            )
            (recorded,) = conn.execute(
                "SELECT value FROM meta WHERE key = 'model_fingerprint'"
            ).fetchone()
        return recorded

    def close(self) -> None:
        self._conn.close()

    def __enter__(self) -> EnrollmentStore:
        return self

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """One write transaction: committed on success, rolled back on any exception."""
        try:
            self._conn.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as e:
            name = getattr(e, "sqlite_errorname", None)  # Python >= 3.11
            if name not in ("SQLITE_BUSY", "SQLITE_LOCKED") and "locked" not in str(e):
                raise
            raise StoreUnavailableError(
                f"enrollment store {self.path}: another process held its write lock for over "
                f"{BUSY_TIMEOUT_S:g} s ({e}); try again"
            ) from None
        try:
            yield self._conn
        except BaseException:
            self._conn.execute("ROLLBACK")
            raise
        self._conn.execute("COMMIT")

    # -- writes ----------------------------------------------------------------------------------

    def enroll(
        self,
        name: str,
        embeddings: np.ndarray | Sequence[np.ndarray],
        *,
        model_fingerprint: str,
        sources: Sequence[str | None] | None = None,
    ) -> int:
        """Add enrollment embeddings (K, D) or (D,) to a speaker, creating the speaker if new.

        Returns the speaker's number of embeddings afterwards. All K are added or none.

        Raises:
            StoreError: another model's fingerprint, a wrong embedding size, NaN/Inf values,
                an empty name or a sources list of the wrong length.
        """
        name, vectors, sources = self._checked_enrollment(
            name, embeddings, model_fingerprint, sources
        )
        now = utc_now()
        with self._transaction() as conn:
            conn.execute(
                "INSERT INTO speakers (name, created_at) VALUES (?, ?) ON CONFLICT(name) DO NOTHING",
                (name, now),
            )
            (speaker_id,) = conn.execute(
                "SELECT id FROM speakers WHERE name = ?", (name,)
            ).fetchone()
            conn.executemany(
                "INSERT INTO embeddings (speaker_id, source, vector, created_at) VALUES (?, ?, ?, ?)",
                [(speaker_id, s, v.tobytes(), now) for v, s in zip(vectors, sources)],
            )
            (count,) = conn.execute(
                "SELECT COUNT(*) FROM embeddings WHERE speaker_id = ?", (speaker_id,)
            ).fetchone()
        return int(count)

    def remove(self, name: str) -> int:
        """Remove a speaker and all its embeddings; returns how many embeddings went.

        Raises:
            StoreError: no speaker of that name.
        """
        with self._transaction() as conn:
            row = conn.execute("SELECT id FROM speakers WHERE name = ?", (name,)).fetchone()
            if row is None:
                raise self._unknown_speaker_error(name)
            (count,) = conn.execute(
                "SELECT COUNT(*) FROM embeddings WHERE speaker_id = ?", (row[0],)
            ).fetchone()
            conn.execute("DELETE FROM speakers WHERE id = ?", (row[0],))
        return int(count)

    # -- reads -----------------------------------------------------------------------------------

    def speakers(self) -> list[SpeakerEntry]:
        """Every enrolled speaker, by name."""
        rows = self._conn.execute(
            "SELECT s.name, e.source FROM speakers s JOIN embeddings e ON e.speaker_id = s.id "
            "ORDER BY s.name, e.id"
        ).fetchall()
        entries: dict[str, list[str | None]] = {}
        for name, source in rows:
            entries.setdefault(name, []).append(source)
        return [
            SpeakerEntry(name, len(srcs), [s for s in srcs if s is not None])
            for name, srcs in entries.items()
        ]

    def embeddings(self, name: str) -> np.ndarray:
        """A speaker's enrollment embeddings as stored, (K, embed_dim) float32."""
        rows = self._conn.execute(
            "SELECT e.vector FROM embeddings e JOIN speakers s ON e.speaker_id = s.id "
            "WHERE s.name = ? ORDER BY e.id",
            (name,),
        ).fetchall()
        if not rows:
            raise self._unknown_speaker_error(name)
        return np.stack([self._vector(blob) for (blob,) in rows])

    def speaker_means(self) -> tuple[list[str], np.ndarray]:
        """Names and their mean embeddings (N, embed_dim), each the normalised mean of the
        speaker's normalised enrollment embeddings."""
        # One read transaction: both queries see the same committed state.
        self._conn.execute("BEGIN")
        try:
            rows = self._conn.execute("SELECT speaker_id, vector FROM embeddings").fetchall()
            speakers = self._conn.execute("SELECT id, name FROM speakers").fetchall()
        finally:
            self._conn.execute("COMMIT")
        if not rows:
            return [], np.zeros((0, self.embed_dim), dtype=np.float32)
        blobs = b"".join(row[1] for row in rows)
        if len(blobs) != 4 * self.embed_dim * len(rows):
            self._vector(next(r[1] for r in rows if len(r[1]) != 4 * self.embed_dim))  # raises
        vectors = normalise_rows(np.frombuffer(blobs, dtype=np.float32).reshape(len(rows), -1))
        # Each speaker's mean as one sparse (speakers x rows) product: 10,000 speakers take a few
        # milliseconds, where a Python loop over speakers (or reduceat) took tens.
        ids = np.fromiter((row[0] for row in rows), dtype=np.int64, count=len(rows))
        speaker_ids, row_speaker, counts = np.unique(ids, return_inverse=True, return_counts=True)
        weights = 1.0 / counts[row_speaker]
        averaging = scipy.sparse.csr_matrix(
            (weights, (row_speaker, np.arange(len(rows)))), shape=(len(speaker_ids), len(rows))
        )
        means = averaging @ vectors.astype(np.float64)
        name_of = dict(speakers)
        names = [name_of[int(i)] for i in speaker_ids]
        order = sorted(range(len(names)), key=names.__getitem__)  # by name, as speakers() lists
        return [names[i] for i in order], normalise_rows(means[order]).astype(np.float32)

    def identify(
        self,
        embedding: np.ndarray,
        *,
        threshold: float,
        model_fingerprint: str,
        top_k: int = 5,
    ) -> Identification:
        """Score a query embedding (D,) against every speaker's mean; see the module docstring.

        Raises:
            StoreError: another model's fingerprint, a wrong embedding size, NaN/Inf in the
                query, or an empty store.
        """
        query = self._checked_query(embedding, model_fingerprint, top_k)
        names, means = self.speaker_means()
        if not names:
            raise self._no_speakers_error()
        return Identification.rank(names, means, query, threshold, top_k)

    # -- helpers ---------------------------------------------------------------------------------

    def _vector(self, blob: bytes) -> np.ndarray:
        vector = np.frombuffer(blob, dtype=np.float32)
        if vector.shape != (self.embed_dim,):
            raise StoreError(
                f"enrollment store {self.path} is corrupt: a stored embedding has "
                f"{vector.size} values, not {self.embed_dim}"
            )
        return vector
