"""Tests of speakerprint.eval.cache: what is cached is never embedded again (counted calls, not
timing), changed utterances are, stale and corrupt files are ignored with a warning, and the
model fingerprint follows the weights and the model config but not the threshold or the version,
while the cache keys on (fingerprint, version)."""

from __future__ import annotations

import json
import logging
import shutil

import numpy as np
import pytest

import speakerprint
from speakerprint.data.manifest import Utterance, read_manifest
from speakerprint.data.trials import read_trials
from speakerprint.eval import Condition, EmbeddingCache, bundle_fingerprint, evaluate
from speakerprint.models.bundle import Bundle, load_bundle, model_fingerprint

_FINGERPRINT = "ab" * 32


def _utts(n: int, prefix: str = "u") -> list[Utterance]:
    return [
        Utterance(f"{prefix}{i}", f"/data/{prefix}{i}.wav", "spk", 2.0 + i, 16000) for i in range(n)
    ]


class _CountingEmbedder:
    """A stand-in for the model: a fixed vector per utterance, counting what it is asked for."""

    def __init__(self) -> None:
        self.calls: list[list[str]] = []

    def __call__(self, utts):
        self.calls.append([u.utt_id for u in utts])
        return {u.utt_id: np.full(4, len(u.utt_id) + u.duration_s, np.float32) for u in utts}

    @property
    def num_embedded(self) -> int:
        return sum(len(c) for c in self.calls)


def test_what_is_cached_is_not_embedded_again(tmp_path):
    cache = EmbeddingCache(tmp_path / "cache", _FINGERPRINT, version="1.2.3")
    embed = _CountingEmbedder()
    first = cache.get_or_compute(Condition(), _utts(3), embed)
    assert (first.num_computed, first.num_cached, embed.num_embedded) == (3, 0, 3)
    assert first.path.is_file() and first.path.name == f"{_FINGERPRINT[:16]}_1.2.3_full.npz"

    again = cache.get_or_compute(Condition(), _utts(3), embed)
    assert (again.num_computed, again.num_cached, len(embed.calls)) == (0, 3, 1)
    for key, value in first.embeddings.items():
        np.testing.assert_array_equal(again.embeddings[key], value)

    # Two more utterances: only they are embedded, in one call; the file keeps all five.
    more = cache.get_or_compute(Condition(), _utts(5), embed)
    assert embed.calls[-1] == ["u3", "u4"] and (more.num_computed, more.num_cached) == (2, 3)
    assert len(cache.load(Condition())) == 5
    # Asking for a subset reads it without embedding and without dropping the rest.
    subset = cache.get_or_compute(Condition(), _utts(2), embed)
    assert sorted(subset.embeddings) == ["u0", "u1"] and len(embed.calls) == 2
    assert len(cache.load(Condition())) == 5
    # No temporary file is left beside the cache file.
    assert [p.name for p in (tmp_path / "cache").iterdir()] == [first.path.name]


def test_a_moved_or_changed_utterance_is_embedded_again(tmp_path):
    cache = EmbeddingCache(tmp_path, _FINGERPRINT)
    embed = _CountingEmbedder()
    utts = _utts(3)
    cache.get_or_compute(Condition(), utts, embed)
    moved = Utterance("u1", "/elsewhere/u1.wav", "spk", utts[1].duration_s, 16000)
    longer = Utterance("u2", utts[2].path, "spk", utts[2].duration_s + 0.5, 16000)
    result = cache.get_or_compute(Condition(), [utts[0], moved, longer], embed)
    assert embed.calls[-1] == ["u1", "u2"] and result.num_cached == 1
    assert cache.load(Condition())["u1"][0] == "/elsewhere/u1.wav"
    np.testing.assert_array_equal(result.embeddings["u2"], np.full(4, 2 + 4.5, np.float32))


def test_conditions_and_bundles_have_their_own_files(tmp_path):
    embed = _CountingEmbedder()
    cache = EmbeddingCache(tmp_path, _FINGERPRINT)
    cache.get_or_compute(Condition(), _utts(2), embed)
    cache.get_or_compute(Condition("crop", crop_s=3.0), _utts(2), embed)
    cache.get_or_compute(Condition("crop", crop_s=2.0), _utts(2), embed)
    EmbeddingCache(tmp_path, "cd" * 32).get_or_compute(Condition(), _utts(2), embed)
    assert embed.num_embedded == 8
    assert len(list(tmp_path.glob("*.npz"))) == 4


def test_another_version_has_its_own_file(tmp_path, monkeypatch):
    embed = _CountingEmbedder()
    monkeypatch.setattr(speakerprint, "__version__", "1.0.0")
    old = EmbeddingCache(tmp_path, _FINGERPRINT)
    assert old.version == "1.0.0"
    old_path = old.get_or_compute(Condition(), _utts(2), embed).path
    monkeypatch.setattr(speakerprint, "__version__", "1.1.0+local.2")
    new = EmbeddingCache(tmp_path, _FINGERPRINT)
    result = new.get_or_compute(Condition(), _utts(2), embed)
    # Embedded again under the new version, into its own file; the old one is left as it was.
    assert result.num_computed == 2 and embed.num_embedded == 4
    assert (
        result.path != old_path
        and result.path.name == f"{_FINGERPRINT[:16]}_1.1.0-local.2_full.npz"
    )
    assert len(old.load(Condition())) == 2
    # A file of another version put in this version's place is stale, not read.
    shutil.copy(old_path, result.path)
    assert new.load(Condition()) == {}


def test_a_corrupt_file_is_ignored_with_a_warning_and_rewritten(tmp_path, caplog):
    cache = EmbeddingCache(tmp_path, _FINGERPRINT)
    embed = _CountingEmbedder()
    path = cache.get_or_compute(Condition(), _utts(2), embed).path
    path.write_bytes(b"not a zip file at all")
    with caplog.at_level(logging.WARNING, logger="speakerprint.eval.cache"):
        result = cache.get_or_compute(Condition(), _utts(2), embed)
    assert result.num_computed == 2 and embed.num_embedded == 4
    assert "unreadable" in caplog.text and str(path) in caplog.text
    caplog.clear()
    assert len(cache.load(Condition())) == 2 and not caplog.text  # rewritten, readable again

    # A file that reads but whose arrays disagree with each other is corrupt too.
    with np.load(path) as npz:
        arrays = dict(npz)
    arrays["paths"] = arrays["paths"][:1]
    np.savez(path, **arrays)
    with caplog.at_level(logging.WARNING, logger="speakerprint.eval.cache"):
        assert cache.load(Condition()) == {}
    assert "corrupt" in caplog.text


def test_a_stale_file_is_ignored_with_a_warning(tmp_path, caplog):
    embed = _CountingEmbedder()
    cache = EmbeddingCache(tmp_path, _FINGERPRINT)
    crop_path = cache.get_or_compute(Condition("crop"), _utts(2), embed).path
    # A crop file put where the full-length one belongs is never read as full-length.
    shutil.copy(crop_path, cache.path_for(Condition()))
    with caplog.at_level(logging.WARNING, logger="speakerprint.eval.cache"):
        result = cache.get_or_compute(Condition(), _utts(2), embed)
    assert result.num_computed == 2
    assert "stale" in caplog.text and "condition" in caplog.text
    # Nor is a file whose full fingerprint differs in the part beyond its name.
    other = EmbeddingCache(tmp_path, _FINGERPRINT[:16] + "0" * 48)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="speakerprint.eval.cache"):
        assert other.load(Condition()) == {}
    assert "bundle_fingerprint" in caplog.text


def test_compute_must_return_every_embedding(tmp_path):
    cache = EmbeddingCache(tmp_path, _FINGERPRINT)
    with pytest.raises(ValueError, match="u1"):
        cache.get_or_compute(Condition(), _utts(2), lambda utts: {"u0": np.zeros(4)})
    assert not list(tmp_path.iterdir())


def test_fingerprint_follows_weights_and_model_config_not_threshold_or_version(
    tmp_path, tiny_bundle, monkeypatch
):
    copy = tmp_path / "bundle"
    shutil.copytree(tiny_bundle, copy)
    original = model_fingerprint(copy)
    assert original == model_fingerprint(tiny_bundle) and len(original) == 64
    assert bundle_fingerprint(copy) == original  # the name eval callers use

    monkeypatch.setattr(speakerprint, "__version__", "99.0.0")
    assert model_fingerprint(copy) == original
    monkeypatch.undo()

    config = json.loads((copy / "config.json").read_text())
    config["threshold"] = {"value": 0.5, "method": "eer", "measured_on": "elsewhere"}
    (copy / "config.json").write_text(json.dumps(config))
    assert model_fingerprint(copy) == original

    config["features"]["num_mel_bins"] += 1
    (copy / "config.json").write_text(json.dumps(config))
    assert model_fingerprint(copy) != original
    config["features"]["num_mel_bins"] -= 1
    (copy / "config.json").write_text(json.dumps(config))

    weights = bytearray((copy / "model.safetensors").read_bytes())
    weights[-1] ^= 0xFF
    (copy / "model.safetensors").write_bytes(bytes(weights))
    assert model_fingerprint(copy) != original


def test_evaluate_with_a_cache_embeds_each_utterance_once(
    tmp_path, tiny_bundle, demo_prepared, monkeypatch
):
    bundle = load_bundle(tiny_bundle)
    utts = read_manifest(demo_prepared / "dev.jsonl")
    trials = read_trials(demo_prepared / "dev_trials.txt")[:200]
    rows = []
    real_embed_batch = Bundle.embed_batch

    def counting(self, wav, lengths=None):
        rows.append(wav.shape[0])
        return real_embed_batch(self, wav, lengths)

    monkeypatch.setattr(Bundle, "embed_batch", counting)
    cache = EmbeddingCache(tmp_path, model_fingerprint(tiny_bundle))
    condition = Condition("crop", crop_s=1.5)
    first = evaluate(bundle, utts, trials, condition=condition, cache=cache, batch_size=32)
    used = {t.enrol for t in trials} | {t.test for t in trials}
    assert sum(rows) == len(used) == first.num_embedded and first.num_cached == 0
    assert len(used) < len(utts)

    rows.clear()
    second = evaluate(bundle, utts, trials, condition=condition, cache=cache, batch_size=32)
    assert rows == [] and second.num_embedded == 0 and second.num_cached == len(used)
    assert second.metrics == first.metrics
    np.testing.assert_array_equal(second.scores, first.scores)
    # Identification needs every utterance of the manifest: only the missing ones are embedded.
    third = evaluate(bundle, utts, trials, condition=condition, cache=cache, identification=True)
    assert sum(rows) == len(utts) - len(used) == third.num_embedded
    assert third.num_cached == len(used)
