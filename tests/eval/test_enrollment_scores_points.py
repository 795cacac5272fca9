"""Multi-utterance enrollment models, score files, the threshold table and open-set
identification in an evaluation run."""

from __future__ import annotations

import numpy as np
import pytest

from speakerprint.data.manifest import read_manifest
from speakerprint.data.trials import Trial, read_enrollment, read_trials
from speakerprint.errors import ManifestError
from speakerprint.eval import EmbeddingCache, bundle_fingerprint, embed_condition, evaluate
from speakerprint.eval.calibration import operating_points
from speakerprint.eval.identification import open_set_split
from speakerprint.eval.normalization import unit_rows
from speakerprint.eval.scorefile import check_same_trials, read_trial_scores, write_scores
from speakerprint.models.bundle import load_bundle


def test_enrollment_map_accumulates_models_over_lines(tmp_path):
    path = tmp_path / "enroll.txt"
    path.write_text("m1 a.wav b.wav\n\nm2 c.wav\nm1 d.wav\n")
    assert read_enrollment(path) == {"m1": ("a.wav", "b.wav", "d.wav"), "m2": ("c.wav",)}


def test_enrollment_map_lists_every_bad_line(tmp_path):
    path = tmp_path / "enroll.txt"
    path.write_text("m1 a.wav\nlonely\nm1 a.wav\n")
    with pytest.raises(ManifestError) as err:
        read_enrollment(path)
    message = str(err.value)
    assert f"{path}:2:" in message and f"{path}:3:" in message and "already in model" in message


def test_score_file_round_trip_and_errors(tmp_path):
    trials = [Trial(1, "a", "b"), Trial(0, "a", "c")]
    path = tmp_path / "scores.txt"
    write_scores(path, trials, [0.123456789012, -0.5])
    back, scores = read_trial_scores(path)
    assert back == trials
    np.testing.assert_allclose(scores, [0.123456789012, -0.5], rtol=1e-8)
    bad = tmp_path / "bad.txt"
    bad.write_text("1 a b 0.5\n2 a c 0.1\n1 a d nan\n1 a e\n")
    with pytest.raises(ManifestError) as err:
        read_trial_scores(bad)
    for line in (2, 3, 4):
        assert f"{bad}:{line}:" in str(err.value)
    with pytest.raises(ValueError, match="2 trials but 1 scores"):
        write_scores(path, trials, [0.1])


def test_systems_must_score_the_same_trials():
    a = [Trial(1, "x", "y"), Trial(0, "x", "z")]
    check_same_trials([("A", a), ("B", list(a))])
    with pytest.raises(ManifestError, match="B: trial 2"):
        check_same_trials([("A", a), ("B", [a[0], Trial(0, "x", "w")])])
    with pytest.raises(ManifestError, match="has 1 trials"):
        check_same_trials([("A", a), ("B", a[:1])])


@pytest.mark.parametrize("seed", range(5))
def test_operating_points_are_the_lowest_thresholds_meeting_each_target(seed):
    rng = np.random.default_rng(seed)
    labels = rng.permutation(np.repeat([1, 0], [300, 3000]))
    scores = np.round(np.where(labels == 1, 1.5, 0.0) + rng.normal(size=len(labels)), 2)
    points = {p.name: p for p in operating_points(scores, labels, fa_rates=(0.01,))}
    for point in points.values():  # the rates are those of the threshold, counted directly
        accepted = scores >= point.threshold
        assert point.false_accept_rate == pytest.approx(accepted[labels == 0].mean())
        assert point.miss_rate == pytest.approx((~accepted)[labels == 1].mean())
    fa = points["FA <= 1%"]
    assert fa.false_accept_rate <= 0.01
    lower = scores[scores < fa.threshold].max()  # the next operating point down lets in more
    assert (scores[labels == 0] >= lower).mean() > 0.01
    eer = points["EER"]
    assert abs(eer.false_accept_rate - eer.miss_rate) < 0.02


def test_open_set_split_holds_out_half_the_speakers_and_never_reuses_a_recording():
    ids = [f"s{s}/u{u}" for s in range(7) for u in range(5)]
    speakers = [i.split("/")[0] for i in ids]
    enrol, known, unknown = open_set_split(ids, speakers, seed=3)
    assert len(set(enrol) | set(known) | set(unknown)) == len(ids)
    assert not (set(enrol) & set(known)) and not (set(known) & set(unknown))
    held_out = {speakers[r] for r in unknown}
    assert len(held_out) == 3 and not held_out & {speakers[r] for r in enrol}
    assert {speakers[r] for r in known} == {speakers[r] for r in enrol}
    shuffled = np.random.default_rng(0).permutation(len(ids))
    again = open_set_split([ids[i] for i in shuffled], [speakers[i] for i in shuffled], seed=3)
    assert {ids[shuffled[r]] for r in again[2]} == {ids[r] for r in unknown}


@pytest.fixture(scope="module")
def dev(tiny_bundle, demo_prepared, tmp_path_factory):
    utts = read_manifest(demo_prepared / "dev.jsonl")
    cache = EmbeddingCache(tmp_path_factory.mktemp("cache"), bundle_fingerprint(tiny_bundle))
    return load_bundle(tiny_bundle), utts, read_trials(demo_prepared / "dev_trials.txt"), cache


def test_enrollment_models_score_against_the_mean_of_their_utterances(dev):
    bundle, utts, _, cache = dev
    by_speaker: dict[str, list[str]] = {}
    for u in sorted(utts, key=lambda u: u.utt_id):
        by_speaker.setdefault(u.speaker, []).append(u.utt_id)
    speakers = sorted(by_speaker)[:3]
    models = {f"{s}-model": by_speaker[s][:3] for s in speakers}
    tests = [by_speaker[s][-1] for s in speakers]
    trials = [
        Trial(int(s == t_speaker), f"{s}-model", test)
        for s in speakers
        for t_speaker, test in zip(speakers, tests)
    ]
    result = evaluate(bundle, utts, trials, enrollment=models, cache=cache)
    emb = embed_condition(bundle, utts, result.condition)
    for trial, score in zip(trials, result.scores):
        members = unit_rows(np.stack([emb[u] for u in models[trial.enrol]]).astype(np.float64))
        mean = unit_rows(members.sum(0, keepdims=True))[0]
        test = unit_rows(emb[trial.test][None].astype(np.float64))[0]
        assert score == pytest.approx(float(mean @ test), abs=1e-5)
    assert result.num_enrollment_models == 3
    assert list(result.trials) == trials


def test_bad_enrollment_models_are_reported_together(dev):
    bundle, utts, trials, _ = dev
    utt = utts[0].utt_id
    models = {utt: (utts[1].utt_id,), "m": ("nowhere.wav",), "empty": ()}
    with pytest.raises(ManifestError) as err:
        evaluate(bundle, utts, trials, enrollment=models, enrollment_path="E")
    message = str(err.value)
    assert "also an utterance id" in message and "nowhere.wav" in message
    assert "has no utterances" in message
    with pytest.raises(ManifestError, match="test side 'm' is an enrollment model"):
        evaluate(bundle, utts, [Trial(1, utt, "m")], enrollment={"m": (utt,)})


def test_open_set_at_the_raw_eer_threshold(dev):
    bundle, utts, trials, cache = dev
    result = evaluate(bundle, utts, trials, open_set=True, cache=cache)
    o = result.open_set
    assert o is not None and o.threshold == pytest.approx(result.metrics.eer_threshold)
    num_speakers = len({u.speaker for u in utts})
    assert o.num_speakers == num_speakers - num_speakers // 2
    assert o.num_known + o.num_unknown + o.num_speakers <= len(utts)
    assert 0.0 <= o.false_accept_rate <= 1.0
    assert o.correct_accept_rate + o.misidentification_rate <= 1.0
    assert [p.name for p in result.operating_points][0] == "EER"
    assert result.to_dict()["open_set_identification"]["threshold"] == o.threshold
