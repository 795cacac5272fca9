"""Datasets for training (random fixed-length crops) and evaluation (whole utterances).

Randomness in training comes from a seed carried with each index, not from worker state, so the
batches are the same for any number of DataLoader workers and a resumed run sees exactly the
batches an uninterrupted one would have seen.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from speakerprint.audio import load_audio
from speakerprint.data.manifest import Utterance


def fit_to_length(wav: np.ndarray, num_samples: int) -> np.ndarray:
    """Repeat a short waveform until it fills ``num_samples`` (then cut); longer ones are cut.

    Repetition rather than zero padding keeps every training frame real speech, as WeSpeaker and
    the ECAPA recipes do.
    """
    if len(wav) == 0:
        raise ValueError("cannot fit an empty waveform")
    if len(wav) < num_samples:
        wav = np.tile(wav, -(-num_samples // len(wav)))
    return wav[:num_samples]


class CropDataset(Dataset):
    """Random crops of ``crop_s`` seconds with speaker labels.

    Indexed by ``(utterance_index, crop_seed)`` pairs from :class:`EpochBatchSampler`. Returns
    ``(wav (crop_samples,) float32, label)``.
    """

    def __init__(
        self,
        utts: Sequence[Utterance],
        *,
        speaker_to_label: dict[str, int],
        crop_s: float,
        sample_rate: int = 16000,
    ) -> None:
        self.utts = list(utts)
        self.speaker_to_label = speaker_to_label
        self.sample_rate = sample_rate
        self.crop_samples = int(round(crop_s * sample_rate))
        self.crop_s = crop_s

    def __len__(self) -> int:
        return len(self.utts)

    def __getitem__(self, key: tuple[int, int]) -> tuple[np.ndarray, int]:
        index, crop_seed = key
        utt = self.utts[index]
        rng = np.random.default_rng(crop_seed)
        max_start = max(utt.duration_s - self.crop_s, 0.0)
        start_s = float(rng.uniform(0.0, max_start)) if max_start > 0 else 0.0
        wav = load_audio(
            utt.path, self.sample_rate, start_s=start_s, duration_s=min(self.crop_s, utt.duration_s)
        )
        return fit_to_length(wav, self.crop_samples), self.speaker_to_label[utt.speaker]


class EpochBatchSampler(Sampler[list[tuple[int, int]]]):
    """Shuffled batches of ``(index, crop_seed)`` for one epoch, determined by ``(seed, epoch)``.

    ``start_batch`` skips batches without loading them, for resuming in the middle of an epoch.
    The last incomplete batch is dropped so every step has the same batch size.
    """

    def __init__(
        self, num_items: int, batch_size: int, *, seed: int, epoch: int, start_batch: int = 0
    ) -> None:
        if num_items < batch_size:
            raise ValueError(
                f"the training set has {num_items} utterances, fewer than one batch of {batch_size}"
            )
        self.num_items = num_items
        self.batch_size = batch_size
        self.seed = seed
        self.epoch = epoch
        self.start_batch = start_batch

    @staticmethod
    def batches_per_epoch(num_items: int, batch_size: int) -> int:
        return num_items // batch_size

    def __len__(self) -> int:
        return self.batches_per_epoch(self.num_items, self.batch_size) - self.start_batch

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        rng = np.random.default_rng([self.seed, self.epoch])
        order = rng.permutation(self.num_items)
        crop_seeds = rng.integers(0, 2**63 - 1, size=self.num_items)
        for b in range(self.start_batch, len(self) + self.start_batch):
            idx = order[b * self.batch_size : (b + 1) * self.batch_size]
            yield [(int(i), int(crop_seeds[i])) for i in idx]


def collate_crops(batch: list[tuple[np.ndarray, int]]) -> tuple[torch.Tensor, torch.Tensor]:
    """Stack equal-length crops: wav (B, N) float32, labels (B,) int64."""
    wavs = torch.from_numpy(np.stack([w for w, _ in batch]))
    labels = torch.tensor([label for _, label in batch], dtype=torch.int64)
    return wavs, labels


class UtteranceDataset(Dataset):
    """Whole utterances for embedding extraction. Returns ``(wav (N,) float32, index)``."""

    def __init__(self, utts: Sequence[Utterance], *, sample_rate: int = 16000) -> None:
        self.utts = list(utts)
        self.sample_rate = sample_rate

    def __len__(self) -> int:
        return len(self.utts)

    def __getitem__(self, index: int) -> tuple[np.ndarray, int]:
        return load_audio(self.utts[index].path, self.sample_rate), index


def length_sorted_batches(durations: Sequence[float], batch_size: int) -> list[list[int]]:
    """Indices grouped into batches of similar length (longest first), to waste little padding."""
    order = np.argsort(-np.asarray(durations, dtype=np.float64), kind="stable")
    return [order[i : i + batch_size].tolist() for i in range(0, len(order), batch_size)]


def collate_padded(
    batch: list[tuple[np.ndarray, int]],
) -> tuple[torch.Tensor, torch.Tensor, list[int]]:
    """Zero-pad waveforms to the longest: wav (B, N_max), lengths (B,) samples, dataset indices."""
    lengths = torch.tensor([len(w) for w, _ in batch], dtype=torch.int64)
    wavs = torch.zeros(len(batch), int(lengths.max()))
    for row, (w, _) in enumerate(batch):
        wavs[row, : len(w)] = torch.from_numpy(w)
    return wavs, lengths, [i for _, i in batch]
