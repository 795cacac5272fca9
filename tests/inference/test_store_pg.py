"""The PostgreSQL enrollment store, against a real server that these tests start.

A throwaway cluster (tests/postgres.py: initdb into a temporary folder, a Unix socket in it, no
TCP port) runs for the session; each test gets a fresh database. Without PostgreSQL, pgvector or
psycopg the tests skip; the dev extra installs all three (pgserver bundles PostgreSQL with
pgvector).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from speakerprint.inference.store import (
    EnrollmentStore,
    PgEnrollmentStore,
    PgStorePool,
    StoreError,
    StoreUnavailableError,
    is_store_url,
    open_store,
    redact_url,
    store_exists,
)
from tests.postgres import SUPERUSER, PostgresServer, postgres_bindir, skip_reason

FP = "a" * 64
OTHER_FP = "b" * 64


# -- the server -----------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def pg_server():
    bindir = postgres_bindir()
    reason = skip_reason(bindir)
    if reason is not None:
        pytest.skip(reason)
    server = PostgresServer(bindir)
    try:
        server.init()
        server.start()
        yield server
    finally:
        server.remove()


@pytest.fixture
def pg_url(pg_server) -> str:
    """A fresh, empty database on the test server."""
    return pg_server.new_database()


def _store(url: str, dim: int = 4) -> PgEnrollmentStore:
    return PgEnrollmentStore.open(
        url, model_fingerprint=FP, embed_dim=dim, model_path="m", create=True
    )


# -- without a server -----------------------------------------------------------------------------


def test_urls_pick_the_backend_and_hide_passwords(tmp_path):
    assert is_store_url("postgresql://u@h/db") and is_store_url("postgres://h/db")
    assert not is_store_url("speakers.db") and not is_store_url(tmp_path / "postgresql:")
    assert redact_url("postgresql://sp:s3cret@db.example:5432/x?sslmode=require") == (
        "postgresql://sp:***@db.example:5432/x?sslmode=require"
    )
    assert (
        redact_url("postgres://sp@h/x?password=s3cret&a=1") == "postgres://sp@h/x?password=***&a=1"
    )
    assert redact_url("postgresql:///x") == "postgresql:///x"
    store = open_store(tmp_path / "s.db", model_fingerprint=FP, embed_dim=4, create=True)
    assert isinstance(store, EnrollmentStore)
    store.close()
    assert store_exists(tmp_path / "s.db") and not store_exists(tmp_path / "none.db")


def test_missing_psycopg_names_the_extra(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "psycopg", None)  # makes `import psycopg` fail
    with pytest.raises(StoreError, match=r"speakerprint\[pg\]"):
        open_store("postgresql://u@/db?host=/nonexistent", model_fingerprint=FP)


def test_unreachable_server_names_the_url_not_the_password(tmp_path):
    pytest.importorskip("psycopg")
    url = f"postgresql://sp:s3cret@/db?host={tmp_path}&connect_timeout=2"
    with pytest.raises(StoreError, match="cannot connect to enrollment store") as error:
        open_store(url, model_fingerprint=FP)
    assert "sp:***@" in str(error.value) and "s3cret" not in str(error.value)
    with pytest.raises(StoreError, match="bad connection URL"):
        open_store("postgresql://u@/db?nosuchoption=1")


# -- with a server ----------------------------------------------------------------------------


def test_enroll_list_and_persist(pg_url):
    with _store(pg_url) as store:
        two = store.enroll("ann", np.eye(4)[:2], sources=["a1.wav", "a2.wav"], model_fingerprint=FP)
        assert two == 2
        assert store.enroll("ann", np.eye(4)[2], sources=["a3.wav"], model_fingerprint=FP) == 3
        assert store.enroll(" bob ", np.ones((1, 4)), model_fingerprint=FP) == 1
    assert store_exists(pg_url)
    with open_store(pg_url, model_fingerprint=FP) as store:
        assert isinstance(store, PgEnrollmentStore)
        entries = store.speakers()
        assert [(e.name, e.num_embeddings) for e in entries] == [("ann", 3), ("bob", 1)]
        assert entries[0].sources == ["a1.wav", "a2.wav", "a3.wav"] and entries[1].sources == []
        np.testing.assert_array_equal(store.embeddings("ann"), np.eye(4)[:3].astype(np.float32))
        assert store.embed_dim == 4 and store.model_path == "m" and store.model_fingerprint == FP
        assert store.remove("ann") == 3
        assert [e.name for e in store.speakers()] == ["bob"]
        with pytest.raises(StoreError, match="no speaker 'ann'.*bob"):
            store.remove("ann")
        with pytest.raises(StoreError, match="no speaker 'ann'"):
            store.embeddings("ann")


def test_a_legacy_fingerprint_is_rewritten_in_one_transaction(pg_url):
    _store(pg_url).close()  # recorded FP, as a release that hashed its version in would have
    with pytest.raises(StoreError, match="another model"):
        open_store(pg_url, model_fingerprint=OTHER_FP, legacy_fingerprints=["c" * 64])
    with open_store(pg_url, model_fingerprint=FP) as store:
        assert store.model_fingerprint == FP  # unchanged by the refused open
    with open_store(pg_url, model_fingerprint=OTHER_FP, legacy_fingerprints=[FP]) as store:
        assert store.model_fingerprint == OTHER_FP
    with open_store(pg_url) as store:
        assert store.model_fingerprint == OTHER_FP  # rewritten in the database


def test_schema_has_the_vector_column_and_hnsw_index(pg_url):
    _store(pg_url, dim=8).close()
    import psycopg

    with psycopg.connect(pg_url) as conn:
        (column_type,) = conn.execute(
            "SELECT format_type(atttypid, atttypmod) FROM pg_attribute "
            "WHERE attrelid = 'embeddings'::regclass AND attname = 'embedding'"
        ).fetchone()
        indexes = [row[0] for row in conn.execute("SELECT indexdef FROM pg_indexes")]
        meta = dict(conn.execute("SELECT key, value FROM meta").fetchall())
    assert column_type == "vector(8)"
    assert any("USING hnsw (embedding vector_cosine_ops)" in d for d in indexes), indexes
    assert meta["model_fingerprint"] == FP and meta["embed_dim"] == "8" and meta["created_at"]


def test_scores_equal_the_sqlite_store(pg_url, tmp_path):
    """The same enrollments into both stores: the same means, ranking and scores."""
    rng = np.random.default_rng(0)
    dim = 192  # the shipped model's
    base = rng.normal(size=dim)
    enrollments = {
        # Different lengths and shared directions, so that normalising before averaging matters.
        "ann": rng.normal(size=(3, dim)) * np.array([[1.0], [5.0], [0.2]]),
        "Bob": rng.normal(size=(2, dim)) + base,
        "cid": rng.normal(size=(5, dim)) + base,
        "dee": rng.normal(size=(1, dim)) * 100,
        "zero_mean": np.stack([base, -base]),  # mean 0: score 0 in both (tied with "zero_two")
        "zero_two": np.stack([2 * base, -2 * base]),
        "émile": rng.normal(size=(4, dim)),
    }
    sqlite = EnrollmentStore.open(
        tmp_path / "s.db", model_fingerprint=FP, embed_dim=dim, create=True
    )
    pg = _store(pg_url, dim=dim)
    for name, embeddings in enrollments.items():
        for store in (sqlite, pg):
            store.enroll(name, embeddings, model_fingerprint=FP)
    names_sqlite, means_sqlite = sqlite.speaker_means()
    names_pg, means_pg = pg.speaker_means()
    assert names_pg == names_sqlite == sorted(enrollments)  # byte order: "Bob" < "ann" < "émile"
    np.testing.assert_allclose(means_pg, means_sqlite, atol=1e-6)
    assert [(e.name, e.num_embeddings) for e in pg.speakers()] == [
        (e.name, e.num_embeddings) for e in sqlite.speakers()
    ]
    queries = [enrollments["cid"][0] + 0.1 * rng.normal(size=dim), -base, rng.normal(size=dim)]
    for query in [*queries, np.zeros(dim)]:
        for top_k in (1, 3, len(enrollments)):
            a = sqlite.identify(query, threshold=0.2, model_fingerprint=FP, top_k=top_k)
            b = pg.identify(query, threshold=0.2, model_fingerprint=FP, top_k=top_k)
            assert [n for n, _ in b.candidates] == [n for n, _ in a.candidates]
            np.testing.assert_allclose(
                [s for _, s in b.candidates], [s for _, s in a.candidates], atol=1e-5
            )
            assert (b.speaker, b.threshold) == (a.speaker, a.threshold)
            assert b.score == pytest.approx(a.score, abs=1e-5)
    sqlite.close()
    pg.close()


def test_nearest_utterances(pg_url):
    """Exact on a small table, and still right when the planner must use the HNSW index."""
    rng = np.random.default_rng(1)
    vectors = rng.normal(size=(20, 8))
    with _store(pg_url, dim=8) as store:
        for i, v in enumerate(vectors):
            store.enroll(f"s{i % 4}", v, sources=[f"f{i}.wav"], model_fingerprint=FP)
        query = vectors[7] + 0.01 * rng.normal(size=8)
        found = store.nearest_utterances(query, model_fingerprint=FP, k=3)
    no_seqscan = f"{pg_url}&options=-c%20enable_seqscan%3Doff"
    with open_store(no_seqscan) as store:
        assert store.nearest_utterances(query, model_fingerprint=FP, k=3) == found
        plan = "\n".join(
            row[0]
            for row in store._conn.execute(
                "EXPLAIN SELECT id FROM embeddings ORDER BY embedding <=> %s::vector LIMIT 3",
                ("[" + ",".join(map(str, query)) + "]",),
            )
        )
    assert "embeddings_hnsw" in plan
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    cosines = unit @ (query / np.linalg.norm(query))
    best = np.argsort(-cosines)[:3]
    assert [source for _, source, _ in found] == [f"f{i}.wav" for i in best]
    assert [name for name, _, _ in found] == [f"s{i % 4}" for i in best]
    np.testing.assert_allclose([s for _, _, s in found], cosines[best], atol=1e-5)


def test_errors_match_the_sqlite_store(pg_url, tmp_path):
    """Another model, a wrong size, NaN, bad sources, empty names: the SQLite store's messages."""
    sqlite = EnrollmentStore.open(
        tmp_path / "s.db", model_fingerprint=FP, embed_dim=4, model_path="m", create=True
    )
    _store(pg_url).close()
    pg = open_store(pg_url)
    calls = [
        lambda s: s.enroll("ann", np.ones(4), model_fingerprint=OTHER_FP),
        lambda s: s.identify(np.ones(4), threshold=0.5, model_fingerprint=OTHER_FP),
        lambda s: s.enroll("ann", np.ones(5), model_fingerprint=FP),
        lambda s: s.enroll("ann", np.full(4, np.nan), model_fingerprint=FP),
        lambda s: s.enroll("ann", np.ones((2, 4)), sources=["x"], model_fingerprint=FP),
        lambda s: s.enroll("  ", np.ones(4), model_fingerprint=FP),
        lambda s: s.identify(np.ones(4), threshold=0.5, model_fingerprint=FP),  # no speakers
        lambda s: s.remove("nobody"),
        lambda s: s.identify(np.ones(3), threshold=0.5, model_fingerprint=FP),
    ]
    for call in calls:
        messages = []
        for store in (sqlite, pg):
            with pytest.raises(StoreError) as error:
                call(store)
            messages.append(str(error.value).replace(str(store.path), "STORE"))
        assert messages[0] == messages[1]
    with pytest.raises(StoreError, match="another model") as error:
        open_store(pg_url, model_fingerprint=OTHER_FP)
    assert pg.url in str(error.value) and "store's model (m)" in str(error.value)
    with pytest.raises(StoreError, match="holds 4-dimensional embeddings, not 8-dimensional"):
        open_store(pg_url, embed_dim=8)
    pg.enroll("ann", np.ones(4), model_fingerprint=FP)
    assert pg.speakers()[0].num_embeddings == 1  # none of the failures wrote anything
    sqlite.close()
    pg.close()


def test_a_failed_enroll_changes_nothing(pg_url):
    with _store(pg_url) as store:
        store.enroll("ann", np.ones(4), model_fingerprint=FP)
    import psycopg

    # The second embedding's insert fails inside the transaction, after the first went in.
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(
            "CREATE FUNCTION refuse_bad() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
            "IF NEW.source = 'bad' THEN RAISE EXCEPTION 'refused'; END IF; RETURN NEW; END $$"
        )
        conn.execute(
            "CREATE TRIGGER no_bad BEFORE INSERT ON embeddings FOR EACH ROW "
            "EXECUTE FUNCTION refuse_bad()"
        )
    with open_store(pg_url, model_fingerprint=FP) as store:
        with pytest.raises(psycopg.Error, match="refused"):
            store.enroll("cid", np.ones((2, 4)), sources=["good", "bad"], model_fingerprint=FP)
        with pytest.raises(psycopg.Error, match="refused"):
            store.enroll("ann", np.ones((2, 4)), sources=["good", "bad"], model_fingerprint=FP)
        assert [(e.name, e.num_embeddings) for e in store.speakers()] == [("ann", 1)]
        store.enroll("cid", np.ones(4), sources=["good"], model_fingerprint=FP)  # still writable
        assert [e.name for e in store.speakers()] == ["ann", "cid"]


def test_not_a_store_newer_schema_and_missing_extension(pg_server, pg_url):
    import psycopg

    with pytest.raises(StoreError, match="does not exist"):
        open_store(pg_url, model_fingerprint=FP)
    assert not store_exists(pg_url)
    with pytest.raises(StoreError, match="cannot connect.*nosuchdb"):
        open_store(pg_server.url("nosuchdb"))
    # A database whose meta table belongs to something else.
    other = pg_server.new_database()
    with psycopg.connect(other, autocommit=True) as conn:
        conn.execute("CREATE TABLE meta (x int)")
    with pytest.raises(StoreError, match="not a readable enrollment store"):
        open_store(other, model_fingerprint=FP, embed_dim=4, create=True)
    with psycopg.connect(other, autocommit=True) as conn:
        conn.execute("DROP TABLE meta")
        conn.execute("CREATE TABLE meta (key text, value text)")
    with pytest.raises(StoreError, match="not an enrollment store"):
        open_store(other)

    _store(pg_url).close()
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute("UPDATE meta SET value = '99' WHERE key = 'schema_version'")
    with pytest.raises(StoreError, match="newer"):
        open_store(pg_url)

    # A role that may not create the (untrusted) extension: the store says what to do.
    fresh = pg_server.new_database()
    with pg_server.admin() as conn:
        conn.execute("CREATE ROLE plain LOGIN")
    plain = fresh.replace(f"{SUPERUSER}@", "plain@")
    with pytest.raises(StoreError, match="CREATE EXTENSION vector failed.*install pgvector"):
        open_store(plain, model_fingerprint=FP, embed_dim=4, create=True)
    assert not store_exists(fresh)  # nothing half-made


def test_lost_server_is_a_store_error(pg_server, pg_url):
    from psycopg.conninfo import conninfo_to_dict

    store = _store(pg_url)
    with pg_server.admin() as conn:
        conn.execute(
            "SELECT pg_terminate_backend(pid, 10000) FROM pg_stat_activity "
            "WHERE datname = %s AND pid <> pg_backend_pid()",
            (conninfo_to_dict(pg_url)["dbname"],),
        )
    with pytest.raises(StoreUnavailableError, match="enrollment store postgresql://"):
        store.speakers()
    store.close()


def test_a_pool_replaces_the_connections_a_server_dropped(pg_server, pg_url, tmp_path):
    from psycopg.conninfo import conninfo_to_dict

    _store(pg_url).close()
    with PgStorePool(pg_url, max_size=2, timeout_s=2) as pool:
        with pool.open(model_fingerprint=FP) as store:
            store.enroll("ann", np.ones(4), model_fingerprint=FP)
            backend = store._conn.info.backend_pid
        with pg_server.admin() as conn:  # as a restart does to every open connection
            conn.execute(
                "SELECT pg_terminate_backend(pid, 10000) FROM pg_stat_activity WHERE datname = %s",
                (conninfo_to_dict(pg_url)["dbname"],),
            )
        with pool.open(model_fingerprint=FP) as store:  # checked, dropped, replaced
            assert store._conn.info.backend_pid != backend
            assert [e.name for e in store.speakers()] == ["ann"]
        with pytest.raises(StoreError, match="another model"):
            pool.open(model_fingerprint=OTHER_FP)  # the open checks, as PgEnrollmentStore.open's
    with pytest.raises(StoreUnavailableError, match="no working connection"):
        pool.open(model_fingerprint=FP)  # closed
    with pytest.raises(StoreUnavailableError, match="cannot connect"):
        PgStorePool(f"postgresql://u@/db?host={tmp_path}")  # no server: says why at once


# -- the CLI ------------------------------------------------------------------------------------


def test_cli_over_postgresql(pg_url, tiny_bundle, demo_root):
    from speakerprint.cli.main import app

    runner = CliRunner()
    folders = sorted(p for p in demo_root.iterdir() if p.is_dir())[:2]
    files = {f.name: [str(p) for p in sorted(f.glob("*.opus"))] for f in folders}
    (ann, ann_files), (bob, bob_files) = files.items()
    model = ["--model", str(tiny_bundle)]
    result = runner.invoke(app, ["enroll", pg_url, ann, *ann_files[:2], *model])
    assert result.exit_code == 0, result.output
    assert f"enrolled {ann}: 2 new recording(s), 2 in all" in result.output
    # Later commands find the model the store was made with.
    result = runner.invoke(app, ["enroll", pg_url, bob, *bob_files[:2]])
    assert result.exit_code == 0, result.output
    result = runner.invoke(app, ["speakers", pg_url])
    assert result.exit_code == 0, result.output
    assert result.output.splitlines()[:2] == [f"{ann}\t2", f"{bob}\t2"]

    result = runner.invoke(
        app, ["identify", pg_url, ann_files[3], "--json", "--threshold", "-1", "--top-k", "2"]
    )
    assert result.exit_code == 0, result.output
    answer = json.loads(result.stdout)
    assert answer["known"] and {c["name"] for c in answer["candidates"]} == {ann, bob}
    with open_store(pg_url) as store:
        from speakerprint.inference import SpeakerEncoder

        enc = SpeakerEncoder.from_pretrained(tiny_bundle)
        expected = store.identify(
            enc.embed(ann_files[3]), threshold=-1, model_fingerprint=enc.fingerprint, top_k=2
        )
    assert answer["candidates"] == expected.to_dict()["candidates"]

    result = runner.invoke(app, ["remove", pg_url, ann])
    assert result.exit_code == 0 and f"removed {ann} (2 recording(s))" in result.output
    result = runner.invoke(app, ["remove", pg_url, ann])
    assert result.exit_code == 2 and f"no speaker '{ann}'" in result.output
    bad = pg_url.replace("postgres@", "postgres:s3cret@").replace("store_", "nosuch_")
    result = runner.invoke(app, ["speakers", bad])
    assert result.exit_code == 2 and "cannot connect" in result.output
    assert "s3cret" not in result.output


def test_serve_over_postgresql(pg_url, tiny_bundle, demo_root):
    pytest.importorskip("httpx")
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from speakerprint.serve import create_app

    def upload(path: str):
        return ("audio", (os.path.basename(path), Path(path).read_bytes(), "audio/ogg"))

    folder = sorted(p for p in demo_root.iterdir() if p.is_dir())[0]
    files = [str(p) for p in sorted(folder.glob("*.opus"))]
    url = pg_url.replace("postgres@", "postgres:s3cret@")  # trust login: the password is unused
    client = TestClient(create_app(model=tiny_bundle, store=url))
    health = client.get("/health").json()
    assert health["store"] == redact_url(url) and "s3cret" not in json.dumps(health)
    r = client.post("/enroll", data={"name": folder.name}, files=[upload(f) for f in files[:2]])
    assert r.status_code == 200 and r.json()["total"] == 2, r.text
    r = client.post("/identify", files=[upload(files[3])], data={"threshold": "-1"})
    assert r.status_code == 200 and r.json()["decision"] == folder.name, r.text
    with open_store(pg_url) as store:
        assert [(e.name, e.num_embeddings) for e in store.speakers()] == [(folder.name, 2)]
    r = client.delete(f"/speakers/{folder.name}")
    assert r.status_code == 200 and r.json()["num_embeddings"] == 2, r.text
    assert client.get("/speakers").json()["count"] == 0


@pytest.mark.parametrize(
    ("version", "refused"),
    [
        ("0.8.0", False),
        ("0.7.0", False),
        ("0.10.1", False),
        ("1.0", False),
        ("0.6.2", True),
        ("0.5", True),
        (None, True),
    ],
)
def test_an_old_or_missing_pgvector_is_named(version, refused):
    """Checked on every open: a server with pgvector 0.6 (Ubuntu 24.04's) would fail only at
    the first identify, with a 500 naming l2_normalize."""
    from speakerprint.inference.store.postgres import check_pgvector_version

    if refused:
        with pytest.raises(StoreError, match="pgvector|vector extension") as e:
            check_pgvector_version(version, "postgresql://db")
        assert "0.7 or newer" in str(e.value)
    else:
        check_pgvector_version(version, "postgresql://db")
