"""Tests of speakerprint.eval.conditions: condition keys and windows by hand, and embeddings under
each condition against the same crops cut by hand and embedded one at a time."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from speakerprint.audio import load_audio
from speakerprint.data.manifest import read_manifest
from speakerprint.eval import Condition, embed_condition
from speakerprint.eval.conditions import crop_windows
from speakerprint.eval.scoring import embed_utterances
from speakerprint.models.bundle import load_bundle


def test_keys_are_stable_and_name_only_what_matters():
    assert Condition().key() == "full"
    assert Condition("full", crop_s=7.0).key() == "full"
    assert Condition("crop").key() == "crop_3.0s"
    assert Condition("crop", crop_s=2).key() == "crop_2.0s"
    assert Condition("multi_crop", crop_s=2.5, num_crops=4).key() == "multi_crop_4x2.5s"
    assert Condition("crop", crop_s=3) == Condition("crop", crop_s=3.0)
    assert Condition("multi_crop", num_crops=5).to_dict() == {
        "kind": "multi_crop",
        "key": "multi_crop_5x3.0s",
        "crop_s": 3.0,
        "num_crops": 5,
    }
    assert Condition().to_dict() == {"kind": "full", "key": "full"}


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"kind": "half"}, "full, crop, multi_crop"),
        ({"kind": "crop", "crop_s": 0.0}, "positive"),
        ({"kind": "crop", "crop_s": float("nan")}, "positive"),
        ({"kind": "crop", "num_crops": 3}, "multi_crop"),
        ({"kind": "multi_crop", "num_crops": 0}, "at least 1"),
        ({"kind": "multi_crop", "num_crops": 2.0}, "int"),
    ],
)
def test_bad_conditions_say_why(kwargs, match):
    with pytest.raises(ValueError, match=match):
        Condition(**kwargs)


def test_windows():
    assert crop_windows(10.0, Condition()) == [(0.0, None)]
    assert crop_windows(10.0, Condition("crop")) == [(0.0, 3.0)]
    assert crop_windows(3.0, Condition("crop")) == [(0.0, None)]  # not longer: stays whole
    assert crop_windows(2.0, Condition("multi_crop", num_crops=4)) == [(0.0, None)]
    # Five crops of 3 s over 9 s: starts 0, 1.5, 3, 4.5, 6, the last one ending at the end.
    assert crop_windows(9.0, Condition("multi_crop", num_crops=5)) == [
        (0.0, 3.0),
        (1.5, 3.0),
        (3.0, 3.0),
        (4.5, 3.0),
        (6.0, 3.0),
    ]
    assert crop_windows(9.0, Condition("multi_crop", num_crops=1)) == [(0.0, 3.0)]


@pytest.fixture(scope="module")
def bundle_and_utts(tiny_bundle, demo_prepared):
    utts = sorted(read_manifest(demo_prepared / "dev.jsonl"), key=lambda u: u.duration_s)
    # The shortest (under 3 s), two in the middle and the longest (over 9 s).
    return load_bundle(tiny_bundle), [utts[0], utts[40], utts[41], utts[-1]]


def _embed_one(bundle, wav: np.ndarray) -> np.ndarray:
    return bundle.embed_batch(torch.from_numpy(wav)[None]).numpy()[0]


def test_full_is_embed_utterances(bundle_and_utts):
    bundle, utts = bundle_and_utts
    full = embed_condition(bundle, utts, Condition(), batch_size=3)
    old = embed_utterances(bundle, utts, batch_size=2)
    assert list(full) == [u.utt_id for u in utts]
    for u in utts:
        np.testing.assert_allclose(full[u.utt_id], old[u.utt_id], rtol=1e-5, atol=1e-5)
        assert full[u.utt_id].dtype == np.float32


def test_crop_embeds_the_first_seconds_and_keeps_short_utterances_whole(bundle_and_utts):
    bundle, utts = bundle_and_utts
    assert utts[0].duration_s < 3.0 < utts[-1].duration_s
    crop = embed_condition(bundle, utts, Condition("crop", crop_s=3.0), batch_size=4)
    for u in (utts[0], utts[-1]):
        wav = load_audio(u.path, 16000)[:48000]
        np.testing.assert_allclose(crop[u.utt_id], _embed_one(bundle, wav), rtol=1e-4, atol=1e-4)
    full = embed_condition(bundle, utts[-1:], Condition())
    assert not np.allclose(crop[utts[-1].utt_id], full[utts[-1].utt_id], atol=1e-3)
    # Deterministic: the same crop again gives the same embedding.
    again = embed_condition(bundle, utts, Condition("crop", crop_s=3.0), batch_size=1)
    for u in utts:
        np.testing.assert_allclose(again[u.utt_id], crop[u.utt_id], rtol=1e-5, atol=1e-5)


def test_multi_crop_is_the_mean_of_unit_crop_embeddings(bundle_and_utts):
    bundle, utts = bundle_and_utts
    condition = Condition("multi_crop", crop_s=2.5, num_crops=3)
    multi = embed_condition(bundle, utts, condition, batch_size=4)
    long_utt = utts[-1]
    wav = load_audio(long_utt.path, 16000)
    expected = []
    for start_s, duration_s in crop_windows(long_utt.duration_s, condition):
        start = int(round(start_s * 16000))
        emb = _embed_one(bundle, wav[start : start + int(duration_s * 16000)])
        expected.append(emb / np.linalg.norm(emb))
    assert len(expected) == 3
    np.testing.assert_allclose(multi[long_utt.utt_id], np.mean(expected, axis=0), atol=2e-4)
    # The shortest utterance is one whole crop, unit-normalised.
    short = utts[0]
    assert short.duration_s <= 2.5
    emb = _embed_one(bundle, load_audio(short.path, 16000))
    np.testing.assert_allclose(multi[short.utt_id], emb / np.linalg.norm(emb), atol=1e-4)


def test_no_utterances_give_no_embeddings(bundle_and_utts):
    bundle, _ = bundle_and_utts
    assert embed_condition(bundle, [], Condition("crop")) == {}
