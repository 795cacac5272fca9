"""The enrollment-mean bias: an utterance looks closer to its speaker's mean when the mean
includes it.

Identification and open-set tests often enrol a speaker as the mean of their utterances and then
score those same utterances against it ("inclusive"). Each utterance then contributes 1/n of
its own reference, so its score is inflated, by roughly 1/sqrt(n) for unrelated vectors; the
honest score leaves the utterance out of the mean ("leave-one-out"). The gap between the two
shrinks as speakers have more utterances, and is largest for the few-utterance speakers of
small corpora.

>>> emb, speakers = random_speaker_embeddings(20, 3, 192)
>>> result = enrollment_bias(emb, speakers)
>>> bool(result.gap > 0.3)
True
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from speakerprint.utils.linalg import l2_normalize_rows
from speakerprint.viz._common import new_figure

if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.figure import Figure

__all__ = [
    "EnrollmentBias",
    "enrollment_bias",
    "plot_enrollment_bias",
    "random_speaker_embeddings",
]


@dataclass(frozen=True)
class EnrollmentBias:
    """Cosine of each utterance with its speaker's mean, with and without the utterance in it.

    Attributes:
        inclusive: (N,) cosine with the mean of all the speaker's unit embeddings.
        leave_one_out: (N,) cosine with the mean of the speaker's other unit embeddings.
        gap: mean(inclusive) - mean(leave_one_out).
        num_speakers: speakers with at least 2 utterances (the only ones counted).
        utterances_per_speaker: mean utterances of those speakers.
    """

    inclusive: np.ndarray
    leave_one_out: np.ndarray
    gap: float
    num_speakers: int
    utterances_per_speaker: float


def enrollment_bias(emb: np.ndarray, speakers: Sequence[str]) -> EnrollmentBias:
    """The inclusive and leave-one-out cosines of every utterance of a speaker with >= 2.

    Args:
        emb: (N, D) embeddings (normalised here).
        speakers: (N,) the speaker of each row.
    """
    x = l2_normalize_rows(np.asarray(emb, dtype=np.float64))
    speakers = np.asarray(speakers)
    if len(speakers) != len(x):
        raise ValueError(f"{len(x)} embeddings but {len(speakers)} speaker labels")
    names, label = np.unique(speakers, return_inverse=True)
    counts = np.bincount(label, minlength=len(names))
    keep = counts[label] >= 2
    if not keep.any():
        raise ValueError("no speaker has 2 or more utterances")
    sums = np.zeros((len(names), x.shape[1]))
    np.add.at(sums, label, x)
    own_sum = sums[label]  # (N, D) sum of the speaker's unit embeddings, this one included
    inclusive = np.einsum("nd,nd->n", x, l2_normalize_rows(own_sum))
    leave_one_out = np.einsum("nd,nd->n", x, l2_normalize_rows(own_sum - x))
    inclusive, leave_one_out = inclusive[keep], leave_one_out[keep]
    return EnrollmentBias(
        inclusive=inclusive,
        leave_one_out=leave_one_out,
        gap=float(inclusive.mean() - leave_one_out.mean()),
        num_speakers=int((counts >= 2).sum()),
        utterances_per_speaker=float(counts[counts >= 2].mean()),
    )


def random_speaker_embeddings(
    num_speakers: int, per_speaker: int, dim: int, *, seed: int = 0
) -> tuple[np.ndarray, list[str]]:
    """Independent standard-normal vectors (num_speakers * per_speaker, dim), labelled with
    ``per_speaker`` utterances per speaker: speakers with no structure at all, so that any
    inclusive-over-leave-one-out gap is the bias alone."""
    if num_speakers < 1 or per_speaker < 1 or dim < 1:
        raise ValueError("num_speakers, per_speaker and dim must be at least 1")
    rng = np.random.default_rng(seed)
    emb = rng.standard_normal((num_speakers * per_speaker, dim))
    speakers = [f"spk{i:05d}" for i in range(num_speakers) for _ in range(per_speaker)]
    return emb, speakers


def _histograms(ax, result: EnrollmentBias, title: str) -> None:
    edges = np.histogram_bin_edges(np.r_[result.inclusive, result.leave_one_out], bins=50)
    ax.hist(
        result.inclusive,
        bins=edges,
        alpha=0.6,
        color="tab:orange",
        label=f"mean includes it (mean {result.inclusive.mean():.3f})",
    )
    ax.hist(
        result.leave_one_out,
        bins=edges,
        alpha=0.6,
        color="tab:blue",
        label=f"leave-one-out (mean {result.leave_one_out.mean():.3f})",
    )
    ax.set_title(
        f"{title}\n{result.num_speakers} speakers x {result.utterances_per_speaker:.1f} "
        f"utterances: gap {result.gap:+.3f}",
        fontsize="medium",
    )
    ax.set_xlabel("cosine with the speaker's mean")
    ax.set_ylabel("utterances")
    ax.legend(fontsize="x-small", loc="upper left")


def plot_enrollment_bias(
    random_result: EnrollmentBias,
    gap_by_count: Sequence[tuple[int, float]],
    *,
    dim: int,
    real_result: EnrollmentBias | None = None,
    real_name: str = "real embeddings",
) -> Figure:
    """Histograms for random vectors (and real embeddings, when given), and the random vectors'
    gap against utterances per speaker ``[(n, gap)]`` beside 1/sqrt(n)."""
    panels = 3 if real_result is not None else 2
    fig = new_figure(4.8 * panels, 4.2)
    axes = fig.subplots(1, panels)
    _histograms(axes[0], random_result, f"random vectors, D = {dim}")
    if real_result is not None:
        _histograms(axes[1], real_result, real_name)
    ax = axes[-1]
    counts = np.array([n for n, _ in gap_by_count], dtype=np.float64)
    gaps = np.array([g for _, g in gap_by_count])
    ax.plot(counts, gaps, "o-", label=f"random vectors, D = {dim}")
    ax.plot(counts, 1.0 / np.sqrt(counts), ":", color="0.4", label="1/sqrt(n)")
    if real_result is not None:
        ax.plot(
            [real_result.utterances_per_speaker],
            [real_result.gap],
            "s",
            color="tab:red",
            label=real_name,
        )
    ax.set_xscale("log")
    ax.set_xticks(counts, [f"{n:g}" for n in counts])
    ax.minorticks_off()
    ax.set_xlabel("utterances per speaker n")
    ax.set_ylabel("gap (inclusive - leave-one-out)")
    ax.set_title("the bias shrinks with more utterances", fontsize="medium")
    ax.grid(True, linewidth=0.4, alpha=0.6)
    ax.legend(fontsize="x-small")
    return fig
