"""Clustering and resegmentation on hand-made embeddings: known answers, and no crash on the
degenerate inputs diarization can hand them (0, 1, 2 or identical windows)."""

from __future__ import annotations

import numpy as np
import pytest

from speakerprint.diarize import SpeakerBounds, cluster_embeddings
from speakerprint.diarize.resegment import frame_turns
from speakerprint.errors import ConfigError

METHODS = ("ahc", "spectral")


def _speakers(num_speakers: int, per_speaker: int, noise: float = 0.3, seed: int = 0):
    """Unit vectors around ``num_speakers`` random directions in 32 dimensions."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(num_speakers, 32))
    labels = np.repeat(np.arange(num_speakers), per_speaker)
    emb = centres[labels] / np.linalg.norm(centres[labels], axis=1, keepdims=True)
    emb = emb + noise * rng.normal(size=emb.shape) / np.sqrt(32)
    return emb / np.linalg.norm(emb, axis=1, keepdims=True), labels


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("num_speakers", [1, 2, 3, 5])
def test_the_number_of_speakers_is_found(method, num_speakers):
    emb, truth = _speakers(num_speakers, 12)
    labels = cluster_embeddings(emb, method=method, threshold=0.5)
    assert labels.tolist() == truth.tolist()  # numbered in order of first appearance


@pytest.mark.parametrize("method", METHODS)
def test_the_bounds_are_honoured(method):
    emb, _ = _speakers(4, 8)
    assert cluster_embeddings(emb, method=method, threshold=0.5, bounds=SpeakerBounds(2)).max() == 1
    high = SpeakerBounds(min_speakers=1, max_speakers=3)
    assert cluster_embeddings(emb, method=method, threshold=0.5, bounds=high).max() == 2
    one, _ = _speakers(1, 10)
    low = SpeakerBounds(min_speakers=2, max_speakers=4)
    assert cluster_embeddings(one, method=method, threshold=0.5, bounds=low).max() == 1


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("count", [0, 1, 2, 3])
def test_few_or_identical_windows_do_not_crash(method, count):
    same = np.tile([[0.6, 0.8]], (count, 1))
    labels = cluster_embeddings(same, method=method, threshold=0.5, bounds=SpeakerBounds(None))
    assert labels.tolist() == [0] * count
    forced = cluster_embeddings(same, method=method, threshold=0.5, bounds=SpeakerBounds(3))
    assert len(forced) == count and (count == 0 or forced.max() < count)


def test_bad_bounds_and_methods_are_config_errors():
    with pytest.raises(ConfigError, match="min_speakers"):
        SpeakerBounds(min_speakers=3, max_speakers=2)
    with pytest.raises(ConfigError, match="num_speakers"):
        SpeakerBounds(0)
    with pytest.raises(ConfigError, match="method"):
        cluster_embeddings(np.eye(3), method="kmeans", threshold=0.5)


def test_turn_boundaries_are_not_on_the_hop_grid():
    # speaker 0 until 4.33 s, speaker 1 after, windows of 1.5 s every 0.75 s over [0, 9]
    starts = np.arange(0, 7.6, 0.75)
    ends = starts + 1.5
    share_of_1 = np.clip((ends - 4.33) / 1.5, 0, 1)
    similarity = np.stack([1 - share_of_1, share_of_1], axis=1)
    turns = frame_turns(np.array([[0.0, 9.0]]), starts, ends, similarity, frame_s=0.1)
    assert [k for _, _, k in turns] == [0, 1]
    assert abs(turns[0][1] - 4.33) < 0.15 and turns[0][1] not in (3.75, 4.5)
    assert turns[0][0] == 0.0 and turns[-1][1] == 9.0


def test_a_short_run_between_other_speakers_is_absorbed():
    starts = np.arange(0, 8.6, 0.1)
    ends = starts + 0.1
    similarity = np.tile([[1.0, 0.0]], (len(starts), 1))
    similarity[40:42] = [0.0, 1.0]  # 0.2 s of speaker 1 inside speaker 0
    turns = frame_turns(np.array([[0.0, 8.6]]), starts, ends, similarity, min_turn_s=0.3)
    assert len(turns) == 1 and turns[0][2] == 0
