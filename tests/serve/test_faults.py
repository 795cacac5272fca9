"""The service and the CLI killed mid-write, and PostgreSQL restarted under load: real processes.

Each test streams ``/enroll`` requests (or runs ``speakerprint enroll``) and kills something at
random points: the server process with SIGKILL (its whole process group, workers too), the CLI
with SIGKILL, or the PostgreSQL server with ``pg_ctl stop -m immediate``. One kill of each
process is made at a known point instead: inside an enrollment's transaction, after its first
embedding row and before its second (a trace hook on the SQLite connection pauses there and says
so). Then the store is opened with the normal API, no repair step, and checked:

- every enrollment answered 200 (or a CLI run that exited 0) is there, with all its embeddings,
  each equal to the model's embedding of its file;
- no enrollment is half there: one of k files added exactly k embeddings or none;
- nothing is there that was never sent; ``PRAGMA integrity_check`` says ``ok``.

The kill points are random (the seed is in every failure message; SPEAKERPRINT_FAULT_SEED
repeats a run); SPEAKERPRINT_FAULT_KILLS sets the number of random kills per test for a longer
soak (default 3). The outcomes are tabled in docs/reliability.md.
"""

from __future__ import annotations

import itertools
import os
import random
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

httpx = pytest.importorskip("httpx")
pytest.importorskip("uvicorn")
pytest.importorskip("fastapi")

from speakerprint.inference import SpeakerEncoder  # noqa: E402
from speakerprint.inference.store import open_store  # noqa: E402
from tests.postgres import PostgresServer, postgres_bindir, skip_reason  # noqa: E402

KILLS = int(os.environ.get("SPEAKERPRINT_FAULT_KILLS", "3"))
SEED = int(os.environ.get("SPEAKERPRINT_FAULT_SEED", str(random.SystemRandom().randrange(10**6))))
SPEAKERS = ["ann", "bob", "cid"]
PAUSED = "PAUSED-IN-TRANSACTION"
# Run before the CLI: once SPEAKERPRINT_FAULT_PAUSE is set, the first SQLite connection to
# write a second embedding row of one enrollment prints PAUSED and sleeps inside the transaction.
PAUSE_HOOK = f"""
import os, sqlite3, sys, threading, time
_connect, _paused = sqlite3.connect, threading.Event()
def connect(*args, **kwargs):
    conn, rows = _connect(*args, **kwargs), []
    def trace(sql):
        if sql.startswith("INSERT INTO embeddings"):
            rows.append(sql)
            if len(rows) == 2 and os.environ.get("SPEAKERPRINT_FAULT_PAUSE") and not _paused.is_set():
                _paused.set()
                print("{PAUSED}", sql[:200], file=sys.stderr, flush=True)
                time.sleep(600)
    conn.set_trace_callback(trace)
    return conn
sqlite3.connect = connect
from speakerprint.cli.main import main
main()
"""


@dataclass
class Enrollment:
    """One /enroll request (or CLI run) and how it ended: ``status`` 200 and ``error`` None for
    a success, the HTTP status of a refusal, or ``status`` None and the transport error."""

    id: int
    name: str
    files: list[Path]
    status: int | None = None
    body: dict | None = None
    error: str | None = None
    seconds: float = 0.0
    finished: float = 0.0  # time.monotonic() when the answer (or error) came
    retry_after: str | None = None

    def source(self, j: int) -> str:
        return f"r{self.id:04d}-{j}.opus"


@pytest.fixture(scope="module")
def recordings(demo_root) -> list[Path]:
    return sorted(demo_root.glob("*/*.opus"))[:12]


@pytest.fixture(scope="module")
def reference(tiny_bundle, recordings) -> tuple[str, dict[str, np.ndarray]]:
    """The model's fingerprint and its embedding of each recording (by file name)."""
    encoder = SpeakerEncoder.from_pretrained(tiny_bundle)
    return encoder.fingerprint, {p.name: encoder.embed(p) for p in recordings}


# -- processes ------------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Server:
    """``speakerprint serve`` as a process group of its own, so that one SIGKILL takes its
    workers too, as an OOM kill or a lost container would."""

    def __init__(self, log: Path, args: list[str], *, pause: bool = False) -> None:
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log
        launcher = ["-c", PAUSE_HOOK] if pause else ["-m", "speakerprint"]
        command = [sys.executable, *launcher, "serve", *args, "--port", str(self.port)]
        env = {**os.environ, "SPEAKERPRINT_FAULT_PAUSE": "1" if pause else ""}
        with open(log, "w") as out:
            self.process = subprocess.Popen(
                [*command, "--log-level", "warning"],
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,
            )
        deadline = time.monotonic() + 90
        while True:
            assert self.process.poll() is None, f"the server exited:\n{self.log_tail()}"
            assert time.monotonic() < deadline, f"the server did not start:\n{self.log_tail()}"
            try:
                if httpx.get(f"{self.url}/health", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.05)

    def log_tail(self) -> str:
        return self.log.read_text(errors="replace")[-3000:]

    def kill(self) -> None:
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(30)


def _wait_for_pause(process: subprocess.Popen, log: Path, timeout_s: float = 60) -> str:
    """The PAUSED line of ``log`` once the process has printed it."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for line in log.read_text(errors="replace").splitlines():
            if line.startswith(PAUSED):
                return line
        assert process.poll() is None, log.read_text()[-3000:]
        time.sleep(0.02)
    raise AssertionError(f"no pause inside a transaction: {log.read_text()[-3000:]}")


class Stream:
    """Client threads that send /enroll requests one after another until stopped (or until the
    server is gone); every request and its outcome lands in ``sent``."""

    def __init__(self, recordings: list[Path], ids: itertools.count, sent: list[Enrollment]):
        self.recordings = recordings
        self.data = {p: p.read_bytes() for p in recordings}
        self.ids = ids
        self.sent = sent
        self.stop = threading.Event()
        self.threads: list[threading.Thread] = []

    def start(self, url: str, clients: int, *, until_gone: bool = True) -> None:
        self.stop.clear()
        self.threads = [
            threading.Thread(target=self._client, args=(url, until_gone), daemon=True)
            for _ in range(clients)
        ]
        for thread in self.threads:
            thread.start()

    def join(self) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(60)
            assert not thread.is_alive(), "a client hung"

    def _client(self, url: str, until_gone: bool) -> None:
        with httpx.Client(base_url=url, timeout=60) as client:
            while not self.stop.is_set():
                enrollment = self._next()
                self.sent.append(enrollment)
                if not self._post(client, enrollment) and until_gone:
                    return

    def _next(self) -> Enrollment:
        i = next(self.ids)
        files = [self.recordings[(5 * i + j) % len(self.recordings)] for j in range(1 + i % 3)]
        return Enrollment(i, SPEAKERS[i % len(SPEAKERS)], files)

    def _post(self, client, enrollment: Enrollment) -> bool:
        """Send one request; False when it got no answer."""
        uploads = [
            ("audio", (enrollment.source(j), self.data[path], "audio/ogg"))
            for j, path in enumerate(enrollment.files)
        ]
        started = time.monotonic()
        try:
            response = client.post("/enroll", data={"name": enrollment.name}, files=uploads)
        except httpx.TransportError as e:
            enrollment.error = type(e).__name__
            return False
        finally:
            enrollment.finished = time.monotonic()
            enrollment.seconds = enrollment.finished - started
        try:
            enrollment.body = response.json()
        except ValueError:
            enrollment.body = {"not_json": response.text[:500]}
        enrollment.status = response.status_code
        enrollment.retry_after = response.headers.get("retry-after")
        return True


# -- the check ------------------------------------------------------------------------------------


def check_store(store, sent: list[Enrollment], reference, seed: int) -> dict[int, int]:
    """Assert the module docstring's three properties of an open store; returns the rows found
    per enrollment id."""
    fingerprint, embeddings = reference
    by_id = {e.id: e for e in sent}
    rows: dict[int, list[int]] = defaultdict(list)
    for entry in store.speakers():
        vectors = store.embeddings(entry.name)  # in insertion order, as the sources
        assert len(entry.sources) == len(vectors) == entry.num_embeddings
        for source, vector in zip(entry.sources, vectors):
            found = re.fullmatch(r"r(\d+)-(\d+)\.opus", Path(source).name)
            assert found, f"seed {seed}: an embedding nobody sent: {source}"
            enrollment = by_id[int(found[1])]
            j = int(found[2])
            assert entry.name == enrollment.name, f"seed {seed}: {source} under {entry.name}"
            expected = embeddings[enrollment.files[j].name]
            cosine = vector @ expected / np.linalg.norm(vector) / np.linalg.norm(expected)
            assert cosine > 0.9999, f"seed {seed}: {source} holds another embedding ({cosine})"
            rows[enrollment.id].append(j)
    for i, found in rows.items():
        k = len(by_id[i].files)
        assert sorted(found) == list(range(k)), (
            f"seed {seed}: enrollment {i} of {k} file(s) is half there: rows {sorted(found)}"
        )
    lost = [e.id for e in sent if e.status == 200 and e.id not in rows]
    assert not lost, f"seed {seed}: enrollments answered 200 but missing: {lost}"
    assert store.model_fingerprint == fingerprint
    return {i: len(found) for i, found in rows.items()}


def check_sqlite(db: Path, sent: list[Enrollment], reference, seed: int) -> dict[int, int]:
    """Open the file with the normal API (whatever a kill left), check it, then SQLite's own
    integrity check."""
    with open_store(db, model_fingerprint=reference[0]) as store:
        rows = check_store(store, sent, reference, seed)
    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
    return rows


def _paused_id(line: str) -> int:
    return int(re.search(r"'r(\d+)-\d+\.opus'", line)[1])


# -- the tests ------------------------------------------------------------------------------------


def test_serve_killed_mid_enrollment_loses_no_answered_enrollment(
    tmp_path, tiny_bundle, recordings, reference
):
    """SIGKILL of the server under three clients' stream of /enroll, restarted on the same file
    each time: once paused inside a transaction, then at random points."""
    rng = random.Random(SEED)
    db = tmp_path / "speakers.db"
    sent: list[Enrollment] = []
    stream = Stream(recordings, itertools.count(), sent)
    for kill in range(1 + KILLS):
        paused = kill == 0
        log = tmp_path / f"serve-{kill}.log"
        server = Server(log, ["--model", str(tiny_bundle), "--db", str(db)], pause=paused)
        stream.start(server.url, clients=3)
        if paused:
            line = _wait_for_pause(server.process, log)
        else:
            time.sleep(rng.uniform(0.2, 1.5))
        server.kill()
        stream.join()
        rows = check_sqlite(db, sent, reference, SEED)
        if paused:
            assert _paused_id(line) not in rows, "the enrollment killed mid-transaction is there"
    answered = [e for e in sent if e.status is not None]
    assert all(e.status == 200 for e in answered), [e.body for e in answered if e.status != 200]
    # In flight when the server died (not those sent to it once dead: ConnectError).
    cut_off = [e for e in sent if e.error not in (None, "ConnectError")]
    assert len(answered) >= KILLS and len(cut_off) >= 1 + KILLS, (SEED, len(answered), cut_off)


def test_cli_enroll_killed_mid_write_leaves_all_or_nothing(
    tmp_path, tiny_bundle, recordings, reference
):
    """``speakerprint enroll`` killed once inside its transaction, then at random delays around
    the end of its run (where it writes); exit 0 means everything is there."""
    rng = random.Random(SEED)
    db = tmp_path / "speakers.db"
    links = tmp_path / "uploads"  # the CLI records the path: name each file as the server would
    links.mkdir()
    sent: list[Enrollment] = []

    def run(i: int, pause: bool = False) -> tuple[Enrollment, subprocess.Popen, Path]:
        files = [recordings[(3 * i + j) % len(recordings)] for j in range(3)]
        enrollment = Enrollment(i, SPEAKERS[i % len(SPEAKERS)], files)
        paths = []
        for j, path in enumerate(files):
            (links / enrollment.source(j)).symlink_to(path)
            paths.append(str(links / enrollment.source(j)))
        launcher = ["-c", PAUSE_HOOK] if pause else ["-m", "speakerprint"]
        log = tmp_path / f"enroll-{i}.log"
        with open(log, "w") as out:
            process = subprocess.Popen(
                [sys.executable, *launcher, "enroll", str(db), enrollment.name, *paths,
                 "--model", str(tiny_bundle)],
                stdout=out, stderr=subprocess.STDOUT,
                env={**os.environ, "SPEAKERPRINT_FAULT_PAUSE": "1" if pause else ""},
            )  # fmt: skip
        sent.append(enrollment)
        return enrollment, process, log

    started = time.monotonic()
    enrollment, process, log = run(0)
    assert process.wait(120) == 0, log.read_text()
    full_run_s = time.monotonic() - started
    enrollment.status = 200
    check_sqlite(db, sent, reference, SEED)

    enrollment, process, log = run(1, pause=True)
    _wait_for_pause(process, log)
    process.kill()
    process.wait(30)
    assert 1 not in check_sqlite(db, sent, reference, SEED)

    outcomes = []
    for i in range(2, 2 + KILLS):
        enrollment, process, log = run(i)
        time.sleep(rng.uniform(0.5, 1.0) * full_run_s)
        process.send_signal(signal.SIGKILL)
        code = process.wait(30)
        enrollment.status = 200 if code == 0 else None
        rows = check_sqlite(db, sent, reference, SEED)
        outcomes.append((code, rows.get(i, 0)))
    assert all(rows in (0, 3) for _, rows in outcomes)
    assert any(code == -signal.SIGKILL for code, _ in outcomes), (SEED, outcomes)


def test_workers_share_one_sqlite_store_and_die_together(
    tmp_path, tiny_bundle, recordings, reference
):
    """``serve --workers 2``: two processes write the same WAL file under four clients without a
    lock error, and a SIGKILL of both mid-stream loses no answered enrollment."""
    db = tmp_path / "speakers.db"
    sent: list[Enrollment] = []
    stream = Stream(recordings, itertools.count(), sent)
    server = Server(
        tmp_path / "serve.log", ["--model", str(tiny_bundle), "--db", str(db), "--workers", "2"]
    )
    try:
        group = os.getpgid(server.process.pid)
        members = [
            pid
            for pid in map(int, filter(str.isdigit, os.listdir("/proc")))
            if _process_group(pid) == group
        ]
        assert len(members) >= 3, members  # the supervisor and two workers
        stream.start(server.url, clients=4)
        deadline = time.monotonic() + 60
        while len([e for e in sent if e.status == 200]) < 8:
            assert time.monotonic() < deadline, server.log_tail()
            time.sleep(0.05)
        speakers = httpx.get(f"{server.url}/speakers", timeout=10)  # a reader meanwhile
        assert speakers.status_code == 200 and speakers.json()["count"] >= 1
    finally:
        server.kill()
        stream.join()
    answered = [e for e in sent if e.status is not None]
    assert all(e.status == 200 for e in answered), [e.body for e in answered if e.status != 200]
    check_sqlite(db, sent, reference, SEED)


def _process_group(pid: int) -> int | None:
    try:
        return os.getpgid(pid)
    except ProcessLookupError:
        return None


def test_postgres_restarted_under_load(tmp_path, tiny_bundle, recordings, reference):
    """``pg_ctl stop -m immediate`` and start, under three clients' stream of /enroll: the
    service answers 503 ``store_unavailable`` meanwhile (JSON, within the pool's timeout, never
    a hang or a dead server), reconnects by itself, and loses no answered enrollment.

    The first outage outlasts the pool's 5 s wait for a connection, so requests are refused;
    the later ones are short, and requests may simply wait them out.
    """
    bindir = postgres_bindir()
    reason = skip_reason(bindir)
    if reason is not None:
        pytest.skip(reason)
    rng = random.Random(SEED)
    pg = PostgresServer(bindir)
    pg.init()
    pg.start()
    sent: list[Enrollment] = []
    stream = Stream(recordings, itertools.count(), sent)
    try:
        url = pg.new_database()
        server = Server(tmp_path / "serve.log", ["--model", str(tiny_bundle), "--db", url])
        try:
            stream.start(server.url, clients=3, until_gone=False)
            for outage_s in [6.0] + [1.0] * max(1, KILLS // 2):
                time.sleep(rng.uniform(0.3, 1.0))
                pg.stop("immediate")
                time.sleep(outage_s)
                pg.start()
                back = time.monotonic()
                deadline = back + 20
                while not any(e.status == 200 and e.finished > back for e in sent[-6:]):
                    assert time.monotonic() < deadline, f"no reconnection:\n{server.log_tail()}"
                    time.sleep(0.05)
            stream.join()
            assert server.process.poll() is None, server.log_tail()
        finally:
            server.kill()
        refused = [e for e in sent if e.status != 200]
        assert refused, "no request felt the outages"
        for e in refused:
            assert e.status == 503 and e.body["error"] == "store_unavailable", (e.status, e.body)
            assert e.retry_after is not None and int(e.retry_after) > 0
            assert e.body["detail"].startswith("enrollment store postgresql://"), e.body
        assert max(e.seconds for e in sent) < 15, "a request hung"
        with open_store(url, model_fingerprint=reference[0]) as store:
            rows = check_store(store, sent, reference, SEED)
        assert len(rows) >= len([e for e in sent if e.status == 200]) > 0
    finally:
        pg.remove()
