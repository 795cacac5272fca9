"""Resegmentation: speaker turns at frame resolution from cluster-labelled windows.

Windows overlap and are ``hop_s`` apart, so labelling whole windows would put every turn
boundary on the hop grid. Instead the speech is cut into short frames; each frame takes the
speaker its covering windows resemble most: the sum, over the windows covering the frame's
centre, of each window's cosine similarity to each speaker's centroid, weighted by how close
the frame lies to the window's centre (a window says most about its middle). Runs of frames of
one speaker become turns, bounded by the VAD's region edges; a run shorter than
``min_turn_s`` that touches another speaker's run is given to the neighbour it resembles more.
"""

from __future__ import annotations

import numpy as np

__all__ = ["frame_turns"]


def _frames(regions_s: np.ndarray, frame_s: float) -> tuple[np.ndarray, np.ndarray]:
    """Starts and ends (F,) of frames of ``frame_s`` over each region, the last of each region
    cut at its end."""
    starts, ends = [], []
    for region_start, region_end in regions_s:
        edges = np.arange(region_start, region_end, frame_s)
        starts.append(edges)
        ends.append(np.minimum(edges + frame_s, region_end))
    if not starts:
        return np.zeros(0), np.zeros(0)
    return np.concatenate(starts), np.concatenate(ends)


def _frame_scores(
    centres: np.ndarray, starts_s: np.ndarray, ends_s: np.ndarray, similarity: np.ndarray
) -> np.ndarray:
    """(F, K) similarity of each frame to each speaker, weighted by the covering windows."""
    scores = np.zeros((len(centres), similarity.shape[1]))
    covered = np.zeros(len(centres), dtype=bool)
    for start, end, row in zip(starts_s, ends_s, similarity):
        first, last = np.searchsorted(centres, [start, end], side="left")
        if last <= first:
            continue
        half = max((end - start) / 2, 1e-9)
        weight = 1.0 - np.abs(centres[first:last] - (start + end) / 2) / half
        scores[first:last] += np.maximum(weight, 0.05)[:, None] * row[None, :]
        covered[first:last] = True
    if not covered.all():  # a frame no window covers (rounding at region edges)
        window_centres = (starts_s + ends_s) / 2
        for f in np.flatnonzero(~covered):
            scores[f] = similarity[int(np.argmin(np.abs(window_centres - centres[f])))]
    return scores


def _runs(labels: np.ndarray, joined: np.ndarray) -> np.ndarray:
    """(R, 2) first and one-past-last frame of each run of one label; ``joined[f]`` says frame
    f+1 follows frame f without a gap."""
    breaks = np.flatnonzero((labels[1:] != labels[:-1]) | ~joined) + 1
    edges = np.concatenate([[0], breaks, [len(labels)]])
    return np.stack([edges[:-1], edges[1:]], axis=1)


def _absorb_short_runs(
    labels: np.ndarray,
    scores: np.ndarray,
    frame_starts: np.ndarray,
    frame_ends: np.ndarray,
    joined: np.ndarray,
    min_turn_s: float,
) -> np.ndarray:
    labels = labels.copy()
    while True:
        runs = _runs(labels, joined)
        durations = frame_ends[runs[:, 1] - 1] - frame_starts[runs[:, 0]]
        candidates = []
        for r in np.argsort(durations, kind="stable"):
            if durations[r] >= min_turn_s:
                break
            first, last = runs[r]
            neighbours = []
            if first > 0 and joined[first - 1]:
                neighbours.append(labels[first - 1])
            if last < len(labels) and joined[last - 1]:
                neighbours.append(labels[last])
            if neighbours:
                candidates.append((first, last, neighbours))
                break
        if not candidates:
            return labels
        first, last, neighbours = candidates[0]
        totals = scores[first:last].sum(axis=0)
        labels[first:last] = max(neighbours, key=lambda k: totals[k])


def frame_turns(
    regions_s: np.ndarray,
    starts_s: np.ndarray,
    ends_s: np.ndarray,
    similarity: np.ndarray,
    *,
    frame_s: float = 0.1,
    min_turn_s: float = 0.3,
) -> list[tuple[float, float, int]]:
    """Turns ``(start_s, end_s, cluster)`` in time order.

    Args:
        regions_s: (R, 2) speech regions in seconds, in order.
        starts_s, ends_s: (N,) window bounds in seconds, in order of start.
        similarity: (N, K) cosine of each window with each cluster's centroid.
        frame_s: resolution of the turn boundaries inside speech.
        min_turn_s: shortest turn kept between two turns of other speakers.
    """
    frame_starts, frame_ends = _frames(regions_s, frame_s)
    if len(frame_starts) == 0 or similarity.shape[1] == 0:
        return []
    centres = (frame_starts + frame_ends) / 2
    scores = _frame_scores(centres, starts_s, ends_s, similarity)
    labels = np.argmax(scores, axis=1)
    joined = np.isclose(frame_ends[:-1], frame_starts[1:])
    if similarity.shape[1] > 1:
        labels = _absorb_short_runs(labels, scores, frame_starts, frame_ends, joined, min_turn_s)
    return [
        (float(frame_starts[first]), float(frame_ends[last - 1]), int(labels[first]))
        for first, last in _runs(labels, joined)
    ]
