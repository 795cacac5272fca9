"""The SQLite store under several processes: WAL mode, readers that never wait for a writer, and
a writer that waits too long told so (StoreUnavailableError, the service's 503)."""

from __future__ import annotations

import sqlite3
import threading
import time

import numpy as np
import pytest

from speakerprint.inference.store import EnrollmentStore, StoreUnavailableError
from speakerprint.inference.store import sqlite as sqlite_store

FP = "a" * 64


def _store(path) -> EnrollmentStore:
    return EnrollmentStore.open(path, model_fingerprint=FP, embed_dim=4, create=True)


def test_a_store_is_in_wal_mode_and_flushes_each_commit(tmp_path):
    with _store(tmp_path / "s.db") as store:
        (mode,) = store._conn.execute("PRAGMA journal_mode").fetchone()
        (synchronous,) = store._conn.execute("PRAGMA synchronous").fetchone()
    assert mode == "wal" and synchronous == 2  # FULL: an answered enrollment survives power loss
    with sqlite3.connect(tmp_path / "s.db") as plain:  # recorded in the file, for every process
        assert plain.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_an_older_store_is_switched_to_wal_on_open(tmp_path):
    path = tmp_path / "old.db"
    with _store(path) as store:
        store.enroll("ann", np.eye(4)[:2], model_fingerprint=FP)
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA journal_mode = DELETE")  # as releases before WAL left their files
    conn.close()
    with EnrollmentStore.open(path, model_fingerprint=FP) as store:
        assert store._conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert store.speakers()[0].num_embeddings == 2


def test_a_reader_is_not_blocked_by_a_writer_in_a_transaction(tmp_path):
    """Another process holds the write lock (an exclusive transaction, a row written, not yet
    committed): opening the store, listing and identifying still answer at once, with the state
    before that transaction. In rollback-journal mode the same reader waits for the commit."""
    path = tmp_path / "s.db"
    with _store(path) as store:
        store.enroll("ann", np.eye(4)[:2], model_fingerprint=FP)
    writer = sqlite3.connect(path, isolation_level=None)
    writer.execute("BEGIN EXCLUSIVE")
    writer.execute("INSERT INTO speakers (name, created_at) VALUES ('bob', 'now')")
    answers: list = []

    def read():
        with EnrollmentStore.open(path, model_fingerprint=FP) as reader:
            answers.append([(e.name, e.num_embeddings) for e in reader.speakers()])
            answers.append(reader.identify(np.eye(4)[0], threshold=0.5, model_fingerprint=FP))

    thread = threading.Thread(target=read, daemon=True)
    started = time.monotonic()
    thread.start()
    try:
        thread.join(timeout=5)
        waited = time.monotonic() - started
        assert not thread.is_alive(), "the reader waited for the writer's transaction"
    finally:
        writer.execute("ROLLBACK")
        writer.close()
        thread.join()
    assert waited < 2
    assert answers[0] == [("ann", 2)] and answers[1].speaker == "ann"


def test_a_writer_locked_out_past_the_busy_timeout_is_told_to_retry(tmp_path, monkeypatch):
    path = tmp_path / "s.db"
    _store(path).close()
    monkeypatch.setattr(sqlite_store, "BUSY_TIMEOUT_S", 0.2)
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    try:
        with EnrollmentStore.open(path, model_fingerprint=FP) as store:  # reading: no wait
            started = time.monotonic()
            with pytest.raises(StoreUnavailableError, match="write lock for over 0.2 s"):
                store.enroll("ann", np.ones(4), model_fingerprint=FP)
            assert time.monotonic() - started < 2
    finally:
        other.execute("ROLLBACK")
        other.close()
    with EnrollmentStore.open(path, model_fingerprint=FP) as store:
        assert store.speakers() == []  # nothing half-written
        assert store.enroll("ann", np.ones(4), model_fingerprint=FP) == 1  # and writable again
