"""`speakerprint serve` (uvicorn.run replaced by a recorder) and the extra's install hint."""

import subprocess
import sys

import pytest
from typer.testing import CliRunner

from speakerprint.cli.main import app

uvicorn = pytest.importorskip("uvicorn")
testclient = pytest.importorskip("fastapi.testclient")

runner = CliRunner()


@pytest.fixture
def served(monkeypatch):
    """What `serve` handed to uvicorn.run: [(app, kwargs)]."""
    calls = []
    monkeypatch.setattr(uvicorn, "run", lambda application, **kw: calls.append((application, kw)))
    return calls


def test_serve_builds_the_app_and_runs_uvicorn(tmp_path, tiny_bundle, served):
    db = tmp_path / "speakers.db"
    args = ["serve", "--model", str(tiny_bundle), "--db", str(db), "--port", "8123"]
    result = runner.invoke(app, [*args, "--max-upload-mb", "2"], env={"SPEAKERPRINT_API_KEY": "k1"})
    assert result.exit_code == 0, result.output
    ((application, kwargs),) = served
    assert kwargs["host"] == "127.0.0.1" and kwargs["port"] == 8123
    assert db.is_file() and "API key: required" in result.output
    with testclient.TestClient(application) as client:
        health = client.get("/health").json()
        assert health["api_key_required"] and health["limits"]["max_upload_mb"] == 2.0
        assert client.get("/speakers").status_code == 401
        assert client.get("/speakers", headers={"X-API-Key": "k1"}).json()["count"] == 0

    # Without --model, the store's own model is served (as `identify` does).
    result = runner.invoke(
        app, ["serve", "--db", str(db), "--host", "0.0.0.0"], env={"SPEAKERPRINT_API_KEY": None}
    )
    assert result.exit_code == 0, result.output
    application = served[-1][0]
    assert application.state.encoder.path.resolve() == tiny_bundle.resolve()
    assert "warning: listening on 0.0.0.0 without an API key" in result.output


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--max-upload-mb", "0"], "max_upload_mb must be a positive number"),
        (["--max-duration-s", "nan"], "max_duration_s must be a positive number"),
        (["--port", "70000"], "--port must be between"),
        (["--api-key", " "], "API key must not be empty"),
    ],
)
def test_bad_options_are_one_line_errors(tiny_bundle, served, extra, message):
    result = runner.invoke(
        app, ["serve", "--model", str(tiny_bundle), *extra], env={"SPEAKERPRINT_API_KEY": None}
    )
    assert result.exit_code == 2 and message in result.output, result.output
    assert not served


def test_missing_uvicorn_names_the_extra(monkeypatch, tiny_bundle):
    monkeypatch.setitem(sys.modules, "uvicorn", None)
    result = runner.invoke(
        app, ["serve", "--model", str(tiny_bundle)], env={"SPEAKERPRINT_API_KEY": None}
    )
    assert result.exit_code == 2, result.output
    assert "pip install 'speakerprint[serve]'" in result.output


def test_the_package_imports_without_fastapi():
    code = (
        "import sys\n"
        "sys.modules['fastapi'] = None\n"
        "import speakerprint, speakerprint.serve\n"
        "try:\n"
        "    speakerprint.serve.create_app()\n"
        "except ImportError as e:\n"
        "    print(e)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    ).stdout
    assert "pip install 'speakerprint[serve]'" in out


def test_workers_run_the_app_factory_with_the_same_settings(tmp_path, tiny_bundle, monkeypatch):
    """--workers N hands uvicorn an import string and factory=True (it cannot fork an app
    object); the factory rebuilds the app from the settings the command checked."""
    from speakerprint.errors import ConfigError
    from speakerprint.serve.app import SETTINGS_ENV, app_from_environment

    calls = []
    monkeypatch.setattr(uvicorn, "run", lambda target, **kw: calls.append((target, kw)))
    monkeypatch.delenv(SETTINGS_ENV, raising=False)
    db = tmp_path / "speakers.db"
    args = ["serve", "--model", str(tiny_bundle), "--db", str(db), "--workers", "3"]
    result = runner.invoke(app, [*args, "--max-upload-mb", "2"], env={"SPEAKERPRINT_API_KEY": "k1"})
    assert result.exit_code == 0, result.output
    ((target, kwargs),) = calls
    assert target == "speakerprint.serve.app:app_from_environment"
    assert kwargs["factory"] is True and kwargs["workers"] == 3 and kwargs["port"] == 8000
    assert db.is_file()  # made once, by the command, before any worker starts
    with testclient.TestClient(app_from_environment()) as client:  # what each worker runs
        health = client.get("/health").json()
        assert health["store"] == str(db) and health["limits"]["max_upload_mb"] == 2.0
        assert health["model"] == str(tiny_bundle.resolve()) and health["api_key_required"]
        assert client.get("/speakers").status_code == 401

    result = runner.invoke(app, ["serve", "--workers", "0"], env={"SPEAKERPRINT_API_KEY": None})
    assert result.exit_code == 2 and "--workers must be at least 1" in result.output
    monkeypatch.setenv(SETTINGS_ENV, "[1, 2]")
    with pytest.raises(ConfigError, match="must hold create_app's arguments"):
        app_from_environment()


def test_a_real_server_logs_each_request_with_its_id(tmp_path, tiny_bundle):
    """The command's logging configuration: one line per request on stderr, with the id the
    client sent, in place of uvicorn's access log."""
    import socket
    import time

    import httpx

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log = tmp_path / "serve.log"
    command = [sys.executable, "-m", "speakerprint", "serve", "--model", str(tiny_bundle)]
    with open(log, "wb") as out:
        server = subprocess.Popen([*command, "--port", str(port)], stdout=out, stderr=out)
        try:
            deadline = time.monotonic() + 60
            while True:
                assert server.poll() is None, log.read_text()
                try:
                    r = httpx.get(
                        f"http://127.0.0.1:{port}/health", headers={"X-Request-ID": "probe-7"}
                    )
                    break
                except httpx.TransportError:
                    assert time.monotonic() < deadline, "the server did not start"
                    time.sleep(0.2)
            assert r.status_code == 200 and r.headers["x-request-id"] == "probe-7"
        finally:
            server.terminate()
            server.wait(30)
    lines = log.read_text().splitlines()
    assert any("probe-7 GET /health 200 " in line for line in lines), lines
    assert not any('"GET /health HTTP/1.1" 200' in line for line in lines)  # no access log twice
