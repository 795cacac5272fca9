"""SpeakerBalancedBatchSampler: P speakers x K utterances per batch, deterministic, resumable."""

from __future__ import annotations

from collections import Counter

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from speakerprint.data.dataset import EpochBatchSampler, SpeakerBalancedBatchSampler


def _labels(counts: list[int]) -> list[int]:
    """Utterance labels, speakers interleaved so that indices do not follow speakers."""
    labels = [s for s, n in enumerate(counts) for _ in range(n)]
    return labels[::2] + labels[1::2]


# Six speakers with unequal numbers of utterances, one with a single utterance.
LABELS = _labels([9, 4, 1, 6, 3, 7])


def _batches(labels=LABELS, p=3, k=2, **kwargs):
    kwargs = {"seed": 0, "epoch": 0, **kwargs}
    return list(SpeakerBalancedBatchSampler(labels, p, k, **kwargs))


def test_every_batch_has_p_speakers_of_k_adjacent_items():
    batches = _batches(p=3, k=2)
    assert len(batches) == len(LABELS) // 6
    for batch in batches:
        speakers = [LABELS[i] for i, _ in batch]
        assert len(batch) == 6
        assert Counter(speakers) == Counter({s: 2 for s in set(speakers)})
        assert len(set(speakers)) == 3
        assert all(speakers[j] == speakers[j + 1] for j in range(0, 6, 2))  # adjacent


def test_length_and_batches_per_epoch_match_the_epoch_sampler():
    assert SpeakerBalancedBatchSampler.batches_per_epoch(100, 12) == 8
    assert EpochBatchSampler.batches_per_epoch(100, 12) == 8
    sampler = SpeakerBalancedBatchSampler(LABELS, 2, 3, seed=0, epoch=0, start_batch=1)
    assert len(sampler) == len(LABELS) // 6 - 1 == len(list(sampler))


def test_batches_are_determined_by_seed_and_epoch():
    full = _batches(seed=1, epoch=2)
    assert full == _batches(seed=1, epoch=2)
    assert full != _batches(seed=1, epoch=3)
    assert full != _batches(seed=2, epoch=2)


def test_start_batch_gives_the_tail_of_the_epoch():
    full = _batches(p=2, k=2, seed=3, epoch=1)
    for start in range(len(full) + 1):
        assert _batches(p=2, k=2, seed=3, epoch=1, start_batch=start) == full[start:]


def test_labels_need_not_be_contiguous():
    # Speakers are taken in label order, so an order-keeping relabelling gives the same batches.
    relabelled = [{0: -3, 1: 0, 2: 5, 3: 7, 4: 12, 5: 40}[s] for s in LABELS]
    assert _batches(relabelled, seed=4) == _batches(LABELS, seed=4)


@settings(max_examples=40, deadline=None)
@given(
    counts=st.lists(st.integers(1, 12), min_size=4, max_size=9),
    p=st.integers(2, 4),
    k=st.integers(2, 4),
    seed=st.integers(0, 2**32 - 1),
)
def test_speakers_and_their_utterances_are_used_evenly(counts, p, k, seed):
    labels = _labels(counts)
    assume(len(labels) >= p * k)
    batches = _batches(labels, p=p, k=k, seed=seed, epoch=seed % 7)
    appearances = Counter()  # batches each speaker is in
    uses = Counter()  # times each utterance is used
    for batch in batches:
        speakers = {labels[i] for i, _ in batch}
        assert len(speakers) == p
        appearances.update(speakers)
        uses.update(i for i, _ in batch)
        # A speaker with at least K utterances repeats none within a batch.
        for s in speakers:
            items = [i for i, _ in batch if labels[i] == s]
            assert len(set(items)) == min(k, counts[s])
    # Each shuffled speaker order is used up before the next: batches per speaker differ by <= 1.
    per_speaker = [appearances[s] for s in range(len(counts))]
    assert max(per_speaker) - min(per_speaker) <= 1
    # Each speaker cycles through its own shuffled utterances: uses differ by <= 1 within it.
    for s in range(len(counts)):
        per_utt = [uses[i] for i, label in enumerate(labels) if label == s]
        assert max(per_utt) - min(per_utt) <= 1


def test_a_speaker_with_fewer_than_k_utterances_repeats_them_as_different_crops():
    labels = [0] * 13 + [1] * 13 + [2]  # speaker 2 has one utterance (index 26)
    batches = _batches(labels, p=3, k=3, seed=5)
    assert len(batches) == 3  # 3 speakers of 3: every batch holds speaker 2
    for batch in batches:
        assert sum(i == 26 for i, _ in batch) == 3
    crop_seeds = [seed for batch in batches for _, seed in batch]
    assert len(set(crop_seeds)) == len(crop_seeds)  # every repeat is a different crop
    assert all(isinstance(i, int) and isinstance(s, int) for b in batches for i, s in b)


@pytest.mark.parametrize(
    "labels, p, k, kwargs, message",
    [
        (LABELS, 1, 2, {}, "speakers_per_batch must be at least 2"),
        (LABELS, 2, 1, {}, "utterances_per_speaker must be at least 2"),
        (LABELS, 7, 2, {}, "only 6 speakers"),
        ([0, 0, 1, 1, 2], 3, 2, {}, "fewer than one batch"),
        (LABELS, 2, 2, {"start_batch": 8}, "start_batch"),
        (LABELS, 2, 2, {"start_batch": -1}, "start_batch"),
    ],
)
def test_bad_arguments_are_value_errors(labels, p, k, kwargs, message):
    with pytest.raises(ValueError, match=message):
        SpeakerBalancedBatchSampler(labels, p, k, seed=0, epoch=0, **kwargs)
