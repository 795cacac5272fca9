"""Test conditions: how much of each test utterance the encoder sees, and embedding under one.

Published figures differ in this as much as in the model: some systems embed whole utterances,
some cut test audio to a fixed length (the MindSpore ECAPA recipe cut it to 3 s), some average
the embeddings of several crops. A :class:`Condition` names the choice, so that a figure can say
which one it is::

    full        the whole utterance
    crop        one crop of crop_s seconds from the start (deterministic); shorter ones stay whole
    multi_crop  num_crops crops of crop_s seconds, evenly spaced from the start to the end of the
                utterance; the embedding is the mean of their L2-normalised embeddings

>>> Condition("multi_crop", crop_s=3.0, num_crops=5).key()
'multi_crop_5x3.0s'
>>> crop_windows(7.0, Condition("multi_crop", crop_s=3.0, num_crops=3))
[(0.0, 3.0), (2.0, 3.0), (4.0, 3.0)]
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from torch.utils.data import DataLoader
from tqdm import tqdm

from speakerprint.data.dataset import (
    UtteranceDataset,
    collate_padded,
    fork_workers,
    length_sorted_batches,
    loader_worker_init,
)
from speakerprint.data.manifest import Utterance
from speakerprint.eval.normalization import unit_rows
from speakerprint.models.bundle import Bundle

__all__ = [
    "CONDITION_KINDS",
    "DEFAULT_CROP_S",
    "DEFAULT_NUM_CROPS",
    "FULL",
    "Condition",
    "crop_windows",
    "embed_condition",
]

CONDITION_KINDS = ("full", "crop", "multi_crop")
DEFAULT_CROP_S = 3.0
# Five 3 s crops cover an 8 s utterance (VoxCeleb's mean length) with a little overlap.
DEFAULT_NUM_CROPS = 5


@dataclass(frozen=True)
class Condition:
    """A test condition; ``crop_s`` matters only for crops, ``num_crops`` only for multi_crop.

    Attributes:
        kind: one of :data:`CONDITION_KINDS`.
        crop_s: length of each crop in seconds, > 0.
        num_crops: number of crops for ``multi_crop``, >= 1; must be 1 for ``crop``.

    Two conditions with the same :meth:`key` give the same embeddings.

    >>> Condition().key(), Condition("crop").key()
    ('full', 'crop_3.0s')
    """

    kind: str = "full"
    crop_s: float = DEFAULT_CROP_S
    num_crops: int = 1

    def __post_init__(self) -> None:
        if self.kind not in CONDITION_KINDS:
            raise ValueError(
                f"unknown condition {self.kind!r}; choose one of {', '.join(CONDITION_KINDS)}"
            )
        if isinstance(self.crop_s, bool) or not isinstance(self.crop_s, (int, float)):
            raise ValueError(f"crop_s must be a number of seconds, got {self.crop_s!r}")
        if not (math.isfinite(self.crop_s) and self.crop_s > 0):
            raise ValueError(f"crop_s must be a positive number of seconds, got {self.crop_s}")
        if isinstance(self.num_crops, bool) or not isinstance(self.num_crops, int):
            raise ValueError(f"num_crops must be an int, got {self.num_crops!r}")
        if self.num_crops < 1:
            raise ValueError(f"num_crops must be at least 1, got {self.num_crops}")
        if self.kind == "crop" and self.num_crops != 1:
            raise ValueError(
                f"the 'crop' condition takes one crop, got num_crops={self.num_crops} "
                "(use 'multi_crop' for several)"
            )
        object.__setattr__(self, "crop_s", float(self.crop_s))

    def key(self) -> str:
        """A stable name, safe in file names: ``full``, ``crop_3.0s``, ``multi_crop_5x3.0s``."""
        if self.kind == "full":
            return "full"
        if self.kind == "crop":
            return f"crop_{self.crop_s!r}s"
        return f"multi_crop_{self.num_crops}x{self.crop_s!r}s"

    def to_dict(self) -> dict[str, str | float | int]:
        """The settings that matter for this kind, plus the key; for JSON records."""
        record: dict[str, str | float | int] = {"kind": self.kind, "key": self.key()}
        if self.kind != "full":
            record["crop_s"] = self.crop_s
        if self.kind == "multi_crop":
            record["num_crops"] = self.num_crops
        return record

    def describe(self) -> str:
        """In words, for reports: ``full length``, ``3.0 s crop``, ``5 x 3.0 s crops``."""
        if self.kind == "full":
            return "full length"
        if self.kind == "crop":
            return f"{self.crop_s:g} s crop from the start"
        return f"mean of {self.num_crops} x {self.crop_s:g} s crops"


FULL = Condition()


def crop_windows(duration_s: float, condition: Condition) -> list[tuple[float, float | None]]:
    """The ``(start_s, duration_s)`` windows an utterance is embedded from; None: to the end.

    An utterance no longer than ``crop_s`` is one window, the whole of it, under every condition.

    >>> crop_windows(2.0, Condition("crop", crop_s=3.0))
    [(0.0, None)]
    """
    if condition.kind == "full" or duration_s <= condition.crop_s:
        return [(0.0, None)]
    if condition.kind == "crop":
        return [(0.0, condition.crop_s)]
    starts = np.linspace(0.0, duration_s - condition.crop_s, condition.num_crops)
    return [(float(start), condition.crop_s) for start in starts]


def embed_condition(
    bundle: Bundle,
    utts: Sequence[Utterance],
    condition: Condition = FULL,
    *,
    batch_size: int = 16,
    num_workers: int = 0,
    progress: bool = False,
) -> dict[str, np.ndarray]:
    """Embeddings of utterances under a test condition, batched by similar window length.

    Returns ``{utt_id: (embed_dim,) float32}``: the encoder's embedding for ``full`` and
    ``crop`` (not normalised), and for ``multi_crop`` the mean of the crops' L2-normalised
    embeddings. The encoder's and features' train/eval modes are restored after.

    >>> emb = embed_condition(bundle, utts, Condition("crop", crop_s=3.0))  # doctest: +SKIP
    """
    utts = list(utts)
    windows = [
        (i, start_s, duration_s)
        for i, utt in enumerate(utts)
        for start_s, duration_s in crop_windows(utt.duration_s, condition)
    ]
    lengths_s = [utts[i].duration_s if d is None else d for i, _, d in windows]
    loader = DataLoader(
        UtteranceDataset(utts, sample_rate=bundle.sample_rate, windows=windows),
        batch_sampler=length_sorted_batches(lengths_s, batch_size),
        collate_fn=collate_padded,
        num_workers=num_workers,
        worker_init_fn=loader_worker_init,
    )
    was_training = bundle.encoder.training, bundle.fbank.training
    bundle.encoder.eval()
    bundle.fbank.eval()
    window_emb: np.ndarray | None = None
    try:
        for wav, lengths, indices in tqdm(
            fork_workers(loader),
            total=len(loader),
            desc=f"embedding ({condition.key()})",
            unit="batch",
            disable=not progress,
            leave=False,
        ):
            emb = bundle.embed_batch(wav, lengths).cpu().numpy()  # (B, D)
            if window_emb is None:
                window_emb = np.empty((len(windows), emb.shape[1]), dtype=np.float32)
            window_emb[indices] = emb
    finally:
        bundle.encoder.train(was_training[0])
        bundle.fbank.train(was_training[1])
    if window_emb is None:
        return {}
    owner = np.array([i for i, _, _ in windows])
    if condition.kind != "multi_crop":  # one window per utterance, in utterance order
        return {utt.utt_id: window_emb[i] for i, utt in enumerate(utts)}
    sums = np.zeros((len(utts), window_emb.shape[1]), dtype=np.float64)
    np.add.at(sums, owner, unit_rows(window_emb.astype(np.float64)))
    means = (sums / np.bincount(owner, minlength=len(utts))[:, None]).astype(np.float32)
    return {utt.utt_id: means[i] for i, utt in enumerate(utts)}
