"""2-D projections of utterance embeddings, coloured by speaker, one panel per model.

The TitaNet comparisons of models are of this kind: the same utterances embedded by several
models, projected to the plane, the speakers' clusters compared by eye. Each panel's title also
gives a number that does not depend on the projection: the silhouette of the speaker clusters
under cosine distance in the embedding space itself (1: tight separate clusters, 0: overlapping).

Speakers the model was trained on (``seen``) are drawn as filled circles, others as crosses: a
model separates its training speakers more easily than new ones, and the figure shows by how much.

>>> utts = select_utterances(read_manifest("dev.jsonl"), max_speakers=10)  # doctest: +SKIP
>>> emb = embed_manifest("runs/x/bundle", utts)  # doctest: +SKIP
>>> xy = project(np.stack([emb[u.utt_id] for u in utts]), method="svd")  # doctest: +SKIP
>>> analysis = project_bundles(["runs/x/bundle"], utts, method="svd")  # doctest: +SKIP
>>> fig = plot_projections(analysis.panels, analysis.speakers, analysis.seen)  # doctest: +SKIP
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from speakerprint.data.manifest import Utterance
from speakerprint.inference.extract import embed_manifest
from speakerprint.utils.linalg import l2_normalize_rows
from speakerprint.viz._common import VIZ_HINT, new_figure, speaker_colours

if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.figure import Figure

__all__ = [
    "PROJECTION_METHODS",
    "ProjectionPanel",
    "ProjectionAnalysis",
    "embed_manifest_utterances",
    "plot_projections",
    "project",
    "project_bundles",
    "select_from_manifests",
    "select_utterances",
    "speaker_silhouette",
]

PROJECTION_METHODS = ("umap", "svd", "tsne")


def select_utterances(
    utts: Sequence[Utterance],
    *,
    max_speakers: int | None = None,
    max_per_speaker: int | None = None,
    seed: int = 0,
) -> list[Utterance]:
    """At most ``max_speakers`` speakers (drawn at random), at most ``max_per_speaker`` of each
    one's utterances (drawn at random); sorted by speaker, then utterance id. None: no cap.

    >>> utts = [Utterance(f"{s}/{i}", f"{s}{i}.wav", s, 1.0, 16000) for s in "abc" for i in range(5)]
    >>> picked = select_utterances(utts, max_speakers=2, max_per_speaker=3)
    >>> len(picked), len({u.speaker for u in picked})
    (6, 2)
    """
    for name, cap in [("max_speakers", max_speakers), ("max_per_speaker", max_per_speaker)]:
        if cap is not None and cap < 1:
            raise ValueError(f"{name} must be at least 1, got {cap}")
    rng = np.random.default_rng(seed)
    by_speaker: dict[str, dict[str, Utterance]] = {}
    for utt in utts:
        by_speaker.setdefault(utt.speaker, {})[utt.utt_id] = utt
    speakers = sorted(by_speaker)
    if max_speakers is not None and len(speakers) > max_speakers:
        speakers = sorted(rng.choice(speakers, size=max_speakers, replace=False).tolist())
    picked: list[Utterance] = []
    for speaker in speakers:
        ids = sorted(by_speaker[speaker])
        if max_per_speaker is not None and len(ids) > max_per_speaker:
            ids = sorted(rng.choice(ids, size=max_per_speaker, replace=False).tolist())
        picked.extend(by_speaker[speaker][i] for i in ids)
    return picked


#: The former name of :func:`speakerprint.inference.extract.embed_manifest`.
embed_manifest_utterances = embed_manifest


def select_from_manifests(
    manifests: Sequence[str | os.PathLike],
    *,
    max_speakers: int | None = None,
    max_per_speaker: int | None = None,
    seed: int = 0,
) -> list[Utterance]:
    """:func:`select_utterances` from each manifest (the caps apply to each, so a dev and a
    training manifest give both kinds of speaker), merged by ``utt_id`` and sorted by speaker,
    then utterance id."""
    from speakerprint.data.manifest import read_manifest

    by_id: dict[str, Utterance] = {}
    for path in manifests:
        picked = select_utterances(
            read_manifest(path),
            max_speakers=max_speakers,
            max_per_speaker=max_per_speaker,
            seed=seed,
        )
        by_id.update((u.utt_id, u) for u in picked)
    return sorted(by_id.values(), key=lambda u: (u.speaker, u.utt_id))


@dataclass(frozen=True)
class ProjectionAnalysis:
    """What :func:`project_bundles` measured: one panel per bundle over the same utterances.

    Attributes:
        panels: one per bundle, in order, each with its projection and silhouette.
        bundles: the bundle paths, in the order of ``panels``.
        speakers: (N,) the speaker of each utterance.
        seen: (N,) whether that speaker was in the training manifest.
    """

    panels: list[ProjectionPanel]
    bundles: list[str]
    speakers: list[str]
    seen: list[bool]

    @property
    def num_seen_speakers(self) -> int:
        return len({s for s, k in zip(self.speakers, self.seen) if k})


def project_bundles(
    bundles: Sequence[str | os.PathLike],
    utts: Sequence[Utterance],
    *,
    method: str = "svd",
    seen_speakers: set[str] | frozenset[str] = frozenset(),
    seed: int = 0,
    cache_dir: str | os.PathLike | None = None,
    batch_size: int = 16,
    device: str = "cpu",
    progress: bool = False,
) -> ProjectionAnalysis:
    """Embed ``utts`` with each bundle (:func:`speakerprint.inference.extract.embed_manifest`,
    through the cache given ``cache_dir``), project each to 2-D and measure its speaker
    silhouette.

    Raises:
        ConfigError: an unknown method or fewer than 3 utterances.
    """
    from speakerprint.errors import ConfigError
    from speakerprint.viz._common import bundle_label

    if method not in PROJECTION_METHODS:
        raise ConfigError(
            f"--method must be one of {', '.join(PROJECTION_METHODS)}, got {method!r}"
        )
    if len(utts) < 3:
        raise ConfigError(f"need at least 3 utterances to project, the manifests give {len(utts)}")
    speakers = [u.speaker for u in utts]
    panels = []
    for bundle in bundles:
        emb_by_id = embed_manifest(
            bundle,
            utts,
            cache_dir=cache_dir,
            batch_size=batch_size,
            device=device,
            progress=progress,
        )
        emb = np.stack([emb_by_id[u.utt_id] for u in utts])
        xy = project(emb, method=method, seed=seed)
        panels.append(ProjectionPanel(bundle_label(bundle), xy, speaker_silhouette(emb, speakers)))
    return ProjectionAnalysis(
        panels, [str(b) for b in bundles], speakers, [s in seen_speakers for s in speakers]
    )


def project(emb: np.ndarray, *, method: str = "svd", seed: int = 0) -> np.ndarray:
    """Project embeddings (N, D) to (N, 2) after L2 normalisation (cosine geometry).

    ``svd``: the first two principal components (centred, exact, fast); ``tsne``: t-SNE with
    cosine distances (scikit-learn); ``umap``: UMAP with cosine distances (umap-learn; its first
    call compiles with numba, tens of seconds).
    """
    emb = np.asarray(emb, dtype=np.float64)
    if emb.ndim != 2 or emb.shape[0] < 3:
        raise ValueError(f"need at least 3 embeddings as an (N, D) array, got {emb.shape}")
    if method not in PROJECTION_METHODS:
        raise ValueError(
            f"unknown method {method!r}; choose one of {', '.join(PROJECTION_METHODS)}"
        )
    x = l2_normalize_rows(emb)
    if method == "svd":
        centred = x - x.mean(axis=0)
        _, _, vt = np.linalg.svd(centred, full_matrices=False)
        xy = centred @ vt[:2].T
        if xy.shape[1] < 2:
            xy = np.pad(xy, ((0, 0), (0, 2 - xy.shape[1])))
        return xy
    if method == "tsne":
        try:
            from sklearn.manifold import TSNE
        except ImportError:
            raise ImportError(f"t-SNE needs scikit-learn: {VIZ_HINT}") from None
        perplexity = float(min(30.0, max(2.0, (len(x) - 1) / 3)))
        tsne = TSNE(2, metric="cosine", init="pca", perplexity=perplexity, random_state=seed)
        return tsne.fit_transform(x)
    try:
        import umap
    except ImportError:
        raise ImportError(f"UMAP needs umap-learn: {VIZ_HINT}") from None
    neighbours = int(min(15, len(x) - 1))
    reducer = umap.UMAP(
        n_components=2, metric="cosine", n_neighbors=neighbours, random_state=seed, n_jobs=1
    )
    return np.asarray(reducer.fit_transform(x))


def speaker_silhouette(emb: np.ndarray, speakers: Sequence[str]) -> float | None:
    """Mean silhouette of the speaker clusters under cosine distance in the embedding space:
    (b - a) / max(a, b) per utterance, a its mean distance to its own speaker's other
    utterances, b to the nearest other speaker's. None with fewer than 2 speakers.

    >>> e = np.array([[1, 0.0], [1, 0.1], [0, 1.0], [0.1, 1]])
    >>> round(speaker_silhouette(e, ["a", "a", "b", "b"]), 2)
    0.99
    """
    labels = np.unique(np.asarray(speakers), return_inverse=True)[1]
    num = labels.max() + 1 if len(labels) else 0
    if num < 2 or num >= len(labels):
        return None
    x = l2_normalize_rows(np.asarray(emb, dtype=np.float64))
    dist = 1.0 - x @ x.T  # (N, N) cosine distance
    onehot = np.eye(num)[labels]  # (N, S)
    counts = onehot.sum(axis=0)  # (S,)
    mean_to = dist @ onehot  # (N, S) summed distance to each speaker
    own = counts[labels] - 1
    a = np.where(own > 0, mean_to[np.arange(len(x)), labels] / np.maximum(own, 1), 0.0)
    mean_to = mean_to / counts
    mean_to[np.arange(len(x)), labels] = np.inf
    b = mean_to.min(axis=1)
    s = np.where(own > 0, (b - a) / np.maximum(np.maximum(a, b), 1e-12), 0.0)
    return float(s.mean())


@dataclass(frozen=True)
class ProjectionPanel:
    """One model's panel: its name, the (N, 2) projection and the silhouette in its title."""

    name: str
    xy: np.ndarray
    silhouette: float | None = None


def plot_projections(
    panels: Sequence[ProjectionPanel],
    speakers: Sequence[str],
    seen: Sequence[bool] | None = None,
    *,
    method: str = "svd",
) -> Figure:
    """Panels side by side; utterance n is drawn in its speaker's colour, a filled circle when
    ``seen[n]`` (the model was trained on that speaker), a cross otherwise."""
    if not panels:
        raise ValueError("plot_projections needs at least one panel")
    speakers = list(speakers)
    seen_mask = np.zeros(len(speakers), bool) if seen is None else np.asarray(seen, bool)
    names = sorted(set(speakers))
    colour_of = dict(zip(names, speaker_colours(len(names))))
    colours = np.array([colour_of[s] for s in speakers])
    fig = new_figure(4.6 * len(panels) + 0.4, 4.8)
    axes = np.atleast_1d(fig.subplots(1, len(panels)))
    for ax, panel in zip(axes, panels):
        if panel.xy.shape != (len(speakers), 2):
            raise ValueError(f"panel {panel.name}: xy must be ({len(speakers)}, 2)")
        for mask, marker, what in [
            (seen_mask, "o", "seen in training"),
            (~seen_mask, "x", "unseen"),
        ]:
            if not mask.any():
                continue
            count = len({s for s, m in zip(speakers, mask) if m})
            label = f"{what} ({count} speakers)"
            ax.scatter(*panel.xy[mask].T, c=colours[mask], marker=marker, s=18, label=label)
        title = panel.name
        if panel.silhouette is not None:
            title += f"\nspeaker silhouette (cosine, {len(names)} speakers) {panel.silhouette:.3f}"
        ax.set_title(title, fontsize="medium")
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_xlabel(f"{method} 1")
        ax.set_ylabel(f"{method} 2")
        ax.legend(loc="best", fontsize="x-small")
    fig.suptitle(
        f"{len(speakers)} utterances of {len(names)} speakers, one colour a speaker",
        fontsize="medium",
    )
    return fig
