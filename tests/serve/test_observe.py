"""/metrics in Prometheus text format, request ids in responses and logs."""

import io
import logging

import numpy as np
import pytest
import soundfile as sf

pytest.importorskip("fastapi")
pytest.importorskip("prometheus_client")
from fastapi.testclient import TestClient  # noqa: E402
from prometheus_client.parser import text_string_to_metric_families  # noqa: E402

from speakerprint.serve import create_app  # noqa: E402

KEY = "k-123"


def _wav_bytes(seconds=1.5, seed=0):
    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    sf.write(
        buf,
        (0.1 * rng.standard_normal(int(16000 * seconds))).astype(np.float32),
        16000,
        format="WAV",
    )
    return buf.getvalue()


def _samples(text):
    """{(name, frozenset(labels)): value} of a Prometheus exposition."""
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


@pytest.fixture(scope="module")
def app(tiny_bundle):
    return create_app(model=tiny_bundle, api_key=KEY, batch_max_size=4, batch_wait_ms=1)


def test_metrics_count_requests_by_endpoint_and_status(app):
    with TestClient(app) as c:
        before = _samples(c.get("/metrics").text)
        audio = ("audio", ("a.wav", _wav_bytes(), "audio/wav"))
        assert c.post("/embed", files=[audio], headers={"X-API-Key": KEY}).status_code == 200
        assert c.post("/embed", files=[audio]).status_code == 401
        bad = ("audio", ("a.wav", b"not audio at all", "audio/wav"))
        assert c.post("/embed", files=[bad], headers={"X-API-Key": KEY}).status_code == 415
        assert c.delete("/speakers/x", headers={"X-API-Key": KEY}).status_code == 404
        r = c.get("/metrics")  # needs no key, as /health
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    after = _samples(r.text)

    def grew(name, **labels):
        key = (name, frozenset(labels.items()))
        return after.get(key, 0) - before.get(key, 0)

    assert grew("speakerprint_requests_total", endpoint="/embed", status="200") == 1
    assert grew("speakerprint_requests_total", endpoint="/embed", status="401") == 1
    assert grew("speakerprint_requests_total", endpoint="/embed", status="415") == 1
    # Every name under /speakers/ is one series, so a client cannot grow the metrics.
    assert grew("speakerprint_requests_total", endpoint="/speakers/{name}", status="404") == 1
    assert grew("speakerprint_request_seconds_count", endpoint="/embed") == 3
    assert grew("speakerprint_batch_size_count") == 1  # one forward pass, for the one good upload
    assert after[("speakerprint_batch_queue", frozenset())] == 0


def test_request_ids_are_echoed_or_made_and_logged(app, caplog):
    caplog.set_level(logging.INFO, logger="speakerprint.serve")
    with TestClient(app) as c:
        given = c.get("/health", headers={"X-Request-ID": "trace-42.a"})
        forged = c.get("/health", headers={"X-Request-ID": "x" * 65})
        control = c.get("/speakers/a%0Dforged%0Ab", headers={"X-API-Key": KEY})
    assert given.headers["x-request-id"] == "trace-42.a"
    made = forged.headers["x-request-id"]
    assert made != "x" * 65 and len(made) == 32 and int(made, 16) >= 0  # a fresh uuid4 hex
    lines = [r.getMessage() for r in caplog.records if r.name == "speakerprint.serve"]
    assert any(line.startswith("trace-42.a GET /health 200 ") for line in lines), lines
    assert any(line.startswith(f"{made} GET /health 200 ") for line in lines), lines
    # A path with CR/LF cannot start a log line of its own.
    escaped = [line for line in lines if "forged" in line]
    assert escaped and all("\n" not in line and "\r" not in line for line in escaped)
    assert "\\x0dforged\\x0ab" in escaped[0] and control.headers["x-request-id"] in escaped[0]


def test_an_internal_error_names_its_request_id(tiny_bundle, monkeypatch, caplog):
    app = create_app(model=tiny_bundle, batch_max_size=1)

    def broken(*args, **kwargs):
        raise RuntimeError("a bug")

    monkeypatch.setattr(app.state.service.encoder, "embed", broken)
    caplog.set_level(logging.INFO, logger="speakerprint.serve")
    with TestClient(app, raise_server_exceptions=False) as c:
        r = c.post("/embed", files=[("audio", ("a.wav", _wav_bytes(), "audio/wav"))])
    assert r.status_code == 500, r.text
    body = r.json()
    assert body["error"] == "internal_error" and body["request_id"] in body["detail"]
    assert r.headers["x-request-id"] == body["request_id"]
    lines = [rec.getMessage() for rec in caplog.records if rec.name == "speakerprint.serve"]
    assert any(line.startswith(f"{body['request_id']} POST /embed 500 ") for line in lines)
