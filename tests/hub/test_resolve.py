"""Models by name: fetched once from a hub (a test hub on 127.0.0.1), pinned by sha256, converted
into the cache, then read with no network; local checkpoints converted without the network; every
failure one clear error with the caches left clean."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from speakerprint.cli.main import app
from speakerprint.convert import convert
from speakerprint.errors import BundleError, ModelUnavailableError
from speakerprint.hub import catalog as catalog_module
from speakerprint.hub import is_cached, resolve_model
from speakerprint.hub.catalog import HubFile, PretrainedModel
from speakerprint.inference import SpeakerEncoder
from tests.hub.testhub import LocalHub

WESPEAKER = Path(__file__).resolve().parents[1] / "fixtures" / "peers" / "wespeaker" / "resnet34"
REVISION = "0123456789abcdef0123456789abcdef01234567"
REPO = "test-org/wespeaker-test-resnet34"
NAMES = ("avg_model.pt", "config.yaml")
runner = CliRunner()


def _entry(contents: dict[str, bytes]) -> PretrainedModel:
    files = tuple(
        HubFile(name, hashlib.sha256(contents[name]).hexdigest(), len(contents[name]))
        for name in NAMES
    )
    return PretrainedModel(
        alias="test-resnet34",
        hub_id=REPO,
        revision=REVISION,
        files=files,
        source="wespeaker",
        config="config.yaml",
        architecture="ResNet34",
        parameters=6_600_000,
        embed_dim=256,
        sample_rate=16000,
        features="80 log-mel",
        training_data="nothing (random weights)",
        published="-",
        published_source="-",
        licence="-",
    )


@pytest.fixture
def contents() -> dict[str, bytes]:
    return {name: (WESPEAKER / name).read_bytes() for name in NAMES}


@pytest.fixture
def hub(tmp_path, monkeypatch, contents):
    """The catalog holds one test model served by a hub on 127.0.0.1; both caches are fresh."""
    monkeypatch.setattr(catalog_module, "CATALOG", (_entry(contents),))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.setenv("SPEAKERPRINT_CACHE", str(tmp_path / "speakerprint"))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    # huggingface_hub backs off for 1+2+4+8+8 s between retries of a refused connection; the
    # retries are its own, the waiting is not what these tests are about.
    import huggingface_hub.utils._http as hf_http

    monkeypatch.setattr(hf_http.time, "sleep", lambda seconds: None)
    served = {(REPO, REVISION, name): data for name, data in contents.items()}
    with LocalHub(served) as server:
        monkeypatch.setenv("HF_ENDPOINT", server.endpoint)
        yield server


def _downloads(server: LocalHub) -> list[str]:
    return [r for r in server.requests if "/resolve/" in r]


def _leftovers(tmp_path: Path) -> list[str]:
    """Files under either cache that a failed call must not leave: blobs, links, bundles,
    partial downloads and temporary folders (locks and empty folders are fine)."""
    found = []
    for root in (tmp_path / "hf", tmp_path / "speakerprint"):
        for item in root.rglob("*") if root.exists() else []:
            if item.is_file() and not item.name.endswith((".lock", "CACHEDIR.TAG")):
                found.append(str(item.relative_to(tmp_path)))
    return found


def test_a_name_is_fetched_once_and_then_read_from_the_cache_offline(hub, tmp_path, monkeypatch):
    folder = resolve_model("test-resnet34")
    assert folder.is_relative_to(tmp_path / "speakerprint")
    assert len(_downloads(hub)) >= 2  # both files, at the pinned revision
    assert all(REVISION in r for r in _downloads(hub))
    info = json.loads((folder / "config.json").read_text())["info"]
    assert info["pretrained"]["revision"] == REVISION and info["source"] == "wespeaker"
    # the hub id, in any case, is the same model; no further request is made
    before = len(hub.requests)
    assert resolve_model(REPO.upper()) == folder
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert resolve_model("test-resnet34") == folder
    assert len(hub.requests) == before
    # and it is the converted model itself
    direct = convert("wespeaker", WESPEAKER / "avg_model.pt", tmp_path / "direct")
    wav = np.random.default_rng(0).standard_normal(16000).astype(np.float32) * 0.1
    by_name = SpeakerEncoder.from_pretrained("test-resnet34").embed(wav, 16000)
    np.testing.assert_array_equal(by_name, SpeakerEncoder.from_pretrained(direct).embed(wav, 16000))


def test_the_cli_embeds_by_name_from_the_cache_with_no_network(hub, tmp_path, monkeypatch):
    wav_path = WESPEAKER.parent / "speech.wav"
    resolve_model("test-resnet34")
    hub.server.shutdown()  # the hub is gone
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    out = tmp_path / "e.npz"
    result = runner.invoke(
        app, ["embed", str(wav_path), "--model", "test-resnet34", "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    saved = np.load(out)
    emb = saved[saved.files[0]]
    expected = SpeakerEncoder.from_pretrained("test-resnet34").embed(wav_path)
    assert emb.shape == expected.shape
    np.testing.assert_allclose(emb.ravel(), expected, atol=1e-5)


def test_offline_with_nothing_cached_is_one_clear_error(hub, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelUnavailableError) as info:
        resolve_model("test-resnet34")
    message = str(info.value)
    for part in ("test-resnet34", REPO, "avg_model.pt", "config.yaml", "HF_HUB_OFFLINE", "folder"):
        assert part in message
    assert not _downloads(hub)
    wav_path = WESPEAKER.parent / "speech.wav"
    result = runner.invoke(
        app, ["embed", str(wav_path), "--model", "test-resnet34", "--out", str(tmp_path / "e.npz")]
    )
    assert result.exit_code == 2
    assert result.output.startswith("error: ") and "Traceback" not in result.output
    assert not _leftovers(tmp_path)


def test_no_network_with_nothing_cached_is_the_same_error(hub, tmp_path, monkeypatch):
    hub.server.shutdown()
    hub.server.server_close()  # nothing listens there now
    with pytest.raises(ModelUnavailableError, match="avg_model.pt"):
        resolve_model("test-resnet34")
    assert not _leftovers(tmp_path)


def test_a_wrong_sha256_is_deleted_and_the_next_call_starts_over(hub, tmp_path):
    hub.corrupt.add("avg_model.pt")
    with pytest.raises(BundleError, match="sha256") as info:
        resolve_model("test-resnet34")
    assert "deleted" in str(info.value)
    assert not _leftovers(tmp_path)
    hub.corrupt.clear()
    assert is_cached(catalog_module.CATALOG[0]) is False
    folder = resolve_model("test-resnet34")
    assert (folder / "model.safetensors").is_file()


def test_an_interrupted_download_leaves_nothing_half_written(hub, tmp_path):
    hub.drop_after["avg_model.pt"] = 4096
    with pytest.raises(ModelUnavailableError, match="avg_model.pt"):
        resolve_model("test-resnet34")
    assert not _leftovers(tmp_path)
    del hub.drop_after["avg_model.pt"]
    assert (resolve_model("test-resnet34") / "model.safetensors").is_file()


def test_a_truncated_file_fails_its_sha256(hub, tmp_path, contents, monkeypatch):
    short = {**contents, "avg_model.pt": contents["avg_model.pt"][:-100]}
    hub.files[(REPO, REVISION, "avg_model.pt")] = short["avg_model.pt"]
    with pytest.raises(BundleError, match="sha256"):
        resolve_model("test-resnet34")
    assert not _leftovers(tmp_path)


def test_a_file_missing_from_the_hub_is_named(hub, tmp_path):
    del hub.files[(REPO, REVISION, "config.yaml")]
    with pytest.raises(ModelUnavailableError, match="config.yaml"):
        resolve_model("test-resnet34")
    assert not any("speakerprint" in item for item in _leftovers(tmp_path))


def test_an_interrupted_conversion_is_cleaned_up_by_the_next_call(hub, tmp_path, monkeypatch):
    import speakerprint.convert.wespeaker as wespeaker

    real = wespeaker.convert

    def crash(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(wespeaker, "convert", crash)
    with pytest.raises(KeyboardInterrupt):
        resolve_model("test-resnet34")
    bundles = tmp_path / "speakerprint" / "hub" / "test-resnet34"
    assert not [p for p in bundles.iterdir() if p.is_dir()]
    monkeypatch.setattr(wespeaker, "convert", real)
    assert (resolve_model("test-resnet34") / "model.safetensors").is_file()


def test_a_local_folder_is_converted_once_without_the_network(hub, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # nothing there
    folder = resolve_model(WESPEAKER)
    assert folder.is_relative_to(tmp_path / "speakerprint" / "local")
    assert resolve_model(str(WESPEAKER / "avg_model.pt")) == folder  # the file names it too
    assert not hub.requests
    stamp = (folder / "model.safetensors").stat().st_mtime_ns
    assert resolve_model(WESPEAKER) == folder
    assert (folder / "model.safetensors").stat().st_mtime_ns == stamp  # not converted again


def test_a_bundle_folder_is_taken_as_it_is(tmp_path, monkeypatch):
    monkeypatch.setenv("SPEAKERPRINT_CACHE", str(tmp_path / "cache"))
    bundle = convert("wespeaker", WESPEAKER / "avg_model.pt", tmp_path / "bundle")
    assert resolve_model(bundle) == bundle
    assert not (tmp_path / "cache").exists()


@pytest.mark.parametrize(
    "name, message",
    [
        ("test-resnet43", "did you mean 'test-resnet34'"),
        ("someone/some-model", "`speakerprint models` lists"),
        ("./no/such/folder", "no such file or folder"),
    ],
)
def test_unknown_names_say_what_to_do(hub, name, message, tmp_path):
    with pytest.raises(BundleError, match=message):
        resolve_model(name)
    result = runner.invoke(
        app,
        [
            "embed",
            str(WESPEAKER.parent / "speech.wav"),
            "--model",
            name,
            "--out",
            str(tmp_path / "e.npz"),
        ],
    )
    assert result.exit_code == 2 and result.output.startswith("error: ")


def test_default_names_the_shipped_model():
    assert (
        resolve_model(None) == resolve_model("default") == resolve_model("speakerprint-ecapa-so762")
    )


def test_models_lists_every_name_and_whether_it_is_cached(hub):
    result = runner.invoke(app, ["models", "--json"])
    rows = {row["name"]: row for row in json.loads(result.output)}
    assert rows["test-resnet34"]["cached"] is False and rows["test-resnet34"]["hub_id"] == REPO
    assert rows["speakerprint-ecapa-so762"]["cached"] is True
    resolve_model("test-resnet34")
    rows = {row["name"]: row for row in json.loads(runner.invoke(app, ["models", "--json"]).output)}
    assert rows["test-resnet34"]["cached"] is True


def test_a_damaged_bundle_is_loaded_as_a_bundle_so_the_error_names_the_damage(
    tmp_path, monkeypatch
):
    monkeypatch.setenv("SPEAKERPRINT_CACHE", str(tmp_path / "cache"))
    bundle = convert("wespeaker", WESPEAKER / "avg_model.pt", tmp_path / "bundle")
    (bundle / "config.json").write_text("{not json")
    assert resolve_model(bundle) == bundle
    with pytest.raises(BundleError, match="not valid JSON"):
        SpeakerEncoder.from_pretrained(bundle)
