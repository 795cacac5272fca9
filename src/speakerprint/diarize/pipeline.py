"""``diarize(path)``: who spoke when in one recording.

Steps: VAD and sliding-window embeddings, streamed (:mod:`.windows`); clustering of the
normalised embeddings (:mod:`.cluster`); turns at frame resolution (:mod:`.resegment`); labels
``SPEAKER_00``, ... in order of first appearance, or the names of enrolled speakers the clusters
match (``store``).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import numpy as np

from speakerprint.data.rttm import Turn
from speakerprint.diarize.cluster import SpeakerBounds, cluster_embeddings, normalised_centroids
from speakerprint.diarize.resegment import frame_turns
from speakerprint.diarize.result import DiarizationResult, SpeakerCluster
from speakerprint.diarize.windows import embed_speech_windows
from speakerprint.errors import BundleError, ConfigError
from speakerprint.inference.encoder import SpeakerEncoder

__all__ = ["DEFAULT_THRESHOLD", "diarize"]

#: Cosine threshold of clustering for a model without a measured decision threshold.
DEFAULT_THRESHOLD = 0.5


def _encoder(encoder: SpeakerEncoder | str | os.PathLike | None) -> SpeakerEncoder:
    if isinstance(encoder, SpeakerEncoder):
        return encoder
    return SpeakerEncoder.from_pretrained(encoder)


def _threshold(encoder: SpeakerEncoder, threshold: float | None) -> tuple[float, str]:
    try:
        return encoder.bundle.decision_threshold(threshold)
    except BundleError:  # no measured threshold: the documented default
        return DEFAULT_THRESHOLD, "default"


def _enrolled_names(store, encoder: SpeakerEncoder, centroids: np.ndarray) -> dict[int, tuple]:
    """{cluster: (name, score)} for clusters whose centroid reaches the model's decision
    threshold with an enrolled speaker's mean; each name goes to one cluster, best pairs first."""
    from speakerprint.inference.store import BaseEnrollmentStore, open_store

    threshold, _ = encoder.bundle.decision_threshold(None)
    opened = not isinstance(store, BaseEnrollmentStore)
    db = open_store(store) if opened else store
    try:
        db.check_model(encoder.fingerprint, encoder.legacy_fingerprints)
        names, means = db.speaker_means()
    finally:
        if opened:
            db.close()
    if not names:
        return {}
    scores = centroids @ np.asarray(means, dtype=np.float64).T  # (K, S)
    named: dict[int, tuple] = {}
    used: set[int] = set()
    for flat in np.argsort(-scores, axis=None):
        k, s = np.unravel_index(int(flat), scores.shape)
        if scores[k, s] < threshold:
            break
        if k not in named and s not in used:
            named[int(k)] = (names[s], float(scores[k, s]))
            used.add(int(s))
    return named


def diarize(
    path: str | os.PathLike,
    *,
    encoder: SpeakerEncoder | str | os.PathLike | None = None,
    num_speakers: int | None = None,
    min_speakers: int = 1,
    max_speakers: int = 8,
    method: str = "ahc",
    threshold: float | None = None,
    window_s: float = 1.5,
    hop_s: float = 0.75,
    vad: str | Callable | None = "energy",
    store=None,
    min_turn_s: float = 0.3,
    frame_s: float = 0.1,
    progress: bool = False,
) -> DiarizationResult:
    """Who spoke when in the recording ``path``.

    Args:
        encoder: a loaded :class:`SpeakerEncoder`, or a model name for ``from_pretrained``
            (None: the shipped model).
        num_speakers: the number of speakers when known; else it is found, between
            ``min_speakers`` and ``max_speakers``.
        method: "ahc" (agglomerative, average linkage on cosine, cut at ``threshold``) or
            "spectral" (eigengap of a pruned cosine affinity).
        threshold: cosine similarity at which two groups of windows are one speaker; default
            the model's measured decision threshold, else :data:`DEFAULT_THRESHOLD`.
        window_s, hop_s: embedding windows and their spacing, in seconds.
        vad: "energy", "silero", a detector ``vad(wav, sample_rate)``, or None (all speech).
        store: an enrollment store (path, URL or opened store) made with the same model: a
            cluster matching an enrolled speaker above the model's threshold takes the name.
        min_turn_s: shortest turn kept between turns of other speakers.
        frame_s: resolution of turn boundaries.
        progress: show a progress bar on stderr.

    Returns:
        :class:`DiarizationResult`; no speech gives no turns and a note saying so.

    Raises:
        AudioLoadError: a missing or unreadable file.
        ConfigError: bad options. StoreError: a store of another model.
    """
    bounds = SpeakerBounds(num_speakers, min_speakers, max_speakers)
    for name, value in (("min_turn_s", min_turn_s), ("frame_s", frame_s)):
        if not (isinstance(value, (int, float)) and value >= 0 and np.isfinite(value)):
            raise ConfigError(f"{name} must be a number of seconds >= 0, got {value!r}")
    if frame_s <= 0:
        raise ConfigError(f"frame_s must be > 0, got {frame_s!r}")
    enc = _encoder(encoder)
    threshold_value, source = _threshold(enc, threshold)
    speech = embed_speech_windows(
        enc, path, window_s=window_s, hop_s=hop_s, vad=vad, progress=progress
    )
    file_id = Path(path).stem

    def result(turns, clusters, notes) -> DiarizationResult:
        return DiarizationResult(
            file_id, turns, clusters, speech.duration_s, method, threshold_value, source, notes
        )

    if len(speech.embeddings) == 0:
        return result([], [], [f"{path}: no speech found (vad={vad!r}), so no speakers"])
    emb = speech.embeddings.astype(np.float64)
    # Windows over short speech regions embed poorly and would form clusters of their own:
    # cluster the full-length ones, then give each short one its nearest centroid.
    full = (speech.ends_s - speech.starts_s) >= window_s / 2
    if not full.any():
        full[:] = True
    labels = np.zeros(len(emb), dtype=np.int64)
    labels[full] = cluster_embeddings(
        emb[full], method=method, threshold=threshold_value, bounds=bounds
    )
    num_clusters = int(labels[full].max()) + 1
    centroids = normalised_centroids(emb[full], labels[full], num_clusters)
    similarity = emb @ centroids.T
    labels[~full] = np.argmax(similarity[~full], axis=1)
    spans = frame_turns(
        speech.regions_s,
        speech.starts_s,
        speech.ends_s,
        similarity,
        frame_s=frame_s,
        min_turn_s=min_turn_s,
    )
    named = {} if store is None else _enrolled_names(store, enc, centroids)
    return result(*_labelled(file_id, spans, labels, named, num_clusters), [])


def _labelled(
    file_id: str, spans: list, window_labels: np.ndarray, named: dict, num_clusters: int
) -> tuple[list[Turn], list[SpeakerCluster]]:
    """Turns and clusters with their labels: enrolled names, else ``SPEAKER_00``, ... in order
    of first appearance in the turns. A cluster that lost all its frames to resegmentation is
    not a speaker."""
    order = list(dict.fromkeys(k for _, _, k in spans))
    label, next_number = {}, 0
    for k in order:
        if k in named:
            label[k] = named[k][0]
        else:
            label[k], next_number = f"SPEAKER_{next_number:02d}", next_number + 1
    turns = [Turn(file_id, start, end - start, label[k]) for start, end, k in spans]
    counts = np.bincount(window_labels, minlength=num_clusters)
    clusters = [
        SpeakerCluster(
            label[k],
            int(counts[k]),
            sum(end - start for start, end, j in spans if j == k),
            named[k][1] if k in named else None,
        )
        for k in order
    ]
    return turns, clusters
