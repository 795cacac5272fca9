"""The HTTP service against a real uvicorn server on 127.0.0.1, with httpx as the client.

One server for the module (the tiny fixture model, a fresh SQLite store, an API key, small limits
so that the limit cases stay small); real speechocean762 recordings as uploads.
"""

import io
import json
import os
import shutil
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import soundfile as sf

httpx = pytest.importorskip("httpx")
uvicorn = pytest.importorskip("uvicorn")
pytest.importorskip("fastapi")

from speakerprint.audio import load_audio  # noqa: E402
from speakerprint.inference import SpeakerEncoder  # noqa: E402
from speakerprint.inference.speech import require_speech  # noqa: E402
from speakerprint.inference.store import EnrollmentStore, StoreError  # noqa: E402
from speakerprint.serve import create_app  # noqa: E402
from tests.serve.live import live_server  # noqa: E402

KEY = "test-key-0123"
MAX_UPLOAD_MB = 0.25  # 262,144 bytes per file; the body limit adds 64 KiB of form overhead
MAX_DURATION_S = 8.0


def _assert_same_answer(got, expected):
    """Equal responses, floats to 1e-6: the service embeds a verify's two uploads in one padded
    batch, the CLI one at a time, and the two agree to float rounding (~1e-8)."""
    if isinstance(expected, float) and not isinstance(got, bool):
        assert got == pytest.approx(expected, rel=0, abs=1e-6)
    elif isinstance(expected, dict):
        assert isinstance(got, dict) and got.keys() == expected.keys(), (got, expected)
        for key in expected:
            _assert_same_answer(got[key], expected[key])
    elif isinstance(expected, list):
        assert isinstance(got, list) and len(got) == len(expected), (got, expected)
        for g, e in zip(got, expected):
            _assert_same_answer(g, e)
    else:
        assert got == expected


@pytest.fixture(scope="module")
def speech(shared_data):
    """Two speechocean762 speakers, four short recordings each (under the duration limit)."""
    root = shared_data / "speechocean762" / "train"
    chosen = {}
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        files = [
            str(f)
            for f in sorted(folder.glob("*.opus"))
            if sf.info(str(f)).duration < MAX_DURATION_S
        ]
        if len(files) >= 4:
            chosen[folder.name] = files[:4]
        if len(chosen) == 2:
            return chosen
    pytest.skip("fewer than two speechocean762 speakers with four short recordings")


@pytest.fixture(scope="module")
def encoder(tiny_bundle):
    return SpeakerEncoder.from_pretrained(tiny_bundle)


@pytest.fixture(scope="module")
def server(tmp_path_factory, encoder):
    """A live server in a background thread; yields (base_url, store path)."""
    db = tmp_path_factory.mktemp("serve") / "speakers.db"
    app = create_app(
        model=encoder,
        store=db,
        api_key=KEY,
        max_upload_mb=MAX_UPLOAD_MB,
        max_duration_s=MAX_DURATION_S,
        inference_threads=4,
    )
    with live_server(app, lifespan="off") as (url, _):
        yield url, db


@pytest.fixture(scope="module")
def client(server):
    with httpx.Client(base_url=server[0], headers={"X-API-Key": KEY}, timeout=30) as c:
        yield c


def _file(path, field="audio"):
    with open(path, "rb") as f:
        return (field, (os.path.basename(path), f.read(), "audio/ogg"))


def _bytes(data, name, field="audio"):
    return (field, (name, data, "application/octet-stream"))


def test_health_needs_no_key(server, encoder):
    r = httpx.get(f"{server[0]}/health")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["model_fingerprint"] == encoder.fingerprint
    assert body["embed_dim"] == encoder.embed_dim and body["sample_rate"] == encoder.sample_rate
    assert body["threshold"] == pytest.approx(encoder.bundle.threshold.value)
    assert body["api_key_required"] is True
    assert body["limits"]["max_duration_s"] == MAX_DURATION_S


@pytest.mark.parametrize("headers", [{}, {"X-API-Key": "wrong"}, {"X-API-Key": KEY + "x"}])
def test_every_other_endpoint_needs_the_key(server, speech, headers):
    url = server[0]
    wav = next(iter(speech.values()))[0]
    expected = "missing_api_key" if not headers else "wrong_api_key"
    calls = [
        httpx.post(f"{url}/embed", files=[_file(wav)], headers=headers),
        httpx.post(f"{url}/verify", files=[_file(wav, "a"), _file(wav, "b")], headers=headers),
        httpx.get(f"{url}/speakers", headers=headers),
        httpx.delete(f"{url}/speakers/anyone", headers=headers),
    ]
    for r in calls:
        assert r.status_code == 401, (r.request.url, r.text)
        assert r.json()["error"] == expected


def test_embed_equals_the_python_api(client, encoder, speech):
    path = next(iter(speech.values()))[0]
    r = client.post("/embed", files=[_file(path)])
    assert r.status_code == 200, r.text
    body = r.json()
    np.testing.assert_allclose(body["embedding"], encoder.embed(path), rtol=0, atol=1e-6)
    assert body["embed_dim"] == encoder.embed_dim
    assert body["filename"] == os.path.basename(path)
    assert body["duration_s"] == pytest.approx(len(load_audio(path, 16000)) / 16000)


def test_verify_matches_the_python_api_under_concurrency(client, encoder, speech):
    (a_files, b_files) = speech.values()
    pairs = [(a_files[0], a_files[1]), (a_files[0], b_files[0])]
    expected = [encoder.verify(a, b) for a, b in pairs]

    def call(i):
        a, b = pairs[i % 2]
        return client.post("/verify", files=[_file(a, "a"), _file(b, "b")])

    with ThreadPoolExecutor(8) as pool:
        responses = list(pool.map(call, range(8)))
    for i, r in enumerate(responses):
        assert r.status_code == 200, r.text
        body, want = r.json(), expected[i % 2]
        assert body["score"] == pytest.approx(want.score, abs=1e-6)
        assert body["threshold"] == pytest.approx(want.threshold)
        assert body["same_speaker"] is want.same_speaker
        assert body["threshold_source"] == want.threshold_source
        assert body["decision"] == ("same speaker" if want.same_speaker else "different speakers")
        assert (body["a"], body["b"]) == tuple(os.path.basename(p) for p in pairs[i % 2])

    # A given threshold decides instead of the bundle's.
    a, b = pairs[0]
    r = client.post("/verify", files=[_file(a, "a"), _file(b, "b")], data={"threshold": "1.01"})
    assert r.json()["same_speaker"] is False and r.json()["threshold_source"] == "given"


def test_enroll_identify_list_remove(client, server, encoder, speech):
    db = server[1]
    (ann, ann_files), (bob, bob_files) = speech.items()
    for name, files in ((ann, ann_files[:3]), (bob, bob_files[:3])):
        r = client.post("/enroll", data={"name": name}, files=[_file(f) for f in files])
        assert r.status_code == 200, r.text
        body = r.json()
        speech_s = [require_speech(load_audio(f), 16000, source=f) for f in files]
        assert body.pop("speech_s") == speech_s  # measured as the Python API measures it
        assert body == {"name": name, "added": 3, "total": 3}

    r = client.get("/speakers")
    assert r.status_code == 200, r.text
    listed = {s["name"]: s for s in r.json()["speakers"]}
    assert listed.keys() == {ann, bob} and r.json()["count"] == 2
    assert listed[ann]["sources"] == [os.path.basename(f) for f in ann_files[:3]]
    with EnrollmentStore.open(db, model_fingerprint=encoder.fingerprint) as store:
        np.testing.assert_allclose(
            store.embeddings(bob), [encoder.embed(f) for f in bob_files[:3]], atol=1e-6
        )

    # Identification mirrors the store's Python API on the query's embedding.
    query = ann_files[3]
    with EnrollmentStore.open(db, model_fingerprint=encoder.fingerprint) as store:
        want = store.identify(
            encoder.embed(query),
            threshold=encoder.bundle.threshold.value,
            model_fingerprint=encoder.fingerprint,
            top_k=2,
        )
    r = client.post("/identify", files=[_file(query)], data={"top_k": "2"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert [c["name"] for c in body["candidates"]] == [n for n, _ in want.candidates]
    assert [c["score"] for c in body["candidates"]] == pytest.approx(
        [s for _, s in want.candidates], abs=1e-6
    )
    assert body["speaker"] == want.speaker
    assert body["decision"] == (want.speaker or "unknown")
    # Thresholds just below and above the best score: the best name, then "unknown".
    best = body["score"]
    r = client.post("/identify", files=[_file(query)], data={"threshold": str(best - 1e-3)})
    assert r.json()["decision"] == want.candidates[0][0] and r.json()["known"] is True
    r = client.post("/identify", files=[_file(query)], data={"threshold": str(best + 1e-3)})
    assert r.json()["decision"] == "unknown" and r.json()["speaker"] is None
    assert len(r.json()["candidates"]) == 2  # top_k defaults to 5; two speakers exist

    # One undecodable file among good ones: refused, and nothing is enrolled.
    files = [_file(bob_files[3]), _bytes(b"\x00garbage" * 100, "bad.wav")]
    r = client.post("/enroll", data={"name": bob}, files=files)
    assert r.status_code == 415 and r.json()["field"] == "audio[1]", r.text
    assert {s["name"]: s["num_embeddings"] for s in client.get("/speakers").json()["speakers"]}[
        bob
    ] == 3

    r = client.delete(f"/speakers/{bob}")
    assert r.status_code == 200 and r.json() == {"removed": bob, "num_embeddings": 3}
    r = client.delete(f"/speakers/{bob}")
    assert r.status_code == 404 and r.json()["error"] == "unknown_speaker"
    assert [s["name"] for s in client.get("/speakers").json()["speakers"]] == [ann]


def _wav_bytes(wav, sample_rate):
    buf = io.BytesIO()
    sf.write(buf, wav, sample_rate, format="WAV", subtype="PCM_16")
    return buf.getvalue()


def test_oversized_uploads_are_refused_before_decoding(client, speech):
    limit = int(MAX_UPLOAD_MB * 1024 * 1024)
    # Over the per-file limit but inside the body's form overhead: refused by field.
    r = client.post("/embed", files=[_bytes(b"\x01" * (limit + 1000), "big.wav")])
    assert r.status_code == 413, r.text
    assert r.json()["error"] == "upload_too_large" and r.json()["field"] == "audio"
    assert r.json()["filename"] == "big.wav"
    # Far over: refused from the declared Content-Length, before the body is read.
    r = client.post("/embed", files=[_bytes(b"\x01" * (4 * limit), "huge.wav")])
    assert r.status_code == 413 and "declares" in r.json()["detail"], r.text
    # Streamed without a length (chunked): refused once the bytes counted pass the limit.
    boundary = "speakerprintboundary"
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="audio"; filename="s.wav"\r\n'
        "Content-Type: application/octet-stream\r\n\r\n"
    ).encode()

    def chunks():
        yield head
        for _ in range(16):
            yield b"\x01" * (limit // 4)
        yield f"\r\n--{boundary}--\r\n".encode()

    r = client.post(
        "/embed",
        content=chunks(),
        headers={"Content-Type": f"multipart/form-data; boundary={boundary}"},
    )
    assert r.status_code == 413 and "sent at least" in r.json()["detail"], r.text


def test_bad_audio_is_a_4xx_naming_the_field(client, speech):
    good = next(iter(speech.values()))[0]
    r = client.post("/embed", files=[_bytes(b"", "empty.wav")])
    assert r.status_code == 400 and r.json()["error"] == "empty_upload", r.text
    garbage = np.random.default_rng(0).integers(0, 256, 5000, dtype=np.uint8).tobytes()
    r = client.post("/verify", files=[_file(good, "a"), _bytes(garbage, "noise.wav", "b")])
    assert r.status_code == 415, r.text
    body = r.json()
    assert body["error"] == "undecodable_audio" and body["field"] == "b"
    assert body["filename"] == "noise.wav" and "noise.wav" in body["detail"]
    assert "speakerprint-serve-" not in body["detail"]  # no temporary path leaks out
    # Real speech, tiled past the duration limit, at 8 kHz to stay under the size limit.
    wav = load_audio(good, 8000)
    long = np.tile(wav, int(np.ceil((MAX_DURATION_S + 1) * 8000 / len(wav))))
    r = client.post("/embed", files=[_bytes(_wav_bytes(long, 8000), "long.wav")])
    assert r.status_code == 413 and r.json()["error"] == "audio_too_long", r.text
    assert r.json()["field"] == "audio"
    # A missing field and a bad top_k are validation errors that name the field.
    r = client.post("/verify", files=[_file(good, "a")])
    assert r.status_code == 422 and r.json()["field"] == "b", r.text
    r = client.post("/identify", files=[_file(good)], data={"top_k": "0"})
    assert r.status_code == 422 and r.json()["field"] == "top_k", r.text


def test_a_store_of_another_model_is_refused_at_startup(tmp_path, encoder):
    db = tmp_path / "other.db"
    EnrollmentStore.open(db, model_fingerprint="b" * 64, embed_dim=32, create=True).close()
    with pytest.raises(StoreError, match="another model"):
        create_app(model=encoder, store=db)
    # A store an older release made for these weights (its fingerprint hashed the version in)
    # is migrated at startup, not refused.
    legacy = tmp_path / "legacy.db"
    (old,) = encoder.legacy_fingerprints
    EnrollmentStore.open(legacy, model_fingerprint=old, embed_dim=32, create=True).close()
    create_app(model=encoder, store=legacy)
    with EnrollmentStore.open(legacy) as store:
        assert store.model_fingerprint == encoder.fingerprint != old


def test_without_a_store_or_speakers(tmp_path, encoder, speech):
    from fastapi.testclient import TestClient

    wav = next(iter(speech.values()))[0]
    with TestClient(create_app(model=encoder)) as c:  # no store, no key
        r = c.get("/speakers")
        assert r.status_code == 404 and r.json()["error"] == "no_store", r.text
        assert c.post("/embed", files=[_file(wav)]).status_code == 200
    with TestClient(create_app(model=encoder, store=tmp_path / "empty.db")) as c:
        r = c.post("/identify", files=[_file(wav)])
        assert r.status_code == 409 and r.json()["error"] == "no_speakers", r.text
        assert c.get("/speakers").json()["count"] == 0


def test_too_little_speech_is_a_422_naming_the_upload(client, encoder, speech, tmp_path):
    """Digital silence and the first 0.1 s of a real recording: /verify, /enroll and /identify
    answer 422 ``too_little_speech`` (nothing enrolled); with ``min_speech_s=0`` the failure it
    prevents shows (silence identified as an enrolled silence with a score of 1)."""
    from fastapi.testclient import TestClient

    from speakerprint.inference.speech import DEFAULT_MIN_SPEECH_S

    (ann, ann_files), _ = speech.items()
    silence = _wav_bytes(np.zeros(3 * 16000, np.float32), 16000)
    clip = _wav_bytes(load_audio(ann_files[0], 16000)[:1600], 16000)

    def refused(r, field, filename):
        assert r.status_code == 422, r.text
        body = r.json()
        assert (body["error"], body["field"], body["filename"]) == (
            "too_little_speech",
            field,
            filename,
        )
        assert body["detail"].startswith(f"{field} ({filename}): ")
        assert " s of speech in " in body["detail"]
        return body

    files = [_bytes(silence, "s1.wav", "a"), _bytes(silence, "s2.wav", "b")]
    body = refused(client.post("/verify", files=files), "a", "s1.wav")
    assert "0.00 s of speech in 3.00 s of audio" in body["detail"]
    files = [_file(ann_files[0], "a"), _bytes(clip, "clip.wav", "b")]  # a clip of a itself
    refused(client.post("/verify", files=files), "b", "clip.wav")
    before = client.get("/speakers").json()
    files = [_file(ann_files[0]), _bytes(silence, "silence.wav")]
    refused(client.post("/enroll", data={"name": "quiet"}, files=files), "audio[1]", "silence.wav")
    assert client.get("/speakers").json() == before
    r = client.post("/embed", files=[_bytes(silence, "silence.wav")])  # reported, not refused
    assert r.status_code == 200 and r.json()["speech_s"] == 0.0

    db = tmp_path / "speakers.db"
    with TestClient(create_app(model=encoder, store=db, min_speech_s=0)) as off:
        assert off.get("/health").json()["limits"]["min_speech_s"] == 0
        for name, files in (("silence", [_bytes(silence, "s.wav")]), (ann, [_file(ann_files[1])])):
            assert off.post("/enroll", data={"name": name}, files=files).status_code == 200
        r = off.post("/identify", files=[_bytes(silence, "q.wav")])
        assert r.json()["decision"] == "silence" and r.json()["score"] > 0.99, r.text
    with TestClient(create_app(model=encoder, store=db)) as on:
        assert on.get("/health").json()["limits"]["min_speech_s"] == DEFAULT_MIN_SPEECH_S
        for data, name in ((silence, "q.wav"), (clip, "clip.wav")):
            refused(on.post("/identify", files=[_bytes(data, name)]), "audio", name)
        r = on.post("/identify", files=[_file(ann_files[2])])
        assert r.status_code == 200, r.text
        want = require_speech(load_audio(ann_files[2], 16000), 16000, source="q")
        assert r.json()["speech_s"] == want >= DEFAULT_MIN_SPEECH_S


def test_endpoints_answer_what_the_cli_prints(tmp_path, tiny_bundle, speech):
    """/verify and /identify give the JSON of ``verify --json`` and ``identify --json`` for the
    same files and model (a calibrated one, so verify's llr is in both), plus the decision in
    words; a threshold of NaN is one line and exit 2 in the CLI and a 422 over HTTP. (embed has
    no --json: the CLI writes embedding files.)"""
    from fastapi.testclient import TestClient
    from typer.testing import CliRunner

    from speakerprint.cli.main import app as cli
    from speakerprint.eval.calibration import Calibration
    from speakerprint.models.bundle import Threshold, set_bundle_decision

    bundle = tmp_path / "calibrated"
    shutil.copytree(tiny_bundle, bundle)
    set_bundle_decision(
        bundle, Threshold(0.4, "eer", "test trials"), Calibration(8.0, -3.0).to_dict()
    )
    (ann, ann_files), (bob, bob_files) = speech.items()
    db = str(tmp_path / "speakers.db")
    runner = CliRunner()
    for name, files in ((ann, ann_files[:2]), (bob, bob_files[:2])):
        result = runner.invoke(cli, ["enroll", db, name, *files, "--model", str(bundle)])
        assert result.exit_code == 0, result.output

    def upload(path, field):  # the path as the file name, as the CLI prints it
        with open(path, "rb") as f:
            return (field, (path, f.read(), "audio/ogg"))

    def cli_json(*args):
        result = runner.invoke(cli, [*args, "--model", str(bundle), "--json"])
        assert result.exit_code == 0, result.output
        return json.loads(result.stdout)

    with TestClient(create_app(model=bundle, store=db)) as c:
        for a, b, threshold in (
            (ann_files[2], ann_files[3], None),
            (ann_files[2], bob_files[3], None),
            (ann_files[2], bob_files[3], "-0.5"),
        ):
            given = {} if threshold is None else {"threshold": threshold}
            r = c.post("/verify", files=[upload(a, "a"), upload(b, "b")], data=given)
            assert r.status_code == 200, r.text
            body = r.json()
            decision = body.pop("decision")
            expected = cli_json("verify", a, b, *(["--threshold", threshold] if threshold else []))
            _assert_same_answer(body, expected)
            assert body["llr"] == pytest.approx(8.0 * body["score"] - 3.0)
            assert decision == ("same speaker" if body["same_speaker"] else "different speakers")

            r = c.post("/identify", files=[upload(a, "audio")], data={"top_k": "2", **given})
            assert r.status_code == 200, r.text
            body = r.json()
            decision = body.pop("decision")
            expected = cli_json(
                "identify",
                db,
                a,
                "--top-k",
                "2",
                *(["--threshold", threshold] if threshold else []),
            )
            _assert_same_answer(body, expected)
            assert decision == (body["speaker"] if body["known"] else "unknown")

        r = c.post(
            "/verify",
            files=[upload(ann_files[2], "a"), upload(ann_files[3], "b")],
            data={"threshold": "nan"},
        )
        assert r.status_code == 422 and r.json()["field"] == "threshold", r.text
    for command in (["verify", ann_files[2], ann_files[3]], ["identify", db, ann_files[2]]):
        result = runner.invoke(cli, [*command, "--model", str(bundle), "--threshold", "nan"])
        assert result.exit_code == 2, result.output
        assert "finite" in result.output and len(result.output.strip().splitlines()) == 1
