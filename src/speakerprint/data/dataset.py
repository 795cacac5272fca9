"""Datasets for training (random fixed-length crops) and evaluation (whole utterances).

Randomness in training comes from a seed carried with each index, not from worker state, so the
batches are the same for any number of DataLoader workers and a resumed run sees exactly the
batches an uninterrupted one would have seen.
"""

from __future__ import annotations

import gc
import os
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from itertools import islice

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from speakerprint.audio import fit_to_length, load_audio
from speakerprint.data.manifest import Utterance


class UtteranceTable:
    """What the loaders need of each utterance, in flat numpy arrays: path, offset, duration.

    DataLoader workers are forked, and reading a Python object writes to its reference count,
    which copies the memory page it lives on into the worker. A million :class:`Utterance`
    objects thus became about 260 MB of private memory in *every* worker over an epoch; numpy
    arrays are read without a write, so the workers keep sharing one copy
    (``bench/manifest_load.py`` measures both).
    """

    def __init__(self, utts: Sequence[Utterance]) -> None:
        encoded = [u.path.encode("utf-8", "surrogateescape") for u in utts]
        self._path_bytes = np.frombuffer(b"".join(encoded), dtype=np.uint8)
        self._path_ends = np.cumsum([len(e) for e in encoded], dtype=np.int64)
        self.durations = np.array([u.duration_s for u in utts], dtype=np.float64)
        # NaN: the whole file (offset_s None), as opposed to a segment starting at 0.
        self.offsets = np.array(
            [np.nan if u.offset_s is None else u.offset_s for u in utts], dtype=np.float64
        )

    def __len__(self) -> int:
        return len(self.durations)

    def path(self, index: int) -> str:
        start = int(self._path_ends[index - 1]) if index > 0 else 0
        raw = self._path_bytes[start : int(self._path_ends[index])].tobytes()
        return raw.decode("utf-8", "surrogateescape")

    def offset(self, index: int) -> float | None:
        """The utterance's ``offset_s``: None for a whole file."""
        value = float(self.offsets[index])
        return None if value != value else value


class CropDataset(Dataset):
    """Random crops of ``crop_s`` seconds with speaker labels.

    Indexed by ``(utterance_index, crop_seed)`` pairs from :class:`EpochBatchSampler`. Returns
    ``(wav (crop_samples,) float32, label)``. ``transform(wav, rng)``, when given, changes each
    crop in the loader worker (e.g. codec simulation, :mod:`speakerprint.augment.codec`); it
    draws from the crop's own generator, so a crop does not depend on the number of workers.
    """

    def __init__(
        self,
        utts: Sequence[Utterance],
        *,
        speaker_to_label: dict[str, int],
        crop_s: float,
        sample_rate: int = 16000,
        transform: Callable[[np.ndarray, np.random.Generator], np.ndarray] | None = None,
    ) -> None:
        self.table = UtteranceTable(utts)
        self.labels = np.array([speaker_to_label[u.speaker] for u in utts], dtype=np.int64)
        self.transform = transform
        self.speaker_to_label = speaker_to_label
        self.sample_rate = sample_rate
        self.crop_samples = int(round(crop_s * sample_rate))
        self.crop_s = crop_s

    def __len__(self) -> int:
        return len(self.table)

    def __getitem__(self, key: tuple[int, int]) -> tuple[np.ndarray, int]:
        index, crop_seed = key
        rng = np.random.default_rng(crop_seed)
        duration_s = float(self.table.durations[index])
        max_start = max(duration_s - self.crop_s, 0.0)
        start_s = float(rng.uniform(0.0, max_start)) if max_start > 0 else 0.0
        wav = load_audio(
            self.table.path(index),
            self.sample_rate,
            start_s=(self.table.offset(index) or 0.0) + start_s,  # a segment's crop stays inside it
            duration_s=min(self.crop_s, duration_s),
        )
        wav = fit_to_length(wav, self.crop_samples)
        if self.transform is not None:
            wav = self.transform(wav, rng)
        return wav, int(self.labels[index])


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


class SpeakerBalancedBatchSampler(Sampler[list[tuple[int, int]]]):
    """Batches of P speakers x K utterances, as ``(index, crop_seed)``, fixed by ``(seed, epoch)``.

    For losses mined within the batch (triplet loss), which need several utterances of each of
    several speakers. The contract is :class:`EpochBatchSampler`'s: ``start_batch`` skips batches
    without loading them, the batches do not depend on the number of DataLoader workers, and an
    epoch is ``len(labels) // (P * K)`` batches, the same amount of audio as with that sampler.

    Speakers are drawn P at a time, all distinct, from a shuffled order of every speaker; when an
    order runs out a new one is shuffled, and the batch that straddles the two takes the rest of
    the old order and the first speakers of the new one that it does not hold yet (they stay in
    the new order for later). Every speaker therefore appears in a number of batches that differs
    from any other speaker's by at most one. Each speaker's utterances are shuffled once per epoch
    and taken K at a time, cycling through that order, so a speaker with at least K utterances
    never repeats one within a batch and one with fewer repeats some; every item has its own crop
    seed, so repeats are different crops. Within a batch the K items of a speaker are adjacent,
    speakers in drawing order: in-batch losses do not depend on the order.

    ``labels[i]`` is the speaker label of utterance ``i`` (any ints, not necessarily contiguous).

    >>> sampler = SpeakerBalancedBatchSampler([0, 0, 1, 1, 2, 2], 2, 2, seed=0, epoch=0)
    >>> [len(batch) for batch in sampler]
    [4]
    """

    def __init__(
        self,
        labels: Sequence[int],
        speakers_per_batch: int,
        utterances_per_speaker: int,
        *,
        seed: int,
        epoch: int,
        start_batch: int = 0,
    ) -> None:
        labels_array = np.asarray(labels, dtype=np.int64)
        if labels_array.ndim != 1:
            raise ValueError(f"labels must be a flat sequence, got shape {labels_array.shape}")
        speaker_ids, inverse = np.unique(labels_array, return_inverse=True)
        num_speakers = len(speaker_ids)
        batch_size = speakers_per_batch * utterances_per_speaker
        if speakers_per_batch < 2:
            raise ValueError(
                f"speakers_per_batch must be at least 2 (a batch needs negatives), "
                f"got {speakers_per_batch}"
            )
        if utterances_per_speaker < 2:
            raise ValueError(
                f"utterances_per_speaker must be at least 2 (a batch needs positives), "
                f"got {utterances_per_speaker}"
            )
        if speakers_per_batch > num_speakers:
            raise ValueError(
                f"speakers_per_batch={speakers_per_batch} but the training set has only "
                f"{num_speakers} speakers"
            )
        if len(labels_array) < batch_size:
            raise ValueError(
                f"the training set has {len(labels_array)} utterances, fewer than one batch of "
                f"{speakers_per_batch} speakers x {utterances_per_speaker} = {batch_size}"
            )
        num_batches = self.batches_per_epoch(len(labels_array), batch_size)
        if not 0 <= start_batch <= num_batches:
            raise ValueError(f"start_batch must be in [0, {num_batches}], got {start_batch}")
        order = np.argsort(inverse, kind="stable")
        bounds = np.cumsum(np.bincount(inverse, minlength=num_speakers))[:-1]
        # Utterance indices of each speaker, speakers in label order.
        self._utts_by_speaker = np.split(order, bounds)
        self.num_items = len(labels_array)
        self.speakers_per_batch = speakers_per_batch
        self.utterances_per_speaker = utterances_per_speaker
        self.seed = seed
        self.epoch = epoch
        self.start_batch = start_batch

    # The same epoch length as EpochBatchSampler: an epoch is as much audio for either sampler.
    batches_per_epoch = staticmethod(EpochBatchSampler.batches_per_epoch)

    def __len__(self) -> int:
        batch_size = self.speakers_per_batch * self.utterances_per_speaker
        return self.batches_per_epoch(self.num_items, batch_size) - self.start_batch

    def _epoch_batches(self) -> Iterator[list[tuple[int, int]]]:
        """Every batch of the epoch from the first: later batches depend on earlier draws."""
        p, k = self.speakers_per_batch, self.utterances_per_speaker
        num_speakers = len(self._utts_by_speaker)
        num_batches = len(self) + self.start_batch
        # Separate streams, so that one kind of draw never shifts another.
        speaker_rng, utt_rng, crop_rng = (
            np.random.default_rng([self.seed, self.epoch, stream]) for stream in range(3)
        )
        utt_orders = [utt_rng.permutation(utts) for utts in self._utts_by_speaker]
        next_utt = [0] * num_speakers
        crop_seeds = crop_rng.integers(0, 2**63 - 1, size=(num_batches, p * k))
        queue: deque[int] = deque()
        for b in range(num_batches):
            chosen: list[int] = []
            skipped: list[int] = []
            while len(chosen) < p:
                if not queue:
                    queue.extend(speaker_rng.permutation(num_speakers).tolist())
                speaker = queue.popleft()
                if speaker in chosen:
                    skipped.append(speaker)  # already in this batch: keep it for later
                else:
                    chosen.append(speaker)
            queue.extendleft(reversed(skipped))
            indices: list[int] = []
            for speaker in chosen:
                utts = utt_orders[speaker]
                start = next_utt[speaker]
                indices.extend(utts[(start + np.arange(k)) % len(utts)].tolist())
                next_utt[speaker] = (start + k) % len(utts)
            yield [(i, int(s)) for i, s in zip(indices, crop_seeds[b])]

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        return islice(self._epoch_batches(), self.start_batch, None)


def collate_crops(batch: list[tuple[np.ndarray, int]]) -> tuple[torch.Tensor, torch.Tensor]:
    """Stack equal-length crops: wav (B, N) float32, labels (B,) int64."""
    wavs = torch.from_numpy(np.stack([w for w, _ in batch]))
    labels = torch.tensor([label for _, label in batch], dtype=torch.int64)
    return wavs, labels


class UtteranceDataset(Dataset):
    """Utterances, or windows of them, for embedding extraction: ``(wav (N,) float32, index)``.

    ``windows`` lists ``(utterance index, start_s, duration_s or None for "to the end")``; by
    default there is one window per utterance, the whole of it. ``index`` indexes the windows.
    Times are within the utterance: for a segment (``offset_s`` set) they count from its start,
    and "to the end" means to the end of the segment.
    """

    def __init__(
        self,
        utts: Sequence[Utterance],
        *,
        sample_rate: int = 16000,
        windows: Sequence[tuple[int, float, float | None]] | None = None,
    ) -> None:
        self.table = UtteranceTable(utts)
        self.sample_rate = sample_rate
        if windows is None:
            windows = [(i, 0.0, None) for i in range(len(utts))]
        # Arrays, not tuples, for the reason UtteranceTable gives; NaN duration: to the end.
        self.window_utts = np.array([w[0] for w in windows], dtype=np.int64)
        self.window_starts = np.array([w[1] for w in windows], dtype=np.float64)
        self.window_durations = np.array(
            [np.nan if w[2] is None else w[2] for w in windows], dtype=np.float64
        )

    def __len__(self) -> int:
        return len(self.window_utts)

    def __getitem__(self, index: int) -> tuple[np.ndarray, int]:
        utt_index = int(self.window_utts[index])
        start_s = float(self.window_starts[index])
        duration_s: float | None = float(self.window_durations[index])
        if duration_s != duration_s:
            duration_s = None
        offset_s = self.table.offset(utt_index)
        if offset_s is not None:
            if duration_s is None:
                # load_audio refuses a duration <= 0
                duration_s = float(self.table.durations[utt_index]) - start_s
            start_s += offset_s
        wav = load_audio(
            self.table.path(utt_index), self.sample_rate, start_s=start_s, duration_s=duration_s
        )
        return wav, index


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


_sigterms_seen = 0  # per worker process: each has its own copy of this module


def _worker_sigterm(signum: int, frame) -> None:
    global _sigterms_seen
    _sigterms_seen += 1
    if _sigterms_seen > 1:
        os._exit(0)


def fork_workers(loader: torch.utils.data.DataLoader) -> Iterator:
    """``iter(loader)``, with the parent's objects frozen out of the garbage collector for the
    fork that starts the workers.

    A full collection in a forked worker writes to every object the parent held (a manifest's
    million utterances among them), copying all their pages into that worker: about
    230 MB per worker for a million utterances. Frozen objects are never visited by the
    collector, so the workers keep sharing them; the parent unfreezes right after the fork.
    """
    if loader.num_workers == 0:
        return iter(loader)
    gc.collect()  # what is garbage now would otherwise stay uncollected in the workers
    gc.freeze()
    try:
        return iter(loader)
    finally:
        gc.unfreeze()


def loader_worker_init(_: int = 0) -> None:
    """``worker_init_fn`` of every speakerprint DataLoader: one torch thread, stops left to the main.

    Decoding is single-threaded work, and torch threads in every worker would oversubscribe the
    CPU. A scheduler (SLURM, ``kill -- -PGID``) signals every process of a job, and PyTorch's
    workers die of a SIGTERM that does not come from their parent, which made the main process
    fail with "DataLoader worker ... is killed by signal" instead of writing its final
    checkpoint. So a worker ignores its first SIGTERM (the main process, signalled too, stops at
    the next step and shuts its loaders down) and exits at a second one (the main process
    terminating a worker that did not stop in time). SIGINT (Ctrl-C) is the main process's too.
    """
    import signal

    torch.set_num_threads(1)
    signal.signal(signal.SIGTERM, _worker_sigterm)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
