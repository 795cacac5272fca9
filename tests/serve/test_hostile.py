"""The HTTP service against hostile clients, on a real uvicorn server on 127.0.0.1 (issue 25).

Each case checks its status code and JSON error, and that another client is served meanwhile.
One server for the module (the tiny fixture model, an SQLite store, an API key and small limits,
a body time limit of one second so the slow-body case stays short). docs/reliability.md lists
the cases ("The HTTP service: hostile clients").
"""

import hmac
import io
import json
import logging
import os
import socket
import struct
import tempfile
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

httpx = pytest.importorskip("httpx")
uvicorn = pytest.importorskip("uvicorn")

from tests.serve.live import live_server  # noqa: E402

pytest.importorskip("fastapi")

from speakerprint.inference import SpeakerEncoder  # noqa: E402
from speakerprint.inference.store import (  # noqa: E402
    MAX_NAME_CHARS,
    EnrollmentStore,
    StoreError,
    check_speaker_name,
)
from speakerprint.serve import create_app  # noqa: E402

KEY = "hostile-test-key"
MAX_UPLOAD_MB = 0.25
MAX_DURATION_S = 8.0
BODY_TIMEOUT_S = 1.0
BOUNDARY = "hostileboundary"
FORM = {"Content-Type": f"multipart/form-data; boundary={BOUNDARY}"}
# What a bounded decode may add to the server's memory; decoding the hour-long bombs whole
# needs hundreds of MB (an hour of 48 kHz float32 is 691 MB).
MAX_GROWTH_MB = 100


class _Records(logging.Handler):
    def __init__(self):
        super().__init__()
        self.messages = []

    def emit(self, record):
        self.messages.append(record.getMessage())


@pytest.fixture(scope="module")
def speech(shared_data):
    """Two short speechocean762 recordings of one speaker (Ogg/Opus bytes, file name)."""
    folder = next(p for p in sorted((shared_data / "speechocean762" / "train").iterdir()))
    files = [f for f in sorted(folder.glob("*.opus")) if sf.info(str(f)).duration < MAX_DURATION_S]
    if len(files) < 2:
        pytest.skip("no speechocean762 speaker with two short recordings")
    return [(f.read_bytes(), f.name) for f in files[:2]]


@pytest.fixture(scope="module")
def server(tmp_path_factory, tiny_bundle):
    """A live server in a background thread of this process (so that its memory is this
    process's); yields (base_url, store path, log records)."""
    db = tmp_path_factory.mktemp("hostile") / "speakers.db"
    app = create_app(
        model=SpeakerEncoder.from_pretrained(tiny_bundle),
        store=db,
        api_key=KEY,
        max_upload_mb=MAX_UPLOAD_MB,
        max_duration_s=MAX_DURATION_S,
        body_timeout_s=BODY_TIMEOUT_S,
    )
    records = _Records()
    names = ("uvicorn.access", "uvicorn.error", "speakerprint", "python_multipart")
    loggers = [logging.getLogger(n) for n in names]
    with live_server(app, log_level="info", lifespan="on") as (url, port):
        for logger in loggers:  # after uvicorn configured its loggers
            logger.addHandler(records)
        try:
            yield url, port, db, records
        finally:
            for logger in loggers:
                logger.removeHandler(records)


@pytest.fixture(scope="module")
def client(server):
    with httpx.Client(base_url=server[0], headers={"X-API-Key": KEY}, timeout=30) as c:
        yield c


def _served(client, speech) -> None:
    """Another client is served: /health and an /embed of real speech answer 200."""
    assert client.get("/health").status_code == 200
    data, name = speech[0]
    r = client.post("/embed", files=[("audio", (name, data, "audio/ogg"))])
    assert r.status_code == 200, r.text


def _error(r, status: int, code: str) -> dict:
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == "application/json"
    body = r.json()
    assert body["error"] == code, body
    return body


def _part(name: str, data: bytes, filename: bytes | None = None, headers: bytes = b"") -> bytes:
    disposition = f'Content-Disposition: form-data; name="{name}"'.encode()
    if filename is not None:
        disposition += b'; filename="' + filename + b'"'
    return f"--{BOUNDARY}\r\n".encode() + disposition + b"\r\n" + headers + b"\r\n" + data + b"\r\n"


def _form(*parts: bytes) -> bytes:
    return b"".join(parts) + f"--{BOUNDARY}--\r\n".encode()


class _PeakRss:
    """The process's peak resident memory over a block, sampled every few milliseconds (its
    ru_maxrss cannot say: an earlier test may have set the peak)."""

    def __enter__(self):
        statm = Path("/proc/self/statm")
        if not statm.exists():
            pytest.skip("needs /proc/self/statm (Linux)")
        self._page = os.sysconf("SC_PAGE_SIZE")
        self._stop = threading.Event()
        self.baseline = self.peak = self._rss()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _rss(self) -> int:
        return int(Path("/proc/self/statm").read_text().split()[1]) * self._page

    def _sample(self):
        while not self._stop.wait(0.002):
            self.peak = max(self.peak, self._rss())

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._rss())

    @property
    def growth_mb(self) -> float:
        return (self.peak - self.baseline) / 2**20


# -- 1. a body that trickles in ------------------------------------------------------------------


def _slow_body(port: int, results: list, stop: threading.Event) -> None:
    """POST /embed declaring 1000 bytes, then send one a second; collect what comes back until
    the server closes the connection."""
    sock = socket.create_connection(("127.0.0.1", port))
    sock.settimeout(15 * BODY_TIMEOUT_S)  # the test fails if the server never closes it
    head = (
        f"POST /embed HTTP/1.1\r\nHost: x\r\nX-API-Key: {KEY}\r\nContent-Length: 1000\r\n"
        f"Content-Type: multipart/form-data; boundary={BOUNDARY}\r\n\r\n"
    )
    sock.sendall(head.encode())

    def trickle():
        while not stop.wait(1.0):
            try:
                sock.send(b"-")
            except OSError:
                return

    writer = threading.Thread(target=trickle, daemon=True)
    writer.start()
    received, closed = b"", False
    try:
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                closed = True
                break
            received += chunk
    except ConnectionResetError:
        closed = True
    except TimeoutError:
        pass
    finally:
        stop.set()
        writer.join()
        sock.close()
    results.append((received, closed))


def test_a_trickling_body_is_cut_off_and_others_are_served(server, client, speech):
    port = server[1]
    stop = threading.Event()
    results = []
    attackers = [threading.Thread(target=_slow_body, args=(port, results, stop)) for _ in range(8)]
    for t in attackers:
        t.start()
    try:
        _served(client, speech)  # while the eight slow bodies are still arriving
    finally:
        for t in attackers:
            t.join(30)
        stop.set()
    assert len(results) == 8
    for received, closed in results:
        assert closed, "the server kept a slow body's connection open"
        head, _, body = received.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 408"), received[:200]
        assert b"connection: close" in head.lower()
        answer = json.loads(body)
        assert answer["error"] == "body_timeout" and "/embed" in answer["detail"]
    _served(client, speech)


# -- 2. multipart forms with thousands of parts or a huge part header ----------------------------


def test_forms_with_thousands_of_parts_are_refused(client, speech):
    fields = _form(*[_part("x", b"1") for _ in range(3000)])
    _error(client.post("/embed", content=fields, headers=FORM), 400, "invalid_form")
    files = _form(*[_part("audio", b"1", filename=b"a.wav") for _ in range(1500)])
    body = _error(client.post("/embed", content=files, headers=FORM), 400, "invalid_form")
    assert "files" in body["detail"]
    _served(client, speech)


def test_a_huge_part_header_is_refused(client, speech):
    header = b"X-Padding: " + b"a" * (1 << 20) + b"\r\n"
    data, name = speech[0]
    form = _form(_part("name", b"ann"), _part("audio", data, name.encode(), header))
    # Inside /enroll's body limit (20 uploads): the form parser refuses the header.
    _error(client.post("/enroll", content=form, headers=FORM), 400, "invalid_form")
    # Over /embed's body limit: refused from Content-Length before the body is read.
    _error(client.post("/embed", content=form, headers=FORM), 413, "upload_too_large")
    _served(client, speech)


# -- 3, 4. audio that decodes to far more than its header or its size says -----------------------


def _ogg_crc_table() -> list[int]:
    table = []
    for i in range(256):
        r = i << 24
        for _ in range(8):
            r = ((r << 1) ^ 0x04C11DB7) if r & 0x80000000 else r << 1
        table.append(r & 0xFFFFFFFF)
    return table


_OGG_CRC = _ogg_crc_table()


def _crc32_ogg(data: bytes) -> int:
    """Ogg's page checksum: CRC-32, polynomial 0x04C11DB7, not reflected, starting at 0."""
    crc = 0
    for byte in data:
        crc = ((crc << 8) & 0xFFFFFFFF) ^ _OGG_CRC[(crc >> 24) ^ byte]
    return crc


def _ogg_page(packets: list[bytes], granule: int, sequence: int, flags: int) -> bytes:
    lacing = bytes(b for p in packets for b in [255] * (len(p) // 255) + [len(p) % 255])
    header = struct.pack("<4sBBqIIIB", b"OggS", 0, flags, granule, 1, sequence, 0, len(lacing))
    page = header + lacing + b"".join(packets)
    return page[:22] + struct.pack("<I", _crc32_ogg(page)) + page[26:]


def _opus_silence(seconds: float, claimed_s: float | None = None) -> bytes:
    """Ogg Opus of ``seconds`` of silence in 2-byte packets (six empty 20 ms frames each, which
    the decoder fills), ~26 bytes a second; ``claimed_s`` caps the granule positions, so the
    stream states that length."""
    pages = [
        _ogg_page([b"OpusHead" + struct.pack("<BBHIhB", 1, 1, 312, 8000, 0, 0)], 0, 0, 2),
        _ogg_page([b"OpusTags" + struct.pack("<I", 0) + struct.pack("<I", 0)], 0, 1, 0),
    ]
    packet = bytes([(31 << 3) | 3, 6])  # CELT 20 ms, code 3: six frames of 0 bytes
    total, done = round(seconds / 0.12), 0
    while done < total:
        count = min(255, total - done)
        done += count
        granule = 312 + done * 5760
        if claimed_s is not None:
            granule = min(granule, 312 + round(claimed_s * 48000))
        flags = 4 if done == total else 0
        pages.append(_ogg_page([packet] * count, granule, len(pages), flags))
    return b"".join(pages)


def _flac_silence(seconds: float, state_length: bool) -> bytes:
    """FLAC of ``seconds`` of 8 kHz silence (~25 bytes a second); without ``state_length`` its
    STREAMINFO says "length unknown" (0 samples), as a streamed encoder writes it."""
    buf = io.BytesIO()
    with sf.SoundFile(buf, "w", 8000, 1, format="FLAC", subtype="PCM_16") as f:
        minute = np.zeros(8000 * 60, np.float32)
        for _ in range(round(seconds / 60)):
            f.write(minute)
    data = bytearray(buf.getvalue())
    if not state_length:  # the 36 low bits of STREAMINFO's bytes 10..17 count the samples
        (fields,) = struct.unpack(">Q", data[18:26])
        data[18:26] = struct.pack(">Q", fields >> 36 << 36)
    return bytes(data)


def _wav(sample_rate: int, seconds: float, stated_bytes: int | None = None) -> bytes:
    """16-bit mono WAV of noise whose data chunk states ``stated_bytes`` (default: the truth)."""
    rng = np.random.default_rng(0)
    pcm = (rng.standard_normal(round(seconds * sample_rate)) * 3000).astype("<i2").tobytes()
    fmt = struct.pack("<HHIIHH", 1, 1, sample_rate, 2 * sample_rate, 2, 16)
    size = len(pcm) if stated_bytes is None else stated_bytes
    chunks = b"fmt " + struct.pack("<I", 16) + fmt + b"data" + struct.pack("<I", size) + pcm
    return b"RIFF" + struct.pack("<I", 4 + len(chunks)) + b"WAVE" + chunks


@pytest.mark.parametrize(
    "make, filename",
    [
        (lambda: _opus_silence(3600, claimed_s=1.0), "states-1s.opus"),
        (lambda: _opus_silence(3600, claimed_s=1.0), "no-extension"),
        (lambda: _opus_silence(3600), "hour.opus"),
        (lambda: _flac_silence(3600, state_length=False), "unknown-length.flac"),
        (lambda: _flac_silence(3600, state_length=True), "hour.flac"),
        (lambda: _wav(1, 100_000), "one-hertz.wav"),  # 200 kB: 28 hours at 1 Hz
        (lambda: _wav(8000, 12, stated_bytes=0xFFFFFFFF), "unknown-size.wav"),
    ],
    ids=lambda value: value if isinstance(value, str) else "",
)
def test_audio_that_decodes_to_hours_is_refused_with_bounded_memory(client, speech, make, filename):
    data = make()
    assert len(data) < MAX_UPLOAD_MB * 2**20  # small files: inside the upload limit
    _served(client, speech)  # decoders loaded before the baseline
    with _PeakRss() as rss:
        r = client.post("/embed", files=[("audio", (filename, data, "application/octet-stream"))])
    body = _error(r, 413, "audio_too_long")
    assert body["field"] == "audio" and body["filename"] == filename
    assert f"over the limit of {MAX_DURATION_S:g} s" in body["detail"]
    assert rss.growth_mb < MAX_GROWTH_MB, f"the server grew by {rss.growth_mb:.0f} MB"
    _served(client, speech)


def test_a_wav_that_states_less_data_than_it_holds_decodes_what_it_states(client):
    # 12 s of samples, a data chunk stating 1 s: only the stated second is audio.
    r = client.post("/embed", files=[("audio", ("short.wav", _wav(8000, 12, 16000), "audio/wav"))])
    assert r.status_code == 200, r.text
    assert r.json()["duration_s"] == pytest.approx(1.0)


# -- 5. file names with path separators and control characters -----------------------------------


def test_hostile_file_names_stay_names(server, client, speech):
    url, _, db, records = server
    escaped = f"escaped-{uuid.uuid4().hex}.wav"
    outside = Path(tempfile.gettempdir()) / escaped
    names = [
        f"../{escaped}".encode(),
        f"../../../../../../{outside}".encode(),
        str(outside).encode(),
        b"a/b\\c.wav",
        b"nul\x00byte.wav",
        b"ctl\x01\x07\x1b[31m\x1f.wav",
        "bidi\u202egnp.wav".encode(),
    ]
    data, _ = speech[0]
    before = len(records.messages)
    for name in names:
        r = client.post("/embed", content=_form(_part("audio", data, name)), headers=FORM)
        assert r.status_code == 200, (name, r.text)
        answer = json.loads(r.text)  # valid JSON whatever the name held
        assert answer["filename"] == name.decode() and len(answer["embedding"]) > 0
        assert not any(c in r.text for c in "\x00\x01\x1b")  # escaped in the JSON text
    # A raw line break ends the part's header line: the form parser refuses the rest.
    forged = b'line\r\nINFO:     127.0.0.1:1 - "GET /forged HTTP/1.1" 200 OK\r\n.wav'
    r = client.post("/embed", content=_form(_part("audio", data, forged)), headers=FORM)
    _error(r, 400, "invalid_form")
    form = _form(_part("name", b"names"), *[_part("audio", data, n) for n in names[:3]])
    assert client.post("/enroll", content=form, headers=FORM).status_code == 200
    assert not outside.exists(), "an upload was written outside the service's temporary folder"
    with EnrollmentStore.open(db) as store:
        sources = {s.name: s.sources for s in store.speakers()}["names"]
    assert sources == [n.decode() for n in names[:3]]  # kept as labels, not paths
    # A name in the URL path: logged on one line (uvicorn percent-encodes it; the service's own
    # request log escapes control characters, tests/serve/test_observe.py).
    r = client.delete("/speakers/a%0D%0AINFO:%20forged")
    _error(r, 404, "unknown_speaker")
    logged = records.messages[before:]
    assert any("/speakers/a%0D%0AINFO" in m for m in logged), logged[-3:]
    for message in logged:
        assert not any(c in message for c in "\r\n\x00\x1b"), repr(message)
    _served(client, speech)


# -- 6. speaker names: 10 MB, over the length limit, SQL -----------------------------------------


def test_a_ten_megabyte_name_is_refused(client, speech):
    data, name = speech[0]
    form = _form(_part("name", b"n" * (10 << 20)), _part("audio", data, name.encode()))
    # With its length declared: over /enroll's body limit, refused before the body is read.
    _error(client.post("/enroll", content=form, headers=FORM), 413, "upload_too_large")

    # Streamed without a length: the form parser's limit on a text field refuses it.
    def chunks():
        for start in range(0, len(form), 1 << 16):
            yield form[start : start + (1 << 16)]

    _error(client.post("/enroll", content=chunks(), headers=FORM), 400, "invalid_form")
    # Over the name limit but a small field: the store's own check, before any decoding.
    long_name = "n" * (MAX_NAME_CHARS + 1)
    r = client.post("/enroll", data={"name": long_name}, files=[("audio", (name, data))])
    body = _error(r, 422, "invalid_field")
    assert body["field"] == "name"
    with pytest.raises(StoreError) as e:
        check_speaker_name(long_name)
    assert body["detail"] == f"name: {e.value}"
    assert long_name not in [s["name"] for s in client.get("/speakers").json()["speakers"]]
    _served(client, speech)


def test_sql_in_a_name_is_stored_verbatim(server, client, speech):
    db = server[2]
    (a, a_name), (b, b_name) = speech
    r = client.post("/enroll", data={"name": "plain"}, files=[("audio", (a_name, a))])
    assert r.status_code == 200, r.text
    hostile = ["x'); DROP TABLE speakers;--", 'y"; DELETE FROM embeddings; --', "z' OR '1'='1"]
    for name in hostile:
        r = client.post("/enroll", data={"name": name}, files=[("audio", (b_name, b))])
        assert r.status_code == 200, r.text
        assert r.json()["name"] == name and r.json()["total"] == 1
    listed = {s["name"]: s["num_embeddings"] for s in client.get("/speakers").json()["speakers"]}
    assert {"plain", *hostile} <= listed.keys()
    assert all(listed[n] == 1 for n in ("plain", *hostile))
    with EnrollmentStore.open(db) as store:
        assert {"plain", *hostile} <= {s.name for s in store.speakers()}
    r = client.delete(f"/speakers/{hostile[2]}")  # httpx percent-encodes the path
    assert r.status_code == 200 and r.json()["removed"] == hostile[2], r.text
    listed = {s["name"] for s in client.get("/speakers").json()["speakers"]}
    assert "plain" in listed and hostile[0] in listed and hostile[2] not in listed


def test_the_name_limit_is_the_same_in_the_cli_and_the_python_api(tmp_path, tiny_bundle, speech):
    from typer.testing import CliRunner

    from speakerprint.cli.main import app as cli

    long_name = "n" * (MAX_NAME_CHARS + 1)
    with pytest.raises(StoreError) as e:
        check_speaker_name(long_name)
    message = str(e.value)
    assert str(MAX_NAME_CHARS) in message and str(MAX_NAME_CHARS + 1) in message
    encoder = SpeakerEncoder.from_pretrained(tiny_bundle)
    db = tmp_path / "names.db"
    with EnrollmentStore.open(
        db, model_fingerprint=encoder.fingerprint, embed_dim=encoder.embed_dim, create=True
    ) as store:
        emb = np.ones(encoder.embed_dim, np.float32)
        with pytest.raises(StoreError, match=message):
            store.enroll(long_name, emb, model_fingerprint=encoder.fingerprint)
        at_limit = "n" * MAX_NAME_CHARS
        assert store.enroll(at_limit, emb, model_fingerprint=encoder.fingerprint) == 1
        assert [s.name for s in store.speakers()] == [at_limit]
    audio = tmp_path / speech[0][1]
    audio.write_bytes(speech[0][0])
    cli_db = tmp_path / "cli.db"
    result = CliRunner().invoke(
        cli, ["enroll", str(cli_db), long_name, str(audio), "--model", str(tiny_bundle)]
    )
    assert result.exit_code == 2, result.output
    assert result.output.strip() == f"error: {message}"
    assert not cli_db.exists()  # refused before the store was made


# -- 7. wrong API keys at a high rate ------------------------------------------------------------


def test_wrong_keys_at_a_high_rate_each_get_401_and_others_are_served(
    server, client, speech, monkeypatch
):
    url = server[0]
    compared = []
    real_compare = hmac.compare_digest

    def counting_compare(a, b):
        compared.append(1)
        return real_compare(a, b)

    monkeypatch.setattr(hmac, "compare_digest", counting_compare)  # the guard's comparison
    keys = [KEY[:-1], KEY + "x", "", "k" * 4000, KEY.upper(), "\u00e9" * 8]

    def attack(worker: int) -> list[tuple[int, str]]:
        answers = []
        with httpx.Client(base_url=url, timeout=30) as c:
            for i in range(50):
                key = keys[(worker + i) % len(keys)]
                headers = {"X-API-Key": key.encode()}
                r = c.post("/embed", headers=headers, files=[("audio", ("a.wav", b"x"))])
                answers.append((r.status_code, r.json()["error"]))
        return answers

    with ThreadPoolExecutor(10) as pool:
        attacks = [pool.submit(attack, w) for w in range(10)]
        for _ in range(3):  # the right key is served while the wrong ones pour in
            _served(client, speech)
        answers = [a for f in attacks for a in f.result()]
    assert len(answers) == 500
    assert set(answers) == {(401, "wrong_api_key")}
    assert len(compared) >= 500  # every wrong key went through the constant-time comparison
    _served(client, speech)
