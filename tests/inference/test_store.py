"""The enrollment store: SQLite bookkeeping on synthetic embeddings, then identification of real
speakers with the shipped model."""

import hashlib
import json
import sqlite3
from pathlib import Path

import numpy as np
import pytest
import torch

import speakerprint
from speakerprint.audio import load_audio
from speakerprint.features import FbankConfig
from speakerprint.inference import SpeakerEncoder, default_model_path
from speakerprint.inference.store import (
    SCHEMA_VERSION,
    BaseEnrollmentStore,
    EnrollmentStore,
    StoreError,
    open_store,
)
from speakerprint.models import create_model
from speakerprint.models.bundle import save_bundle

FP = "a" * 64
OTHER_FP = "b" * 64


def _store(tmp_path, dim=4):
    return EnrollmentStore.open(
        tmp_path / "s.db", model_fingerprint=FP, embed_dim=dim, model_path="m", create=True
    )


def test_enroll_list_and_persist(tmp_path):
    with _store(tmp_path) as store:
        assert (
            store.enroll("ann", np.eye(4)[:2], sources=["a1.wav", "a2.wav"], model_fingerprint=FP)
            == 2
        )
        assert store.enroll("ann", np.eye(4)[2], sources=["a3.wav"], model_fingerprint=FP) == 3
        assert store.enroll("bob", np.ones((1, 4)), model_fingerprint=FP) == 1
    with EnrollmentStore.open(tmp_path / "s.db", model_fingerprint=FP) as store:
        entries = store.speakers()
        assert [(e.name, e.num_embeddings) for e in entries] == [("ann", 3), ("bob", 1)]
        assert entries[0].sources == ["a1.wav", "a2.wav", "a3.wav"]
        np.testing.assert_array_equal(store.embeddings("ann"), np.eye(4)[:3].astype(np.float32))
        assert store.embed_dim == 4 and store.model_path == "m"
        assert store.remove("ann") == 3
        assert [e.name for e in store.speakers()] == ["bob"]
        with pytest.raises(StoreError, match="no speaker 'ann'.*bob"):
            store.remove("ann")
    raw = sqlite3.connect(tmp_path / "s.db")
    # The cascade removed ann's embeddings, not just the speaker row.
    assert raw.execute("SELECT COUNT(*) FROM embeddings").fetchone() == (1,)
    assert dict(raw.execute("SELECT key, value FROM meta"))["schema_version"] == str(SCHEMA_VERSION)


def test_identify_scores_against_normalised_means(tmp_path):
    rng = np.random.default_rng(0)
    ann = rng.normal(size=(3, 8)) * np.array([[1.0], [5.0], [0.2]])  # lengths differ a lot
    bob = rng.normal(size=(2, 8))
    with _store(tmp_path, dim=8) as store:
        store.enroll("ann", ann, model_fingerprint=FP)
        store.enroll("bob", bob, model_fingerprint=FP)
        query = ann[0] + 0.1 * rng.normal(size=8)

        def expected(x):
            mean = (x / np.linalg.norm(x, axis=1, keepdims=True)).mean(0)
            return mean @ query / np.linalg.norm(mean) / np.linalg.norm(query)

        result = store.identify(query, threshold=0.0, model_fingerprint=FP, top_k=5)
        assert [n for n, _ in result.candidates] == sorted(
            ["ann", "bob"], key=lambda n: -expected({"ann": ann, "bob": bob}[n])
        )
        scores = dict(result.candidates)
        assert scores["ann"] == pytest.approx(expected(ann), abs=1e-5)
        assert scores["bob"] == pytest.approx(expected(bob), abs=1e-5)
        assert result.speaker == result.candidates[0][0] and result.known
        assert result.score == result.candidates[0][1]

        unknown = store.identify(query, threshold=result.score + 1e-3, model_fingerprint=FP)
        assert unknown.speaker is None and not unknown.known
        assert unknown.to_dict()["candidates"][0]["name"] == result.speaker
        assert (
            len(store.identify(query, threshold=0.0, model_fingerprint=FP, top_k=1).candidates) == 1
        )


def test_another_model_is_refused(tmp_path):
    _store(tmp_path).close()
    with pytest.raises(StoreError, match="another model"):
        EnrollmentStore.open(tmp_path / "s.db", model_fingerprint=OTHER_FP)
    with pytest.raises(StoreError, match="4-dimensional"):
        EnrollmentStore.open(tmp_path / "s.db", embed_dim=8)
    with EnrollmentStore.open(tmp_path / "s.db") as store:
        with pytest.raises(StoreError, match="another model"):
            store.enroll("ann", np.ones(4), model_fingerprint=OTHER_FP)
        store.enroll("ann", np.ones(4), model_fingerprint=FP)
        with pytest.raises(StoreError, match="another model"):
            store.identify(np.ones(4), threshold=0.5, model_fingerprint=OTHER_FP)
        with pytest.raises(StoreError, match=r"shape \(K, 4\)"):
            store.enroll("ann", np.ones(5), model_fingerprint=FP)
        with pytest.raises(StoreError, match="NaN"):
            store.enroll("ann", np.full(4, np.nan), model_fingerprint=FP)
        with pytest.raises(StoreError, match="query contains NaN"):
            store.identify(np.full(4, np.nan), threshold=0.5, model_fingerprint=FP)
        with pytest.raises(StoreError, match="2 embeddings but 1 sources"):
            store.enroll("ann", np.ones((2, 4)), sources=["x"], model_fingerprint=FP)
        with pytest.raises(StoreError, match="name"):
            store.enroll("  ", np.ones(4), model_fingerprint=FP)
        assert store.speakers()[0].num_embeddings == 1


def test_a_failed_write_changes_nothing(tmp_path):
    with _store(tmp_path) as store:
        store.enroll("ann", np.ones(4), model_fingerprint=FP)
    # Make the second embedding's insert fail inside the transaction, after the speaker row and
    # the first embedding went in: the whole enrollment must be rolled back.
    raw = sqlite3.connect(tmp_path / "s.db")
    raw.execute(
        "CREATE TRIGGER no_bad BEFORE INSERT ON embeddings WHEN NEW.source = 'bad' "
        "BEGIN SELECT RAISE(ABORT, 'refused'); END"
    )
    raw.commit()
    raw.close()
    with EnrollmentStore.open(tmp_path / "s.db", model_fingerprint=FP) as store:
        with pytest.raises(sqlite3.IntegrityError, match="refused"):
            store.enroll("cid", np.ones((2, 4)), sources=["good", "bad"], model_fingerprint=FP)
        assert [e.name for e in store.speakers()] == ["ann"]
        store.enroll("cid", np.ones(4), sources=["good"], model_fingerprint=FP)  # still writable
        assert [e.name for e in store.speakers()] == ["ann", "cid"]


def test_not_a_store_and_newer_schema(tmp_path):
    with pytest.raises(StoreError, match="does not exist"):
        EnrollmentStore.open(tmp_path / "none.db")
    (tmp_path / "text.db").write_text("hello, not a database")
    with pytest.raises(StoreError, match="not an SQLite file"):
        EnrollmentStore.open(tmp_path / "text.db")
    other = sqlite3.connect(tmp_path / "other.db")
    other.execute("CREATE TABLE t (x)")
    other.commit()
    other.close()
    with pytest.raises(StoreError, match="not an enrollment store"):
        EnrollmentStore.open(tmp_path / "other.db", model_fingerprint=FP, embed_dim=4, create=True)
    _store(tmp_path).close()
    raw = sqlite3.connect(tmp_path / "s.db")
    raw.execute(
        "UPDATE meta SET value = ? WHERE key = 'schema_version'", (str(SCHEMA_VERSION + 1),)
    )
    raw.commit()
    raw.close()
    with pytest.raises(StoreError, match="newer"):
        EnrollmentStore.open(tmp_path / "s.db")
    with pytest.raises(StoreError, match="no speakers"):
        EnrollmentStore.open(
            tmp_path / "e.db", model_fingerprint=FP, embed_dim=4, create=True
        ).identify(np.ones(4), threshold=0.0, model_fingerprint=FP)


# -- real speech, the shipped model ------------------------------------------------------------

ENROLLED = 5


def _dev_speakers() -> list[str]:
    """The 25 speakers the shipped model never heard, in the order the bundle lists them."""
    return (default_model_path() / "dev_speakers.txt").read_text().split()


@pytest.mark.skipif(not default_model_path().is_dir(), reason="the default model is not installed")
def test_identifies_real_speakers_with_the_shipped_model(tmp_path, shared_data):
    """Five unseen speakers enrolled with 3 recordings each; 2 other recordings of each must come
    back with the right name, above the bundle's threshold.

    Two unenrolled speakers, next in the dev list: SPEAKER1044 (a 7-year-old girl) and SPEAKER2089
    (a 20-year-old woman); three of the enrolled are 6-year-olds. What the model does with them,
    measured when this test was written: the adult comes back "unknown" (best scores <= 0.0 against
    the 0.37 threshold), while the child is taken for the 6-year-old SPEAKER0001 (scores 0.48-0.61):
    the threshold is the EER point of single-recording trials, and children's voices are close
    for a model trained on 100 speakers. The child's scores must still stay below those of the
    right speaker's own recordings, which is what is asserted for it.
    """
    root = shared_data / "speechocean762" / "train"
    speakers = _dev_speakers()
    enrolled, child, adult = speakers[:ENROLLED], "SPEAKER1044", "SPEAKER2089"
    assert child in speakers and adult in speakers and not {child, adult} & set(enrolled)
    files = {s: sorted((root / s).glob("*.opus")) for s in [*enrolled, child, adult]}
    enc = SpeakerEncoder.from_pretrained()
    threshold = enc.bundle.threshold.value
    store = EnrollmentStore.open(
        tmp_path / "s.db", model_fingerprint=enc.fingerprint, embed_dim=enc.embed_dim, create=True
    )
    for name in enrolled:
        store.enroll(
            name,
            enc.embed_batch([load_audio(f) for f in files[name][:3]]),
            sources=[str(f) for f in files[name][:3]],
            model_fingerprint=enc.fingerprint,
        )

    def identify(path: Path):
        return store.identify(
            enc.embed(path), threshold=threshold, model_fingerprint=enc.fingerprint, top_k=3
        )

    own_scores: dict[str, list[float]] = {}
    for name in enrolled:
        for path in files[name][3:5]:
            result = identify(path)
            assert result.speaker == name, (path, result)
            own_scores.setdefault(name, []).append(result.score)

    for path in files[adult][3:6]:
        result = identify(path)
        assert result.speaker is None, (path, result)
        assert result.score < threshold

    for path in files[child][3:6]:
        result = identify(path)
        best = result.candidates[0][0]
        assert result.score < np.mean(own_scores[best]), (path, result, own_scores[best])
    store.close()


# -- the model's identity across releases --------------------------------------------------------


def _bundle(path: Path, seed: int) -> Path:
    torch.manual_seed(seed)
    model = create_model("ecapa_tdnn", channels=32, mfa_channels=96, embed_dim=24)
    return save_bundle(path, model, FbankConfig())


def _fingerprint_of_0_1_0(bundle: Path) -> str:
    """What speakerprint 0.1.0 recorded as a store's model (its eval.cache.bundle_fingerprint,
    which hashed the version in), written out here so the test holds the stores it made."""
    config = json.loads((bundle / "config.json").read_text())
    described = {
        "speakerprint_version": "0.1.0",
        "model": config["model"],
        "features": config["features"],
        "sample_rate": config["sample_rate"],
    }
    digest = hashlib.sha256(json.dumps(described, sort_keys=True).encode())
    digest.update((bundle / "model.safetensors").read_bytes())
    return digest.hexdigest()


def _recorded_fingerprint(db: Path) -> str:
    with sqlite3.connect(db) as raw:
        (value,) = raw.execute("SELECT value FROM meta WHERE key = 'model_fingerprint'").fetchone()
    return value


def test_a_store_opens_under_another_release_with_the_same_weights(tmp_path, monkeypatch):
    bundle, other = _bundle(tmp_path / "b", 0), _bundle(tmp_path / "other", 1)
    db = tmp_path / "s.db"
    monkeypatch.setattr(speakerprint, "__version__", "0.2.0")
    enc = SpeakerEncoder.from_pretrained(bundle)
    with open_store(db, model_fingerprint=enc.fingerprint, embed_dim=24, create=True) as store:
        store.enroll("ann", np.ones(24), model_fingerprint=enc.fingerprint)

    monkeypatch.setattr(speakerprint, "__version__", "0.3.0")
    upgraded = SpeakerEncoder.from_pretrained(bundle)  # its fingerprint computed afresh
    assert upgraded.fingerprint == enc.fingerprint
    with open_store(db, model_fingerprint=upgraded.fingerprint) as store:
        assert [e.name for e in store.speakers()] == ["ann"]
    # Other weights are still another model, under any release.
    stranger = SpeakerEncoder.from_pretrained(other)
    with pytest.raises(StoreError, match="another model"):
        open_store(
            db,
            model_fingerprint=stranger.fingerprint,
            legacy_fingerprints=stranger.legacy_fingerprints,
        )


def test_a_store_made_by_0_1_0_is_migrated_not_orphaned(tmp_path):
    bundle, other = _bundle(tmp_path / "b", 0), _bundle(tmp_path / "other", 1)
    db = tmp_path / "s.db"
    old = _fingerprint_of_0_1_0(bundle)
    with EnrollmentStore.open(db, model_fingerprint=old, embed_dim=24, create=True) as store:
        store.enroll("ann", np.ones((2, 24)), sources=["a1", "a2"], model_fingerprint=old)
    enc = SpeakerEncoder.from_pretrained(bundle)
    assert enc.fingerprint != old and enc.legacy_fingerprints == [old]

    # Without the legacy fingerprints the store looks like another model's (the bug).
    with pytest.raises(StoreError, match="another model"):
        open_store(db, model_fingerprint=enc.fingerprint)
    # Another model's legacy fingerprints do not adopt it, and change nothing.
    stranger = SpeakerEncoder.from_pretrained(other)
    with pytest.raises(StoreError, match="another model"):
        open_store(
            db,
            model_fingerprint=stranger.fingerprint,
            legacy_fingerprints=stranger.legacy_fingerprints,
        )
    assert _recorded_fingerprint(db) == old

    with open_store(
        db, model_fingerprint=enc.fingerprint, legacy_fingerprints=enc.legacy_fingerprints
    ) as store:
        assert store.model_fingerprint == enc.fingerprint
        assert [(e.name, e.num_embeddings) for e in store.speakers()] == [("ann", 2)]
        store.identify(np.ones(24), threshold=0.5, model_fingerprint=enc.fingerprint)
    assert _recorded_fingerprint(db) == enc.fingerprint  # rewritten on disk, once
    with open_store(db, model_fingerprint=enc.fingerprint) as store:
        assert isinstance(store, BaseEnrollmentStore)

    # A store opened without a model migrates when the model is checked against it.
    second = tmp_path / "second.db"
    EnrollmentStore.open(second, model_fingerprint=old, embed_dim=24, create=True).close()
    with open_store(second) as store:
        store.check_model(enc.fingerprint, enc.legacy_fingerprints)
        assert store.model_fingerprint == enc.fingerprint
    assert _recorded_fingerprint(second) == enc.fingerprint


def test_a_failed_migration_changes_nothing(tmp_path, monkeypatch):
    bundle = _bundle(tmp_path / "b", 0)
    db = tmp_path / "s.db"
    old = _fingerprint_of_0_1_0(bundle)
    EnrollmentStore.open(db, model_fingerprint=old, embed_dim=24, create=True).close()
    enc = SpeakerEncoder.from_pretrained(bundle)
    raw = sqlite3.connect(db)
    raw.execute(
        "CREATE TRIGGER no_rewrite BEFORE UPDATE ON meta BEGIN SELECT RAISE(ABORT, 'refused'); END"
    )
    raw.commit()
    raw.close()
    with pytest.raises(sqlite3.IntegrityError, match="refused"):
        open_store(db, model_fingerprint=enc.fingerprint, legacy_fingerprints=[old])
    assert _recorded_fingerprint(db) == old
