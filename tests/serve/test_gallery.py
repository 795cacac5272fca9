"""The service's in-memory speaker means of an SQLite store: reused while the file is unchanged,
recomputed after any connection's write or a replaced file."""

import os

import numpy as np

from speakerprint.inference.store import EnrollmentStore
from speakerprint.serve.gallery import SpeakerMeansCache

FP = "c" * 64
DIM = 8


def _store(path):
    return EnrollmentStore.open(path, model_fingerprint=FP, embed_dim=DIM, create=True)


def _enroll(path, name, seed):
    vectors = np.random.default_rng(seed).standard_normal((2, DIM)).astype(np.float32)
    with _store(path) as store:  # a connection of its own, as another request or process has
        store.enroll(name, vectors, model_fingerprint=FP)


def test_means_are_reused_until_another_connection_writes(tmp_path):
    db = tmp_path / "speakers.db"
    _enroll(db, "ann", 0)
    cache = SpeakerMeansCache(db)
    with _store(db) as store:
        names, means = cache.speaker_means(store)
        assert names == ["ann"] and cache.refreshes == 1
        assert cache.speaker_means(store)[1] is means and cache.refreshes == 1
        np.testing.assert_array_equal(means, store.speaker_means()[1])

        _enroll(db, "bob", 1)
        names, means = cache.speaker_means(store)
        assert names == ["ann", "bob"] and cache.refreshes == 2
        np.testing.assert_array_equal(means, store.speaker_means()[1])

        store.remove("ann")  # this very connection writing is seen too
        assert cache.speaker_means(store)[0] == ["bob"] and cache.refreshes == 3
    cache.close()


def test_a_replaced_file_is_noticed(tmp_path):
    db, other = tmp_path / "speakers.db", tmp_path / "other.db"
    _enroll(db, "ann", 0)
    _enroll(other, "zoe", 2)
    cache = SpeakerMeansCache(db)
    with _store(db) as store:
        assert cache.speaker_means(store)[0] == ["ann"]
    os.replace(other, db)
    for suffix in ("-wal", "-shm"):
        if os.path.exists(str(other) + suffix):
            os.replace(str(other) + suffix, str(db) + suffix)
    with _store(db) as store:
        assert cache.speaker_means(store)[0] == ["zoe"]
    cache.close()


def test_concurrent_readers_of_a_stale_cache_recompute_once(tmp_path):
    from concurrent.futures import ThreadPoolExecutor

    db = tmp_path / "speakers.db"
    for i in range(3):
        _enroll(db, f"s{i}", i)
    cache = SpeakerMeansCache(db)

    def read(_):
        with _store(db) as store:
            return cache.speaker_means(store)[0]

    with ThreadPoolExecutor(8) as pool:
        assert all(names == ["s0", "s1", "s2"] for names in pool.map(read, range(16)))
    assert cache.refreshes == 1
    cache.close()
