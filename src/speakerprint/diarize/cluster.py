"""Clustering window embeddings into speakers: agglomerative on cosine, or spectral with an
eigengap estimate of the number of speakers.

Both take length-normalised embeddings (N, D) and return one cluster index per window, numbered
0..K-1; both honour a given number of speakers or the bounds ``min_speakers``/``max_speakers``,
and neither fails on 0, 1 or 2 windows or on identical windows. scikit-learn does the work (the
``diarize`` extra).

>>> emb = np.array([[1.0, 0.0], [0.99, 0.14], [0.0, 1.0], [0.14, 0.99]])
>>> cluster_embeddings(emb, method="ahc", threshold=0.5).tolist()
[0, 0, 1, 1]
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from speakerprint.errors import ConfigError

__all__ = ["CLUSTER_METHODS", "SpeakerBounds", "cluster_embeddings", "normalised_centroids"]

CLUSTER_METHODS: tuple[str, ...] = ("ahc", "spectral")
#: The most speakers the eigengap looks for (the bound only clamps what it finds).
MAX_EIGENGAP_SPEAKERS = 20
DIARIZE_HINT = "pip install 'speakerprint[diarize]'"


@dataclass(frozen=True)
class SpeakerBounds:
    """How many speakers a recording may have: exactly ``num_speakers`` when given, else
    between ``min_speakers`` and ``max_speakers``."""

    num_speakers: int | None = None
    min_speakers: int = 1
    max_speakers: int = 8

    def __post_init__(self) -> None:
        for name in ("num_speakers", "min_speakers", "max_speakers"):
            value = getattr(self, name)
            if value is None and name == "num_speakers":
                continue
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"{name} must be a whole number >= 1, got {value!r}")
        if self.min_speakers > self.max_speakers:
            raise ConfigError(
                f"min_speakers ({self.min_speakers}) is above max_speakers ({self.max_speakers})"
            )

    def range_for(self, num_windows: int) -> tuple[int, int]:
        """(lowest, highest) number of clusters for ``num_windows`` windows (never above it)."""
        if self.num_speakers is not None:
            k = min(self.num_speakers, num_windows)
            return k, k
        return min(self.min_speakers, num_windows), min(self.max_speakers, num_windows)


def _sklearn_cluster():
    try:
        import sklearn.cluster
    except ImportError:
        raise ImportError(f"diarization's clustering needs scikit-learn: {DIARIZE_HINT}") from None
    return sklearn.cluster


def normalised_centroids(emb: np.ndarray, labels: np.ndarray, num_clusters: int) -> np.ndarray:
    """(K, D): the length-normalised mean of each cluster's (normalised) embeddings."""
    centroids = np.zeros((num_clusters, emb.shape[1]), dtype=np.float64)
    np.add.at(centroids, labels, emb)
    norms = np.linalg.norm(centroids, axis=1, keepdims=True)
    return centroids / np.maximum(norms, 1e-12)


def cluster_embeddings(
    emb: np.ndarray,
    *,
    method: str = "ahc",
    threshold: float,
    bounds: SpeakerBounds | None = None,
) -> np.ndarray:
    """Cluster index (N,) int of each row of ``emb`` (N, D), length-normalised.

    ``threshold`` is a cosine similarity: two groups of windows whose average similarity
    reaches it are one speaker (agglomerative, distance threshold ``1 - threshold``); for
    spectral clustering it merges clusters whose centroids reach it, so a one-speaker
    recording is not split by the eigengap, which cannot answer "one".
    """
    if method not in CLUSTER_METHODS:
        raise ConfigError(f"method must be one of {', '.join(CLUSTER_METHODS)}, got {method!r}")
    bounds = bounds or SpeakerBounds()
    emb = np.asarray(emb, dtype=np.float64)
    num_windows = len(emb)
    if num_windows <= 1:
        return np.zeros(num_windows, dtype=np.int64)
    low, high = bounds.range_for(num_windows)
    if method == "ahc":
        labels = _agglomerative(emb, threshold, low, high)
    else:
        labels = _spectral(emb, low, high)
        if low < high or bounds.num_speakers is None:
            labels = _merge_close(emb, labels, threshold, low)
    return _renumbered(labels)


def _agglomerative(emb: np.ndarray, threshold: float, low: int, high: int) -> np.ndarray:
    cluster = _sklearn_cluster()

    def fit(**kwargs) -> np.ndarray:
        model = cluster.AgglomerativeClustering(metric="cosine", linkage="average", **kwargs)
        return model.fit_predict(emb)

    if low == high:
        return fit(n_clusters=low)
    # Distances of identical windows are 0; a threshold of 0 would split them, so keep it > 0.
    labels = fit(n_clusters=None, distance_threshold=max(1.0 - threshold, 1e-6))
    found = len(np.unique(labels))
    if found < low or found > high:
        labels = fit(n_clusters=min(max(found, low), high))
    return labels


def _spectral(emb: np.ndarray, low: int, high: int) -> np.ndarray:
    """Eigengap of the normalised Laplacian of a pruned cosine affinity; k-means on its
    eigenvectors (as NeMo's and pyannote's spectral clustering do)."""
    cluster = _sklearn_cluster()
    num_windows = len(emb)
    affinity = np.clip(emb @ emb.T, 0.0, 1.0)
    # Keep each window's strongest neighbours only: within-speaker links dominate the graph.
    keep = max(2, int(np.ceil(0.2 * num_windows)))
    if keep < num_windows:
        cut = np.sort(affinity, axis=1)[:, -keep][:, None]
        affinity = np.where(affinity >= cut, affinity, 0.0)
    affinity = (affinity + affinity.T) / 2
    degree = np.maximum(affinity.sum(axis=1), 1e-12)
    scale = 1.0 / np.sqrt(degree)
    laplacian = np.eye(num_windows) - scale[:, None] * affinity * scale[None, :]
    eigenvalues, eigenvectors = np.linalg.eigh((laplacian + laplacian.T) / 2)
    if low == high:
        k = low
    else:
        # The gap after the k-th smallest eigenvalue, for every k the windows allow: a count
        # found above max_speakers is clamped to it, not replaced by the best gap below it.
        gaps = np.diff(eigenvalues[: min(num_windows, MAX_EIGENGAP_SPEAKERS + 1)])
        k = min(max(1 + int(np.argmax(gaps)), low), high) if len(gaps) else low
    if k == 1:
        return np.zeros(num_windows, dtype=np.int64)
    features = eigenvectors[:, :k]
    features = features / np.maximum(np.linalg.norm(features, axis=1, keepdims=True), 1e-12)
    return cluster.KMeans(n_clusters=k, n_init=10, random_state=0).fit_predict(features)


def _merge_close(emb: np.ndarray, labels: np.ndarray, threshold: float, low: int) -> np.ndarray:
    """Merge the two clusters whose centroids are most similar while that similarity reaches
    ``threshold`` and more than ``low`` clusters remain."""
    labels = _renumbered(labels)
    while True:
        k = int(labels.max()) + 1
        if k <= low:
            return labels
        centroids = normalised_centroids(emb, labels, k)
        similarity = centroids @ centroids.T
        np.fill_diagonal(similarity, -np.inf)
        a, b = np.unravel_index(int(np.argmax(similarity)), similarity.shape)
        if similarity[a, b] < threshold:
            return labels
        labels = _renumbered(np.where(labels == max(a, b), min(a, b), labels))


def _renumbered(labels: np.ndarray) -> np.ndarray:
    """Cluster indices 0..K-1 in order of first appearance."""
    labels = np.asarray(labels)
    _, first = np.unique(labels, return_index=True)
    order = labels[np.sort(first)]
    mapping = {int(old): new for new, old in enumerate(order)}
    return np.array([mapping[int(x)] for x in labels], dtype=np.int64)
