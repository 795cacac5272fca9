"""An enrollment store: named speakers, their enrollment embeddings, and identification.

A store is one SQLite file (stdlib ``sqlite3``). It is made for one model: the model's fingerprint
(:func:`speakerprint.eval.cache.bundle_fingerprint`) and embedding size are recorded when the store
is created, and every write or query must name the same fingerprint, because embeddings of two
models live in different spaces and comparing them gives confident nonsense.

A speaker has one or more enrollment embeddings, each with the file it came from. Identification
compares a query with each speaker's mean: the enrollment embeddings are length-normalised,
averaged and normalised again, and the cosine of the normalised query with that mean is the score.
The best speaker is the answer when its score reaches the threshold, otherwise the answer is
"unknown" (``speaker=None``).

Every write is one transaction (``BEGIN IMMEDIATE``), so a crash or an error leaves the store as
it was, and concurrent writers wait for each other instead of interleaving. The schema is
versioned: a store written by a newer speakerprint is refused, not misread.

The same interface over PostgreSQL with pgvector is :class:`~speakerprint.inference.store_pg.\
PgEnrollmentStore`; :func:`open_store` opens either, from a path or a ``postgresql://`` URL.

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
import datetime
import os
import sqlite3
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from speakerprint.errors import SpeakerprintError

if TYPE_CHECKING:
    from speakerprint.inference.store_pg import PgEnrollmentStore

__all__ = [
    "SCHEMA_VERSION",
    "EnrollmentStore",
    "Identification",
    "SpeakerEntry",
    "StoreError",
    "is_store_url",
    "open_store",
    "store_exists",
]

SCHEMA_VERSION = 1
STORE_FORMAT = "speakerprint-enrollment-store"

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


class StoreError(SpeakerprintError, ValueError):
    """An enrollment store is missing, not a store, from a newer version, made for another model,
    or asked for something it does not hold (an unknown speaker, a wrong embedding size)."""


@dataclass(frozen=True)
class SpeakerEntry:
    """One enrolled speaker: name, how many enrollment embeddings, and the files they came from."""

    name: str
    num_embeddings: int
    sources: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Identification:
    """The answer to "who is this?".

    Attributes:
        speaker: the best-scoring speaker, or None ("unknown") when its score is below threshold.
        score: the best cosine score (of the best speaker, whether accepted or not).
        threshold: the score the best speaker had to reach.
        candidates: the top-k ``(name, score)`` pairs, best first, accepted or not.
    """

    speaker: str | None
    score: float
    threshold: float
    candidates: list[tuple[str, float]]

    @property
    def known(self) -> bool:
        return self.speaker is not None

    def to_dict(self) -> dict:
        return {
            "speaker": self.speaker,
            "known": self.known,
            "score": self.score,
            "threshold": self.threshold,
            "candidates": [{"name": n, "score": s} for n, s in self.candidates],
        }


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def _normalise_rows(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


# -- checks and messages shared by the SQLite and PostgreSQL stores ------------------------------
# ``where`` names the store in messages: a path, or a URL without its password.


def _meta_problem(where: object, meta: dict[str, str], embed_dim: int | None) -> str | None:
    """Why ``meta`` is not a store this speakerprint can use with ``embed_dim``, or None."""
    if meta.get("format") != STORE_FORMAT:
        return f"{where} is not an enrollment store (format={meta.get('format')!r})"
    version = int(meta.get("schema_version", "0"))
    if version > SCHEMA_VERSION:
        return (
            f"enrollment store {where} has schema version {version}, newer than this "
            f"speakerprint understands ({SCHEMA_VERSION}); upgrade speakerprint"
        )
    if embed_dim is not None and int(embed_dim) != (stored_dim := int(meta["embed_dim"])):
        return (
            f"enrollment store {where} holds {stored_dim}-dimensional embeddings, "
            f"not {embed_dim}-dimensional ones"
        )
    return None


def _another_model_message(
    where: object, stored_fingerprint: str, model_fingerprint: str, model_path: str | None
) -> str:
    return (
        f"enrollment store {where} was made with another model (fingerprint "
        f"{stored_fingerprint[:16]}..., this one is {model_fingerprint[:16]}...): "
        "embeddings of different models cannot be compared; use the store's model "
        f"({model_path or 'path not recorded'}) or a new store"
    )


def _check_name(name: str) -> str:
    if not isinstance(name, str) or not name.strip():
        raise StoreError(f"a speaker name must be a non-empty string, got {name!r}")
    return name.strip()


def _check_enrollment(
    where: object,
    embed_dim: int,
    embeddings: np.ndarray | Sequence[np.ndarray],
    sources: Sequence[str | None] | None,
) -> tuple[np.ndarray, list[str | None]]:
    """Enrollment embeddings as (K, embed_dim) float32 and their K sources (str or None)."""
    vectors = np.asarray(embeddings, dtype=np.float32)
    if vectors.ndim == 1:
        vectors = vectors[None]
    if vectors.ndim != 2 or vectors.shape[1] != embed_dim or len(vectors) == 0:
        raise StoreError(
            f"enrollment store {where}: expected embeddings of shape (K, {embed_dim})"
            f" with K >= 1, got {tuple(np.shape(embeddings))}"
        )
    if not np.isfinite(vectors).all():
        raise StoreError(f"enrollment store {where}: the embeddings contain NaN or Inf")
    if sources is None:
        sources = [None] * len(vectors)
    if len(sources) != len(vectors):
        raise StoreError(
            f"enrollment store {where}: {len(vectors)} embeddings but {len(sources)} sources"
        )
    return vectors, [None if s is None else str(s) for s in sources]


def _check_query(where: object, embed_dim: int, embedding: np.ndarray, top_k: int) -> np.ndarray:
    """The query embedding as (embed_dim,) float64."""
    if top_k < 1:
        raise ValueError(f"top_k must be at least 1, got {top_k}")
    query = np.asarray(embedding, dtype=np.float64)
    if query.shape != (embed_dim,):
        raise StoreError(
            f"enrollment store {where}: expected a query of shape ({embed_dim},), got {query.shape}"
        )
    if not np.isfinite(query).all():
        raise StoreError(f"enrollment store {where}: the query contains NaN or Inf")
    return query


def _decide(candidates: list[tuple[str, float]], threshold: float) -> Identification:
    """The best of ``candidates`` (best first), or "unknown" when it scores below ``threshold``."""
    best_name, best_score = candidates[0]
    return Identification(
        speaker=best_name if best_score >= threshold else None,
        score=best_score,
        threshold=float(threshold),
        candidates=candidates,
    )


def _no_speakers_message(where: object) -> str:
    return f"enrollment store {where} has no speakers: enroll some first"


def _unknown_speaker_message(where: object, name: str, known: Sequence[str]) -> str:
    shown = ", ".join(known[:10]) + (" ..." if len(known) > 10 else "")
    return f"enrollment store {where} has no speaker {name!r} (speakers: {shown or 'none'})"


class _StoreMeta:
    """What both back ends share: the record of the model a store was made for.

    Subclasses set ``path`` (a file path, or a URL with its password hidden) and ``_meta``.
    """

    path: str | Path
    _meta: dict[str, str]

    @property
    def model_fingerprint(self) -> str:
        return self._meta["model_fingerprint"]

    @property
    def embed_dim(self) -> int:
        return int(self._meta["embed_dim"])

    @property
    def model_path(self) -> str | None:
        """The model path recorded on creation (a hint; may have moved since), or None."""
        return self._meta.get("model_path") or None

    def check_model(self, model_fingerprint: str) -> None:
        """Raise StoreError unless ``model_fingerprint`` is the model this store was made for."""
        if model_fingerprint != self.model_fingerprint:
            raise StoreError(
                _another_model_message(
                    self.path, self.model_fingerprint, model_fingerprint, self.model_path
                )
            )

    def _checked_enrollment(
        self,
        name: str,
        embeddings: np.ndarray | Sequence[np.ndarray],
        model_fingerprint: str,
        sources: Sequence[str | None] | None,
    ) -> tuple[str, np.ndarray, list[str | None]]:
        """The checks every ``enroll`` makes first: (name, vectors (K, D), sources)."""
        self.check_model(model_fingerprint)
        name = _check_name(name)
        vectors, sources = _check_enrollment(self.path, self.embed_dim, embeddings, sources)
        return name, vectors, sources

    def _checked_query(
        self, embedding: np.ndarray, model_fingerprint: str, top_k: int
    ) -> np.ndarray:
        """The checks every ``identify`` makes first: the query as (D,) float64."""
        self.check_model(model_fingerprint)
        return _check_query(self.path, self.embed_dim, embedding, top_k)


class EnrollmentStore(_StoreMeta):
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
                    meta = {
                        "format": STORE_FORMAT,
                        "schema_version": str(SCHEMA_VERSION),
                        "model_fingerprint": model_fingerprint,
                        "embed_dim": str(int(embed_dim)),
                        "model_path": "" if model_path is None else str(model_path),
                        "created_at": _now(),
                    }
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
        store._check_meta(model_fingerprint, embed_dim)
        return store

    def _check_meta(self, model_fingerprint: str | None, embed_dim: int | None) -> None:
        problem = _meta_problem(self.path, self._meta, embed_dim)
        if problem is not None:
            self.close()
            raise StoreError(problem)
        if model_fingerprint is not None:
            try:
                self.check_model(model_fingerprint)
            except StoreError:
                self.close()
                raise

    def close(self) -> None:
        self._conn.close()

    def __enter__(self) -> EnrollmentStore:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

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
        now = _now()
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
                raise StoreError(self._unknown_speaker_message(name))
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
            raise StoreError(self._unknown_speaker_message(name))
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
        means = np.stack([_normalise_rows(np.stack(v)).mean(axis=0) for v in grouped.values()])
        return names, _normalise_rows(means).astype(np.float32)

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
            raise StoreError(_no_speakers_message(self.path))
        scores = means.astype(np.float64) @ _normalise_rows(query)
        order = np.argsort(-scores, kind="stable")[:top_k]
        return _decide([(names[i], float(scores[i])) for i in order], threshold)

    # -- helpers ---------------------------------------------------------------------------------

    def _vector(self, blob: bytes) -> np.ndarray:
        vector = np.frombuffer(blob, dtype=np.float32)
        if vector.shape != (self.embed_dim,):
            raise StoreError(
                f"enrollment store {self.path} is corrupt: a stored embedding has "
                f"{vector.size} values, not {self.embed_dim}"
            )
        return vector

    def _unknown_speaker_message(self, name: str) -> str:
        return _unknown_speaker_message(self.path, name, [s.name for s in self.speakers()])


# -- one opener for both back ends ---------------------------------------------------------------

_URL_SCHEMES = ("postgresql://", "postgres://")


def is_store_url(db: str | os.PathLike) -> bool:
    """Whether ``db`` names a PostgreSQL store (a ``postgresql://`` or ``postgres://`` URL)."""
    return isinstance(db, str) and db.lower().startswith(_URL_SCHEMES)


def open_store(
    db: str | os.PathLike,
    *,
    model_fingerprint: str | None = None,
    embed_dim: int | None = None,
    model_path: str | None = None,
    create: bool = False,
) -> EnrollmentStore | PgEnrollmentStore:
    """Open the store ``db`` names: PostgreSQL (:class:`~speakerprint.inference.store_pg.\
PgEnrollmentStore`) for a ``postgresql://`` or ``postgres://`` URL, else an SQLite file.

    The arguments are those of :meth:`EnrollmentStore.open`; both stores have the same methods.
    """
    if is_store_url(db):
        from speakerprint.inference.store_pg import PgEnrollmentStore

        opener = PgEnrollmentStore.open
    else:
        opener = EnrollmentStore.open
    return opener(
        db,
        model_fingerprint=model_fingerprint,
        embed_dim=embed_dim,
        model_path=model_path,
        create=create,
    )


def store_exists(db: str | os.PathLike) -> bool:
    """Whether ``db`` already holds a store (a file, or a database with the store's tables).

    Raises:
        StoreError: a PostgreSQL server that cannot be reached.
    """
    if is_store_url(db):
        from speakerprint.inference.store_pg import PgEnrollmentStore

        return PgEnrollmentStore.exists(db)
    return Path(db).is_file()
