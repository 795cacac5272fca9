"""Enrollment stores: named speakers, their enrollment embeddings, and identification.

One interface (:class:`BaseEnrollmentStore`, in :mod:`.base`, with the records, errors and
checks both back ends share) over two back ends: one SQLite file (:class:`EnrollmentStore`, in
:mod:`.sqlite`) or PostgreSQL with pgvector (:class:`PgEnrollmentStore`, in :mod:`.postgres`).
:func:`open_store` opens either, from a path or a ``postgresql://`` URL.

>>> enc = SpeakerEncoder.from_pretrained()  # doctest: +SKIP
>>> with open_store("speakers.db", model_fingerprint=enc.fingerprint, embed_dim=enc.embed_dim,
...                 legacy_fingerprints=enc.legacy_fingerprints, create=True) as store:
...     store.enroll("alice", enc.embed("alice1.wav"), model_fingerprint=enc.fingerprint)
...     store.identify(enc.embed("who.wav"), threshold=0.37, model_fingerprint=enc.fingerprint)
... # doctest: +SKIP
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from speakerprint.inference.store.base import (
    MAX_NAME_CHARS,
    SCHEMA_VERSION,
    STORE_FORMAT,
    BaseEnrollmentStore,
    Identification,
    SpeakerEntry,
    StoreError,
    StoreUnavailableError,
    check_speaker_name,
    is_store_url,
)
from speakerprint.inference.store.postgres import PgEnrollmentStore, PgStorePool, redact_url
from speakerprint.inference.store.sqlite import EnrollmentStore

__all__ = [
    "MAX_NAME_CHARS",
    "SCHEMA_VERSION",
    "STORE_FORMAT",
    "BaseEnrollmentStore",
    "EnrollmentStore",
    "Identification",
    "PgEnrollmentStore",
    "PgStorePool",
    "SpeakerEntry",
    "StoreError",
    "StoreUnavailableError",
    "check_speaker_name",
    "is_store_url",
    "open_store",
    "redact_url",
    "store_exists",
]


def open_store(
    db: str | os.PathLike,
    *,
    model_fingerprint: str | None = None,
    embed_dim: int | None = None,
    model_path: str | None = None,
    create: bool = False,
    legacy_fingerprints: Sequence[str] = (),
) -> BaseEnrollmentStore:
    """Open the store ``db`` names: PostgreSQL (:class:`PgEnrollmentStore`) for a
    ``postgresql://`` or ``postgres://`` URL, else an SQLite file (:class:`EnrollmentStore`).

    The arguments are those of :meth:`EnrollmentStore.open`; both stores have the same methods.
    """
    opener = PgEnrollmentStore.open if is_store_url(db) else EnrollmentStore.open
    return opener(
        db,
        model_fingerprint=model_fingerprint,
        embed_dim=embed_dim,
        model_path=model_path,
        create=create,
        legacy_fingerprints=legacy_fingerprints,
    )


def store_exists(db: str | os.PathLike) -> bool:
    """Whether ``db`` already holds a store (a file, or a database with the store's tables).

    Raises:
        StoreError: a PostgreSQL server that cannot be reached.
    """
    if is_store_url(db):
        return PgEnrollmentStore.exists(db)
    return Path(db).is_file()
