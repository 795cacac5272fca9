"""Tests of speakerprint.data.trials: the VoxCeleb format, made trial lists, id checks."""

from __future__ import annotations

import random
import time
from collections import Counter
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from speakerprint.data import (
    DEFAULT_TRIALS_PER_UTTERANCE,
    Trial,
    Utterance,
    check_trials_against,
    make_trials,
    read_trials,
    write_trials,
)
from speakerprint.errors import ManifestError

VOX1_O = (
    Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "voxceleb1" / "veri_test.txt"
)


def _utts(sizes: list[int]) -> list[Utterance]:
    return [
        Utterance(f"spk{s}/sess{u % 2}/{u:03d}.wav", f"/data/{s}/{u}.wav", f"spk{s}", 1.0, 16000)
        for s, size in enumerate(sizes)
        for u in range(size)
    ]


def _check_invariants(trials: list[Trial], utts: list[Utterance], num_target: int) -> None:
    speaker_of = {u.utt_id: u.speaker for u in utts}
    labels = Counter(t.label for t in trials)
    assert labels == {1: num_target, 0: num_target}
    pairs = [(t.enrol, t.test) for t in trials]
    assert len(set(pairs)) == len(pairs), "duplicate pair"
    for trial in trials:
        assert trial.enrol < trial.test  # unordered pairs, stored once; never a self pair
        assert (speaker_of[trial.enrol] == speaker_of[trial.test]) == (trial.label == 1)
    assert pairs == sorted(pairs)


# --- reading and writing ----------------------------------------------------------------------


@pytest.mark.skipif(not VOX1_O.exists(), reason="shared VoxCeleb1-O trial list not present")
def test_reads_the_real_voxceleb1_o_list_quickly():
    start = time.perf_counter()
    trials = read_trials(VOX1_O)
    elapsed = time.perf_counter() - start
    assert len(trials) == 37_720
    assert sum(t.label for t in trials) == 18_860
    assert trials[:3] == [
        Trial(1, "id10270/x6uYqmx31kE/00001.wav", "id10270/8jEAjG6SegY/00008.wav"),
        Trial(0, "id10270/x6uYqmx31kE/00001.wav", "id10300/ize_eiCFEg0/00003.wav"),
        Trial(1, "id10270/x6uYqmx31kE/00001.wav", "id10270/GWXujl-xAVM/00017.wav"),
    ]
    assert elapsed < 2.0  # ~0.15 s here; generous for a loaded machine
    ids = {t.enrol for t in trials} | {t.test for t in trials}
    assert len({i.split("/")[0] for i in ids}) == 40


def test_round_trip(tmp_path):
    trials = [Trial(1, "a/1.wav", "a/2.wav"), Trial(0, "a/1.wav", "b/ü.wav")]
    write_trials(tmp_path / "t.txt", trials)
    assert (tmp_path / "t.txt").read_text(
        encoding="utf-8"
    ) == "1 a/1.wav a/2.wav\n0 a/1.wav b/ü.wav\n"
    assert read_trials(tmp_path / "t.txt") == trials


def test_every_bad_line_is_reported_and_empty_lines_ignored(tmp_path):
    path = tmp_path / "t.txt"
    path.write_text("1 a b\n\n2 a b\n1 a\n0\ta\tb\nyes a b\n1 a b c\n  \n0 a c\n")
    with pytest.raises(ManifestError) as info:
        read_trials(path)
    message = str(info.value)
    assert message.startswith(f"{path}: 4 problem(s) in trial list:")
    assert f"{path}:3: label must be 0 or 1, got '2'" in message
    assert f"{path}:4: expected 3 fields 'LABEL ENROL TEST', got 2" in message
    assert f"{path}:6: label must be 0 or 1, got 'yes'" in message
    assert f"{path}:7: expected 3 fields 'LABEL ENROL TEST', got 4" in message
    for good in (1, 2, 5, 8, 9):
        assert f"{path}:{good}:" not in message


def test_missing_trial_list_names_the_file(tmp_path):
    with pytest.raises(ManifestError, match="trial list not found: .*nope.txt"):
        read_trials(tmp_path / "nope.txt")


@pytest.mark.parametrize(
    "bad", [Trial(2, "a", "b"), Trial(1, "a b", "c"), Trial(0, "a", ""), Trial(True, "a", "b")]
)
def test_write_refuses_unreadable_trials(tmp_path, bad):
    with pytest.raises(ValueError):
        write_trials(tmp_path / "t.txt", [Trial(1, "a", "b"), bad])
    assert not (tmp_path / "t.txt").exists()


def test_check_trials_against_lists_unknown_ids(tmp_path):
    trials = [Trial(1, "a", "b"), Trial(0, "a", "zz"), Trial(1, "yy", "b"), Trial(0, "q", "q")]
    check_trials_against(trials[:1], {"a", "b"}, tmp_path / "t.txt")  # all known: no error
    with pytest.raises(ManifestError) as info:
        check_trials_against(trials, ["a", "b"], tmp_path / "t.txt")
    message = str(info.value)
    assert f"{tmp_path / 't.txt'}: trial 2: 'zz' not in the manifest" in message
    assert f"{tmp_path / 't.txt'}: trial 3: 'yy' not in the manifest" in message
    assert f"{tmp_path / 't.txt'}: trial 4: 'q' not in the manifest" in message
    assert "trial 1:" not in message


# --- making trial lists -----------------------------------------------------------------------


def test_make_trials_is_balanced_valid_and_deterministic():
    utts = _utts([2, 3, 5, 8, 10, 1])
    trials = make_trials(utts, num_target=40, seed=3)
    _check_invariants(trials, utts, 40)
    shuffled = utts[:]
    random.Random(0).shuffle(shuffled)
    assert make_trials(shuffled, num_target=40, seed=3) == trials  # input order does not matter
    assert make_trials(utts, num_target=40, seed=4) != trials


def test_make_trials_spreads_use_evenly():
    # 12 speakers x 10 utterances: 540 target pairs, take 300 -> each utterance ~5 target trials.
    utts = _utts([10] * 12)
    trials = make_trials(utts, num_target=300, seed=0)
    for label in (0, 1):
        use = Counter()
        for trial in trials:
            if trial.label == label:
                use.update([trial.enrol, trial.test])
        counts = [use[u.utt_id] for u in utts]
        assert sum(counts) == 600
        # The mean use is 5; ring-by-ring drawing keeps everyone within a few of it.
        assert min(counts) >= 3 and max(counts) <= 7, (label, sorted(counts))


def test_make_trials_shares_target_pairs_by_utterance_count():
    # Speaker sizes 2 and 20: proportional shares of 30 are 30*2/22 ~ 2.7 and 27.3, but the
    # small speaker has a single pair, so it gets 1 and the large one the other 29.
    utts = _utts([2, 20])
    trials = make_trials(utts, num_target=30, seed=0)
    targets = Counter(t.enrol.split("/")[0] for t in trials if t.label == 1)
    assert targets == {"spk0": 1, "spk1": 29}


def test_make_trials_default_size():
    # Few utterances: every target pair (3 speakers x C(4, 2) = 18 < 20 * 12 / 2 = 120).
    utts = _utts([4, 4, 4])
    assert sum(t.label for t in make_trials(utts)) == 18
    # Many utterances: DEFAULT_TRIALS_PER_UTTERANCE * N / 2 target trials.
    utts = _utts([30] * 10)
    expected = DEFAULT_TRIALS_PER_UTTERANCE * 300 // 2
    trials = make_trials(utts)
    _check_invariants(trials, utts, expected)


@pytest.mark.parametrize(
    ("sizes", "num_target", "message"),
    [
        ([5], None, "all utterances are of one speaker"),
        ([1, 1, 1], None, "no speaker has two utterances"),
        ([2, 2], 3, "num_target must be between 1 and 2"),
        ([3, 3], 0, "num_target must be between 1"),
    ],
)
def test_make_trials_rejects_impossible_requests(sizes, num_target, message):
    with pytest.raises(ValueError, match=message):
        make_trials(_utts(sizes), num_target=num_target)


def test_make_trials_rejects_duplicate_and_whitespace_ids():
    utts = _utts([2, 2])
    with pytest.raises(ValueError, match="duplicate"):
        make_trials([*utts, utts[0]])
    with pytest.raises(ValueError, match="whitespace"):
        make_trials([*utts, Utterance("spk9/a b.wav", "/x", "spk9", 1.0, 16000)])


@settings(max_examples=40, deadline=None)
@given(
    sizes=st.lists(st.integers(min_value=1, max_value=9), min_size=2, max_size=7).filter(
        lambda sizes: max(sizes) >= 2
    ),
    fraction=st.floats(min_value=0.0, max_value=1.0),
    seed=st.integers(min_value=0, max_value=2**32 - 1),
)
def test_make_trials_invariants_hold_for_any_sizes(sizes, fraction, seed):
    utts = _utts(sizes)
    max_target = sum(n * (n - 1) // 2 for n in sizes)
    max_nontarget = sum(sizes) * (sum(sizes) - 1) // 2 - max_target
    num_target = max(1, round(fraction * min(max_target, max_nontarget)))
    trials = make_trials(utts, num_target=num_target, seed=seed)
    _check_invariants(trials, utts, num_target)
    assert make_trials(utts, num_target=num_target, seed=seed) == trials
