"""The enrollment store in one SQLite file (stdlib ``sqlite3``).

A speaker has one or more enrollment embeddings, each with the file it came from; the model
record, the checks and identification's scoring are :class:`~speakerprint.inference.store.base.\
BaseEnrollmentStore`'s.

Every write is one transaction (``BEGIN IMMEDIATE``), so a crash or an error leaves the store as
it was, and concurrent writers wait for each other instead of interleaving. The schema is
versioned: a store written by a newer speakerprint is refused, not misread.

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

from speakerprint.inference.store.base import (
    BaseEnrollmentStore,
    Identification,
    SpeakerEntry,
    StoreError,
    normalise_rows,
    utc_now,
)

__all__ = ["EnrollmentStore"]

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
        if path.exists() and path.stat().st_size > 0:
            with open(path, "rb") as f:
                if f.read(16) != b"SQLite format 3\x00":
                    raise StoreError(f"{path} is not an enrollment store (not an SQLite file)")
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            conn = sqlite3.connect(path, isolation_level=None, timeout=30.0)
        except sqlite3.Error as e:
            raise StoreError(f"cannot open enrollment store {path}: {e}") from None
        try:
            conn.execute("PRAGMA foreign_keys = ON")
            store = cls(path, conn, {})
            with store._transaction():
                tables = {
                    row[0]
                    for row in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")
                }
                if not tables and create:
                    # Statement by statement: executescript() would commit the transaction.
                    for statement in filter(str.strip, _SCHEMA.split(";")):
                        conn.execute(statement)
                    meta = store.new_meta(model_fingerprint, embed_dim, model_path)
                    conn.executemany("INSERT INTO meta VALUES (?, ?)", meta.items())
                elif "meta" not in tables:
                    raise StoreError(
                        f"{path} is an SQLite file but not an enrollment store (no meta table)"
                    )
                store._meta = dict(conn.execute("SELECT key, value FROM meta"))
        except sqlite3.DatabaseError as e:
            conn.close()
            raise StoreError(f"{path} is not a readable enrollment store: {e}") from None
        except BaseException:
            conn.close()
            raise
        store._check_opened(model_fingerprint, embed_dim, legacy_fingerprints)
        return store

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
        self._conn.execute("BEGIN IMMEDIATE")
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
        rows = self._conn.execute(
            "SELECT s.name, e.vector FROM speakers s JOIN embeddings e ON e.speaker_id = s.id "
            "ORDER BY s.name, e.id"
        ).fetchall()
        grouped: dict[str, list[np.ndarray]] = {}
        for name, blob in rows:
            grouped.setdefault(name, []).append(self._vector(blob))
        names = list(grouped)
        if not names:
            return [], np.zeros((0, self.embed_dim), dtype=np.float32)
        means = np.stack([normalise_rows(np.stack(v)).mean(axis=0) for v in grouped.values()])
        return names, normalise_rows(means).astype(np.float32)

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
        scores = means.astype(np.float64) @ normalise_rows(query)
        order = np.argsort(-scores, kind="stable")[:top_k]
        return Identification.decide([(names[i], float(scores[i])) for i in order], threshold)

    # -- helpers ---------------------------------------------------------------------------------

    def _vector(self, blob: bytes) -> np.ndarray:
        vector = np.frombuffer(blob, dtype=np.float32)
        if vector.shape != (self.embed_dim,):
            raise StoreError(
                f"enrollment store {self.path} is corrupt: a stored embedding has "
                f"{vector.size} values, not {self.embed_dim}"
            )
        return vector
