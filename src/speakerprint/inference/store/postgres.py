"""The enrollment store over PostgreSQL with pgvector, for deployments that outgrow one SQLite file.

Same interface (:class:`~speakerprint.inference.store.base.BaseEnrollmentStore`), same checks and
same scores as the SQLite :class:`~speakerprint.inference.store.EnrollmentStore`; only the
location differs: a connection URL (``postgresql://user:pass@host/db``
or ``postgres://...``, any libpq URL) instead of a path.
:func:`~speakerprint.inference.store.open_store` picks the back end from its argument, so every
store command takes either.

Two tables in the database (its ``search_path`` decides the schema; give one with
``?options=-csearch_path%3Dmyschema`` to keep several stores in one database):

- ``meta``: key/value rows, as in the SQLite store (format, schema version, model fingerprint,
  embedding size, model path, creation time);
- ``embeddings``: one row per enrollment recording: ``id``, ``speaker``, ``source`` (the file),
  ``embedding vector(D)``, ``created_at``.

Identification runs in the server: per speaker, ``AVG(l2_normalize(embedding))``, then the cosine
distance ``<=>`` to the query, ``ORDER BY`` and ``LIMIT k``; only the k best rows come back. This
is the SQLite store's computation (the normalised mean of normalised embeddings, scored by cosine),
so both stores give the same scores to within float32 rounding. It reads every embedding once
(a sequential scan and a hash aggregate): the HNSW index on ``embeddings`` (``vector_cosine_ops``)
cannot rank speaker *means*, it serves :meth:`PgEnrollmentStore.nearest_utterances`, the nearest
single enrollment recordings, approximately (raise ``hnsw.ef_search`` for more recall).

Every write is one transaction (``BEGIN`` ... ``COMMIT``, rolled back on any error); creating a
store takes an advisory lock so that two processes creating it at once do not collide. Creating
a store runs ``CREATE EXTENSION IF NOT EXISTS vector`` when the extension is not there yet, which
needs pgvector installed on the server and a role allowed to create it (a superuser, once).

A server that cannot be reached, or that goes away mid-command (restarted, failed over), raises
:class:`~speakerprint.inference.store.base.StoreUnavailableError`; the transaction in progress
is the server's to roll back, so nothing is half-written. A long-running process
(``speakerprint serve``) opens its stores through a :class:`PgStorePool` instead of a connection
per request: open connections (psycopg_pool), each checked when taken, so one broken by a server
restart is replaced, not handed out.

psycopg 3 (and psycopg_pool for :class:`PgStorePool`) is imported when a store is opened;
without it opening raises a StoreError naming ``pip install 'speakerprint[pg]'``. Vectors travel as text literals (``'[0.1,...]'::vector``)
and come back as ``real[]``, so no pgvector Python package is needed.

>>> store = open_store("postgresql://sp@db.example/speakers", model_fingerprint=enc.fingerprint,
...                    embed_dim=enc.embed_dim, create=True)  # doctest: +SKIP
>>> store.identify(enc.embed("who.wav"), threshold=0.37, model_fingerprint=enc.fingerprint)
... # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING

import numpy as np

from speakerprint.inference.store.base import (
    BaseEnrollmentStore,
    Identification,
    SpeakerEntry,
    StoreError,
    StoreUnavailableError,
    is_store_url,
)

if TYPE_CHECKING:
    import psycopg
    import psycopg_pool

__all__ = ["INSTALL_HINT", "PgEnrollmentStore", "PgStorePool", "redact_url"]

INSTALL_HINT = "pip install 'speakerprint[pg]'"

# pgvector's limits: a vector column holds at most 16000 dimensions, an HNSW index 2000.
_MAX_DIM = 16000
_MAX_INDEXED_DIM = 2000
# Serialises store creation across processes (pg_advisory_xact_lock takes a bigint).
_CREATE_LOCK = 0x5350_4B52_5354  # "SPKRST"

_SCHEMA = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE embeddings (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    speaker TEXT COLLATE "C" NOT NULL,
    source TEXT,
    embedding vector({dim}) NOT NULL,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX embeddings_by_speaker ON embeddings (speaker);
"""
# Byte order ("C") for speaker names, so that lists and ties sort as in the SQLite store.
_HNSW_INDEX = "CREATE INDEX embeddings_hnsw ON embeddings USING hnsw (embedding vector_cosine_ops)"

# The speaker mean's cosine with the query; a zero mean (or query) gives NaN in pgvector and
# score 0 in the SQLite store (whose normalisation divides by max(norm, 1e-12)): 0 here too.
_SCORE = "1 - COALESCE(NULLIF(AVG(l2_normalize(embedding)) <=> %(query)s::vector, 'NaN'), 1)"


def redact_url(url: str) -> str:
    """``url`` with its password, in the user part or a ``password=`` parameter, shown as ***."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return url
    end = min((i for i in (rest.find("/"), rest.find("?")) if i >= 0), default=len(rest))
    netloc, tail = rest[:end], rest[end:]
    user, at, hosts = netloc.rpartition("@")
    if at and ":" in user:
        netloc = f"{user.split(':', 1)[0]}:***@{hosts}"
    tail = re.sub(r"(?i)([?&]password=)[^&]*", r"\1***", tail)
    return f"{scheme}{sep}{netloc}{tail}"


def _one_line(error: BaseException) -> str:
    return " ".join(str(error).split()) or type(error).__name__


def _import_psycopg():
    try:
        import psycopg
    except ImportError:
        raise StoreError(f"PostgreSQL enrollment stores need psycopg 3: {INSTALL_HINT}") from None
    return psycopg


#: The oldest pgvector the store's queries run on (l2_normalize came with 0.7.0).
MIN_PGVECTOR = (0, 7)


def check_pgvector_version(version: str | None, where: str) -> None:
    """A StoreError naming the server's pgvector when it is missing or older than
    :data:`MIN_PGVECTOR`, instead of a 500 naming an undefined function on the first identify.

    >>> check_pgvector_version("0.8.0", "postgresql://db")
    >>> check_pgvector_version("0.6.2", "postgresql://db")
    Traceback (most recent call last):
    ...
    speakerprint.inference.store.base.StoreError: enrollment store postgresql://db: the server's pgvector is 0.6.2; the store needs 0.7 or newer (l2_normalize): install a newer pgvector and run ALTER EXTENSION vector UPDATE
    """
    needed = ".".join(map(str, MIN_PGVECTOR))
    if version is None:
        raise StoreError(
            f"enrollment store {where}: the vector extension is not installed in this database "
            f"(pgvector {needed} or newer is needed)"
        )
    parts = [int(p) if p.isdigit() else 0 for p in version.split(".")[:2]]
    if tuple(parts + [0] * (2 - len(parts))) < MIN_PGVECTOR:
        raise StoreError(
            f"enrollment store {where}: the server's pgvector is {version}; the store needs "
            f"{needed} or newer (l2_normalize): install a newer pgvector and run ALTER "
            "EXTENSION vector UPDATE"
        )


def _vector_literal(vector: np.ndarray) -> str:
    """pgvector's text form of a float32 vector; repr() of each value reads back exactly."""
    return "[" + ",".join(map(repr, np.asarray(vector, dtype=np.float32).tolist())) + "]"


def _connect_params(url: str) -> dict:
    """The connection parameters of ``url``, with a connect timeout and an application name."""
    psycopg = _import_psycopg()
    try:
        params = psycopg.conninfo.conninfo_to_dict(url)
    except psycopg.Error as e:
        raise StoreError(
            f"enrollment store {redact_url(url)}: bad connection URL: {_one_line(e)}"
        ) from None
    params.setdefault("connect_timeout", 10)
    params.setdefault("application_name", "speakerprint")
    return params


def _connect(url: str) -> psycopg.Connection:
    """An autocommit connection (each write opens its own transaction), or a StoreError that
    names the URL without its password and the reason (StoreUnavailableError: no server)."""
    psycopg = _import_psycopg()
    params = _connect_params(url)
    try:
        return psycopg.connect(**params, autocommit=True)
    except psycopg.OperationalError as e:
        raise StoreUnavailableError(
            f"cannot connect to enrollment store {redact_url(url)}: {_one_line(e)}"
        ) from None
    except psycopg.Error as e:
        raise StoreError(
            f"cannot connect to enrollment store {redact_url(url)}: {_one_line(e)}"
        ) from None


def _check_open_arguments(
    url: str, model_fingerprint: str | None, embed_dim: int | None, create: bool
) -> None:
    if not is_store_url(url):
        raise StoreError(f"{url!r} is not a postgresql:// or postgres:// URL")
    if create and (model_fingerprint is None or embed_dim is None):
        raise ValueError("creating a store needs model_fingerprint and embed_dim")
    if create and not 1 <= int(embed_dim) <= _MAX_DIM:
        raise ValueError(f"embed_dim must be between 1 and {_MAX_DIM}, got {embed_dim}")


def _table_exists(conn: psycopg.Connection, name: str) -> bool:
    (found,) = conn.execute("SELECT to_regclass(%s) IS NOT NULL", (name,)).fetchone()
    return bool(found)


class PgEnrollmentStore(BaseEnrollmentStore):
    """Enrolled speakers of one model in a PostgreSQL database; open it with :meth:`open`.

    Attributes:
        url: the connection URL without its password (also ``path``, the name the shared
            messages and callers of the SQLite store use).
    """

    def __init__(
        self,
        url: str,
        connection: psycopg.Connection,
        meta: dict[str, str],
        release: Callable[[], None] | None = None,
    ) -> None:
        self.url = redact_url(url)
        self.path = self.url
        self._conn = connection
        self._meta = meta
        self._release = connection.close if release is None else release  # a pool's: give back

    # -- opening -------------------------------------------------------------------------------

    @classmethod
    def open(
        cls,
        url: str,
        *,
        model_fingerprint: str | None = None,
        embed_dim: int | None = None,
        model_path: str | None = None,
        create: bool = False,
        legacy_fingerprints: Sequence[str] = (),
    ) -> PgEnrollmentStore:
        """Open the store in the database ``url`` names; with ``create=True`` make its tables
        (and the vector extension) when the database has none yet.

        The arguments are :meth:`EnrollmentStore.open`'s, with a URL for the path. The database
        itself must exist (``createdb``); the store's tables are made in it.

        Raises:
            StoreError: psycopg missing, a bad URL, a server that cannot be reached or refuses
                the login, no store in the database (and ``create`` is False), pgvector missing,
                tables that are not a store's, a newer schema, or another model's store.
        """
        _check_open_arguments(url, model_fingerprint, embed_dim, create)
        return cls._opened(
            cls(url, _connect(url), {}),
            model_fingerprint=model_fingerprint,
            embed_dim=embed_dim,
            model_path=model_path,
            create=create,
            legacy_fingerprints=legacy_fingerprints,
        )

    @staticmethod
    def _opened(
        store: PgEnrollmentStore,
        *,
        model_fingerprint: str | None,
        embed_dim: int | None,
        model_path: str | None,
        create: bool,
        legacy_fingerprints: Sequence[str],
    ) -> PgEnrollmentStore:
        """``store``, on a connection just made or taken from a pool, once its tables are
        read (made, with ``create``) and checked as :meth:`open` says; closed on failure."""
        psycopg = _import_psycopg()
        conn, where = store._conn, store.url
        try:
            with conn.transaction():
                if create and not _table_exists(conn, "meta"):
                    # Only creators wait for each other (and then look again).
                    conn.execute("SELECT pg_advisory_xact_lock(%s)", (_CREATE_LOCK,))
                if not _table_exists(conn, "meta"):
                    if not create:
                        raise StoreError(
                            f"enrollment store {where} does not exist (the database has no "
                            "store tables; enroll a speaker first)"
                        )
                    if _table_exists(conn, "embeddings"):
                        raise StoreError(
                            f"{where} has an embeddings table but no meta table: not an "
                            "enrollment store (use another database or schema)"
                        )
                    store._create(int(embed_dim), model_fingerprint, model_path)
                store._meta = dict(conn.execute("SELECT key, value FROM meta").fetchall())
                row = conn.execute(
                    "SELECT extversion FROM pg_extension WHERE extname = 'vector'"
                ).fetchone()
        except psycopg.OperationalError as e:
            store.close()
            raise StoreUnavailableError(f"enrollment store {where}: {_one_line(e)}") from None
        except psycopg.Error as e:
            store.close()
            raise StoreError(
                f"{where} is not a readable enrollment store: {_one_line(e)}"
            ) from None
        except BaseException:
            store.close()
            raise
        store._check_opened(model_fingerprint, embed_dim, legacy_fingerprints)
        try:  # a store, then: one its queries can run on
            check_pgvector_version(None if row is None else row[0], where)
        except StoreError:
            store.close()
            raise
        return store

    def _replace_fingerprint(self, old: str, new: str) -> str:
        with self._transaction() as conn:
            conn.execute(
                "UPDATE meta SET value = %s WHERE key = 'model_fingerprint' AND value = %s",
                (new, old),
            )
            (recorded,) = conn.execute(
                "SELECT value FROM meta WHERE key = 'model_fingerprint'"
            ).fetchone()
        return recorded

    def _create(self, embed_dim: int, model_fingerprint: str, model_path: str | None) -> None:
        """The extension, tables, indexes and meta rows; inside open()'s transaction."""
        psycopg = _import_psycopg()
        conn = self._conn
        (has_vector,) = conn.execute(
            "SELECT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'vector')"
        ).fetchone()
        if not has_vector:
            try:
                with conn.transaction():  # a savepoint: the reason, not "transaction aborted"
                    conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
            except psycopg.Error as e:
                raise StoreError(
                    f"cannot create enrollment store {self.url}: CREATE EXTENSION vector failed "
                    f"({_one_line(e)}): install pgvector on the server (Debian: "
                    "postgresql-NN-pgvector) and create the extension as a superuser"
                ) from None
        for statement in filter(str.strip, _SCHEMA.format(dim=embed_dim).split(";")):
            conn.execute(statement)
        if embed_dim <= _MAX_INDEXED_DIM:
            conn.execute(_HNSW_INDEX)
        meta = self.new_meta(model_fingerprint, embed_dim, model_path)
        with conn.cursor() as cursor:
            cursor.executemany("INSERT INTO meta VALUES (%s, %s)", list(meta.items()))

    @classmethod
    def exists(cls, url: str) -> bool:
        """Whether the database ``url`` names holds a store's ``meta`` table (checked, not read).

        Raises:
            StoreError: psycopg missing, a bad URL or a server that cannot be reached.
        """
        with contextlib.closing(_connect(url)) as conn:
            return _table_exists(conn, "meta")

    def close(self) -> None:
        """Close the connection (or give it back to its :class:`PgStorePool`)."""
        self._release()

    def __enter__(self) -> PgEnrollmentStore:
        return self

    @contextlib.contextmanager
    def _lost_connection(self) -> Iterator[None]:
        """A server gone away mid-command is the user's to fix: a StoreError, not a traceback.
        Other database errors (a constraint, a trigger) pass as they are, as in the SQLite store."""
        psycopg = _import_psycopg()
        try:
            yield
        except psycopg.OperationalError as e:
            raise StoreUnavailableError(f"enrollment store {self.url}: {_one_line(e)}") from None

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[psycopg.Connection]:
        """One write transaction: committed on success, rolled back on any exception."""
        with self._lost_connection(), self._conn.transaction():
            yield self._conn

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
        with self._transaction() as conn:
            with conn.cursor() as cursor:
                cursor.executemany(
                    "INSERT INTO embeddings (speaker, source, embedding) "
                    "VALUES (%s, %s, %s::vector)",
                    [(name, s, _vector_literal(v)) for v, s in zip(vectors, sources)],
                )
            (count,) = conn.execute(
                "SELECT COUNT(*) FROM embeddings WHERE speaker = %s", (name,)
            ).fetchone()
        return int(count)

    def remove(self, name: str) -> int:
        """Remove a speaker and all its embeddings; returns how many embeddings went.

        Raises:
            StoreError: no speaker of that name.
        """
        with self._transaction() as conn:
            (count,) = conn.execute(
                "WITH gone AS (DELETE FROM embeddings WHERE speaker = %s RETURNING 1) "
                "SELECT COUNT(*) FROM gone",
                (name,),
            ).fetchone()
            if count == 0:
                raise self._unknown_speaker_error(name)
        return int(count)

    # -- reads -----------------------------------------------------------------------------------

    def speakers(self) -> list[SpeakerEntry]:
        """Every enrolled speaker, by name."""
        with self._lost_connection():
            rows = self._conn.execute(
                "SELECT speaker, COUNT(*), "
                "array_remove(array_agg(source ORDER BY id), NULL) "
                "FROM embeddings GROUP BY speaker ORDER BY speaker"
            ).fetchall()
        return [SpeakerEntry(name, int(count), list(sources)) for name, count, sources in rows]

    def embeddings(self, name: str) -> np.ndarray:
        """A speaker's enrollment embeddings as stored, (K, embed_dim) float32."""
        with self._lost_connection():
            rows = self._conn.execute(
                "SELECT embedding::real[] FROM embeddings WHERE speaker = %s ORDER BY id", (name,)
            ).fetchall()
        if not rows:
            raise self._unknown_speaker_error(name)
        return np.array([row[0] for row in rows], dtype=np.float32).reshape(-1, self.embed_dim)

    def speaker_means(self) -> tuple[list[str], np.ndarray]:
        """Names and their mean embeddings (N, embed_dim), each the normalised mean of the
        speaker's normalised enrollment embeddings (computed by the server)."""
        with self._lost_connection():
            rows = self._conn.execute(
                "SELECT speaker, l2_normalize(AVG(l2_normalize(embedding)))::real[] "
                "FROM embeddings GROUP BY speaker ORDER BY speaker"
            ).fetchall()
        if not rows:
            return [], np.zeros((0, self.embed_dim), dtype=np.float32)
        names = [name for name, _ in rows]
        return names, np.array([mean for _, mean in rows], dtype=np.float32)

    def identify(
        self,
        embedding: np.ndarray,
        *,
        threshold: float,
        model_fingerprint: str,
        top_k: int = 5,
    ) -> Identification:
        """Score a query embedding (D,) against every speaker's mean, in the server; see the
        module docstring. Only the ``top_k`` best speakers come back from the database.

        Raises:
            StoreError: another model's fingerprint, a wrong embedding size, NaN/Inf in the
                query, or an empty store.
        """
        query = self._checked_query(embedding, model_fingerprint, top_k)
        with self._lost_connection():
            rows = self._conn.execute(
                f"SELECT speaker, {_SCORE} AS score FROM embeddings GROUP BY speaker "
                "ORDER BY score DESC, speaker LIMIT %(top_k)s",
                {"query": _vector_literal(query), "top_k": int(top_k)},
            ).fetchall()
        if not rows:
            raise self._no_speakers_error()
        return Identification.decide([(name, float(score)) for name, score in rows], threshold)

    def nearest_utterances(
        self, embedding: np.ndarray, *, model_fingerprint: str, k: int = 5
    ) -> list[tuple[str, str | None, float]]:
        """The ``k`` enrollment recordings closest to a query (D,), as ``(speaker, source,
        cosine)``, best first: a search over single recordings, not speaker means, which the HNSW
        index answers (approximately, and at most ``hnsw.ef_search`` rows) once the table is
        large enough for the planner to use it.

        Raises:
            StoreError: another model's fingerprint, a wrong embedding size or NaN/Inf.
        """
        query = self._checked_query(embedding, model_fingerprint, k)
        with self._lost_connection():
            rows = self._conn.execute(
                "SELECT speaker, source, 1 - (embedding <=> %(query)s::vector) FROM embeddings "
                "ORDER BY embedding <=> %(query)s::vector LIMIT %(k)s",
                {"query": _vector_literal(query), "k": int(k)},
            ).fetchall()
        return [(name, source, float(score)) for name, source, score in rows]


class PgStorePool:
    """Open connections to one PostgreSQL store, shared by the requests of a long-running
    process (``speakerprint serve``), so that a request does not pay for a new connection.

    A connection is checked (an empty query) when taken: one that a server restart broke is
    dropped and a new one made, so the process reconnects by itself once the server is back.
    While it is down, :meth:`open` waits up to ``timeout_s`` for a connection, then raises
    :class:`~speakerprint.inference.store.base.StoreUnavailableError`; a command cut off
    mid-transaction raises it too, and its transaction is rolled back by the server.

    Args:
        url: the store's ``postgresql://`` URL.
        max_size: the most connections kept open (each process of a service holds its own).
        timeout_s: how long :meth:`open` waits for a connection before giving up.

    Raises:
        StoreError: psycopg or psycopg_pool missing, or a bad URL.
        StoreUnavailableError: the server cannot be reached now (checked once, on creation, for
            a message that says why).

    >>> pool = PgStorePool("postgresql://sp@db.example/speakers")  # doctest: +SKIP
    >>> with pool.open(model_fingerprint=enc.fingerprint) as store:  # doctest: +SKIP
    ...     store.speakers()
    >>> pool.close()  # doctest: +SKIP
    """

    def __init__(self, url: str, *, max_size: int = 4, timeout_s: float = 5.0) -> None:
        _import_psycopg()
        try:
            from psycopg_pool import ConnectionPool
        except ImportError:
            raise StoreError(
                f"a pool of PostgreSQL connections needs psycopg_pool: {INSTALL_HINT}"
            ) from None
        params = _connect_params(url)
        _connect(url).close()  # a server that cannot be reached says why, here
        self.url = redact_url(url)
        self.timeout_s = float(timeout_s)
        self._url = url
        self._pool: psycopg_pool.ConnectionPool = ConnectionPool(
            kwargs={**params, "autocommit": True},
            min_size=1,
            max_size=max_size,
            timeout=self.timeout_s,
            check=ConnectionPool.check_connection,
            name="speakerprint-store",
            open=True,
        )

    def open(
        self,
        *,
        model_fingerprint: str | None = None,
        embed_dim: int | None = None,
        model_path: str | None = None,
        create: bool = False,
        legacy_fingerprints: Sequence[str] = (),
    ) -> PgEnrollmentStore:
        """The store on a pooled connection, checked as :meth:`PgEnrollmentStore.open` checks
        it (the arguments are its own); closing it gives the connection back.

        Raises:
            StoreUnavailableError: no working connection within ``timeout_s``.
            StoreError: as :meth:`PgEnrollmentStore.open`.
        """
        from psycopg_pool import PoolClosed, PoolTimeout

        _check_open_arguments(self._url, model_fingerprint, embed_dim, create)
        try:
            conn = self._pool.getconn()
        except (PoolTimeout, PoolClosed) as e:
            raise StoreUnavailableError(
                f"enrollment store {self.url}: no working connection to the server within "
                f"{self.timeout_s:g} s (the server is down or restarting, or every connection is "
                f"busy: {_one_line(e)}); try again"
            ) from None
        return PgEnrollmentStore._opened(
            PgEnrollmentStore(self._url, conn, {}, release=lambda: self._pool.putconn(conn)),
            model_fingerprint=model_fingerprint,
            embed_dim=embed_dim,
            model_path=model_path,
            create=create,
            legacy_fingerprints=legacy_fingerprints,
        )

    def close(self) -> None:
        """Close every connection; :meth:`open` raises StoreUnavailableError afterwards."""
        self._pool.close()

    def __enter__(self) -> PgStorePool:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
