"""Tests of speakerprint.eval.scoring.evaluate with its options: each figure equals the same
figure computed from the parts (embed, score, normalise, identify), and bad settings fail before
any audio is embedded."""

from __future__ import annotations

import json

import numpy as np
import pytest

from speakerprint.data.manifest import read_manifest
from speakerprint.data.trials import read_trials
from speakerprint.eval import (
    Condition,
    EmbeddingCache,
    bundle_fingerprint,
    closed_set_identification,
    cohort_from_manifest,
    compute_min_dcf,
    compute_verification_metrics,
    embed_condition,
    evaluate,
    normalize_scores,
)
from speakerprint.eval.scoring import cosine_scores
from speakerprint.models.bundle import Bundle, load_bundle


@pytest.fixture(scope="module")
def setup(tiny_bundle, demo_prepared, tmp_path_factory):
    """The tiny bundle, the demo dev set, a cohort of 3 utterances of each of the 22 training
    speakers, and one cache folder shared by the tests so that each condition is embedded once."""
    cohort = []
    seen: dict[str, int] = {}
    for utt in read_manifest(demo_prepared / "train.jsonl"):
        if seen.get(utt.speaker, 0) < 3:
            cohort.append(utt)
            seen[utt.speaker] = seen.get(utt.speaker, 0) + 1
    cache = EmbeddingCache(tmp_path_factory.mktemp("cache"), bundle_fingerprint(tiny_bundle))
    return {
        "bundle": load_bundle(tiny_bundle),
        "utts": read_manifest(demo_prepared / "dev.jsonl"),
        "trials": read_trials(demo_prepared / "dev_trials.txt"),
        "cohort": cohort,
        "cache": cache,
    }


def _run(setup, **kwargs):
    return evaluate(setup["bundle"], setup["utts"], setup["trials"], cache=setup["cache"], **kwargs)


def test_plain_run_reports_min_dcf_at_both_priors(setup):
    result = _run(setup)
    labels = np.array([t.label for t in setup["trials"]])
    assert result.metrics == compute_verification_metrics(result.scores, labels, p_target=0.01)
    assert [d.p_target for d in result.min_dcfs] == [0.01, 0.05]
    assert result.min_dcfs[1] == compute_min_dcf(result.scores, labels, p_target=0.05)
    assert result.normalization.method == "none" and result.identification == ()
    # Another p_target is added to the two, in order.
    other = _run(setup, p_target=0.001)
    assert [d.p_target for d in other.min_dcfs] == [0.001, 0.01, 0.05]
    assert other.metrics.p_target == 0.001


@pytest.mark.parametrize("method", ["znorm", "tnorm", "snorm"])
def test_normalised_scores_equal_the_parts(setup, method):
    condition = Condition("crop", crop_s=2.0)
    result = _run(setup, condition=condition, norm=method, cohort=setup["cohort"])
    bundle, trials = setup["bundle"], setup["trials"]
    emb = embed_condition(bundle, setup["utts"], condition)
    cohort = cohort_from_manifest(
        setup["cohort"], embed_condition(bundle, setup["cohort"], condition)
    )
    expected = normalize_scores(method, emb, trials, cosine_scores(emb, trials), cohort)
    np.testing.assert_allclose(result.scores, expected, rtol=1e-4, atol=1e-4)
    n = result.normalization
    assert (n.method, n.num_cohort_speakers, n.num_cohort_utterances, n.top_k) == (
        method,
        22,
        66,
        None,
    )
    assert n.num_overlapping_speakers == 0 and result.condition == condition


def test_asnorm_top_k_defaults_to_the_cohort_size_and_says_so(setup):
    default = _run(setup, norm="asnorm", cohort=setup["cohort"])
    assert default.normalization.top_k == 22
    assert "300" in default.normalization.note and "s-norm" in default.normalization.note
    snorm = _run(setup, norm="snorm", cohort=setup["cohort"])
    np.testing.assert_allclose(default.scores, snorm.scores, rtol=1e-9, atol=1e-9)
    top5 = _run(setup, norm="asnorm", cohort=setup["cohort"], top_k=5)
    assert top5.normalization.top_k == 5 and top5.normalization.note == ""
    assert not np.allclose(top5.scores, snorm.scores)


def test_identification_over_the_manifest(setup):
    result = _run(setup, identification=True)
    assert [r.mode for r in result.identification] == ["inclusive", "leave_one_out"]
    utts = sorted(setup["utts"], key=lambda u: u.utt_id)
    emb = embed_condition(setup["bundle"], utts)
    matrix = np.stack([emb[u.utt_id] for u in utts])
    speakers = [u.speaker for u in utts]
    for r in result.identification:
        expected = closed_set_identification(matrix, speakers, mode=r.mode)
        assert r.num_tested == expected.num_tested == len(utts)
        assert r.top1_accuracy == pytest.approx(expected.top1_accuracy, abs=1.5 / len(utts))
        assert r.num_speakers == 10
    inclusive, loo = result.identification
    assert inclusive.top1_accuracy >= loo.top1_accuracy  # the utterance votes for itself


def test_record_is_json_with_every_setting(setup):
    result = _run(
        setup,
        condition=Condition("multi_crop", crop_s=2.0, num_crops=2),
        norm="asnorm",
        cohort=setup["cohort"],
        cohort_name="train.jsonl",
        top_k=10,
        identification=True,
    )
    record = json.loads(json.dumps(result.to_dict()))
    assert record["condition"] == {
        "kind": "multi_crop",
        "key": "multi_crop_2x2.0s",
        "crop_s": 2.0,
        "num_crops": 2,
    }
    assert record["normalization"]["method"] == "asnorm"
    assert record["normalization"]["top_k"] == 10
    assert record["normalization"]["cohort"] == "train.jsonl"
    assert [d["p_target"] for d in record["min_dcf_by_p_target"]] == [0.01, 0.05]
    assert {"eer", "min_dcf", "p_target", "mean_target_score"} <= set(record)
    assert len(record["identification"]) == 2


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"norm": "snorm"}, "needs a cohort"),
        ({"norm": "bnorm"}, "unknown normalisation"),
        ({"norm": "none", "cohort": "cohort"}, "norm is 'none'"),
        ({"norm": "snorm", "cohort": "cohort", "top_k": 5}, "AS-norm only"),
        ({"norm": "asnorm", "cohort": "cohort", "top_k": 23}, "between 2 and the cohort size"),
    ],
)
def test_bad_settings_fail_before_embedding(setup, monkeypatch, kwargs, match):
    def fail(*args, **kwargs):
        raise AssertionError("embedded before checking the settings")

    monkeypatch.setattr(Bundle, "embed_batch", fail)
    if kwargs.get("cohort") == "cohort":
        kwargs["cohort"] = setup["cohort"]
    with pytest.raises(ValueError, match=match):
        evaluate(setup["bundle"], setup["utts"], setup["trials"], **kwargs)
