"""The training batches: random crops of a manifest's utterances or of a stream of tar shards.

Every batch is a function of ``(train.seed, step)`` alone, so a run resumed at step ``s`` draws
the batches an uninterrupted run drew from step ``s`` on. Under torchrun every rank draws the
same global batches and keeps its own slice of each (:class:`~speakerprint.train.distributed.
ShardedBatchSampler`); a stream of shards is split among ranks and loader workers instead.

>>> source = build_train_batches(cfg, ctx)             # doctest: +SKIP
>>> wav, labels = next(source.batches(step=0))         # doctest: +SKIP
>>> wav.shape, labels.shape                            # (B, crop samples), (B,)  # doctest: +SKIP
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator

import numpy as np
import torch
from torch.utils.data import DataLoader

from speakerprint.augment.codec import build_codec
from speakerprint.data.dataset import (
    CropDataset,
    EpochBatchSampler,
    SpeakerBalancedBatchSampler,
    collate_crops,
    fork_workers,
    loader_worker_init,
)
from speakerprint.data.manifest import Utterance, read_manifest
from speakerprint.data.shards import ShardCropStream, ShardIndex, read_shard_index
from speakerprint.errors import ConfigError
from speakerprint.train import distributed
from speakerprint.train.config import ExperimentConfig
from speakerprint.train.distributed import DistContext

__all__ = ["ManifestBatches", "ShardBatches", "TrainBatches", "build_train_batches"]

Batch = tuple[torch.Tensor, torch.Tensor]  # wav (B, crop samples) float32, labels (B,) int64
Transform = Callable[[np.ndarray, np.random.Generator], np.ndarray]


class TrainBatches:
    """Where training batches come from: the speakers (label order), the size of an epoch, and
    :meth:`batches`, the endless stream of this rank's batches from a given step."""

    speakers: list[str]
    speaker_to_label: dict[str, int]  # label i is speakers[i]
    num_utterances: int
    batches_per_epoch: int  # of this rank
    source: str  # the data in words, for messages

    def __init__(self, cfg: ExperimentConfig, ctx: DistContext) -> None:
        self.cfg = cfg
        self.ctx = ctx
        self.per_rank_batch = distributed.per_rank_batch_size(cfg.data.batch_size, ctx.world_size)

    def batches(self, step: int) -> Iterator[Batch]:
        raise NotImplementedError

    def _loader(self, dataset, **kwargs) -> DataLoader:
        return DataLoader(
            dataset,
            collate_fn=collate_crops,
            num_workers=self.cfg.data.num_workers,
            worker_init_fn=loader_worker_init,
            pin_memory=self.ctx.device.type == "cuda",
            # A loader draws its workers' base seed when iterated; from the global RNG that
            # would shift the dither noise of a run resumed mid-epoch. Its own generator keeps
            # the global stream identical with or without a resume.
            generator=torch.Generator().manual_seed(self.cfg.train.seed),
            **kwargs,
        )

    def _check_size(self) -> None:
        if self.batches_per_epoch == 0:
            data = self.cfg.data
            raise ConfigError(
                f"{self.source} has {self.num_utterances} utterances, fewer than one batch per "
                f"loader worker (data.batch_size={data.batch_size}, "
                f"data.num_workers={data.num_workers})"
            )


class ManifestBatches(TrainBatches):
    """Random crops of a manifest's utterances: shuffled (``data.sampler=random``) or P speakers
    x K utterances per batch (``speaker_balanced``), epoch after epoch."""

    def __init__(
        self,
        cfg: ExperimentConfig,
        ctx: DistContext,
        utts: list[Utterance],
        transform: Transform | None = None,
    ) -> None:
        super().__init__(cfg, ctx)
        self.speakers = sorted({u.speaker for u in utts})
        self.speaker_to_label = {s: i for i, s in enumerate(self.speakers)}
        self.num_utterances = len(utts)
        self.source = cfg.data.train_manifest
        # Each utterance's label, for the speaker-balanced sampler; set before any batch is drawn.
        self.labels = [self.speaker_to_label[u.speaker] for u in utts]
        self.dataset = CropDataset(
            utts,
            speaker_to_label=self.speaker_to_label,
            crop_s=cfg.data.crop_s,
            sample_rate=cfg.features.sample_rate,
            transform=transform,
        )
        self.batches_per_epoch = EpochBatchSampler.batches_per_epoch(
            self.num_utterances, cfg.data.batch_size
        )
        if cfg.data.sampler == "speaker_balanced":
            self._check_speaker_balanced()
        self._check_size()

    def _check_speaker_balanced(self) -> None:
        data, world_size = self.cfg.data, self.ctx.world_size
        per_batch = data.batch_size // data.utterances_per_speaker
        if per_batch > len(self.speakers):
            raise ConfigError(
                f"data.sampler=speaker_balanced takes data.batch_size / data.utterances_per_speaker"
                f" = {per_batch} speakers per batch; it must be between 2 and the "
                f"{len(self.speakers)} training speakers"
            )
        if self.per_rank_batch % data.utterances_per_speaker:
            raise ConfigError(
                f"data.sampler=speaker_balanced under {world_size} processes: each rank's "
                f"{self.per_rank_batch} items must hold whole groups of "
                f"data.utterances_per_speaker={data.utterances_per_speaker}"
            )

    def _global_batches(self, epoch: int, start_batch: int):
        """The batches of one epoch for all ranks together, from ``start_batch`` on."""
        data, seed = self.cfg.data, self.cfg.train.seed
        if data.sampler == "speaker_balanced":
            return SpeakerBalancedBatchSampler(
                self.labels,
                data.batch_size // data.utterances_per_speaker,
                data.utterances_per_speaker,
                seed=seed,
                epoch=epoch,
                start_batch=start_batch,
            )
        return EpochBatchSampler(
            len(self.dataset), data.batch_size, seed=seed, epoch=epoch, start_batch=start_batch
        )

    def batches(self, step: int) -> Iterator[Batch]:
        ctx = self.ctx
        epoch, start_batch = divmod(step, self.batches_per_epoch)
        while True:
            global_batches = self._global_batches(epoch, start_batch)
            # Every rank draws the same global batches and keeps its own slice of each.
            sampler = (
                distributed.ShardedBatchSampler(
                    global_batches, rank=ctx.rank, world_size=ctx.world_size
                )
                if ctx.is_distributed
                else global_batches
            )
            yield from fork_workers(self._loader(self.dataset, batch_sampler=sampler))
            epoch, start_batch = epoch + 1, 0


class ShardBatches(TrainBatches):
    """Random crops from a stream of tar shards, one crop per utterance per epoch."""

    def __init__(
        self,
        cfg: ExperimentConfig,
        ctx: DistContext,
        index: ShardIndex,
        transform: Transform | None = None,
    ) -> None:
        super().__init__(cfg, ctx)
        self.index = index
        self.transform = transform
        self.speakers = list(index.speakers)
        self.speaker_to_label = {s: i for i, s in enumerate(self.speakers)}
        self.num_utterances = index.num_utterances
        self.source = f"{cfg.data.train_shards} ({len(index.files)} shards)"
        # Each loader worker batches its own crops; every rank stops at the fewest full batches
        # any rank has, so that all ranks take the same number of steps.
        self.batches_per_epoch = min(
            self._stream(0, rank).batches_per_epoch(self.per_rank_batch)
            for rank in range(ctx.world_size)
        )
        self._check_size()

    def _stream(self, epoch: int, rank: int) -> ShardCropStream:
        data = self.cfg.data
        return ShardCropStream(
            self.index,
            speaker_to_label=self.speaker_to_label,
            crop_s=data.crop_s,
            sample_rate=self.cfg.features.sample_rate,
            buffer_size=data.shuffle_buffer,
            seed=self.cfg.train.seed,
            epoch=epoch,
            rank=rank,
            world_size=self.ctx.world_size,
            num_workers=data.num_workers,
            transform=self.transform,
        )

    def batches(self, step: int) -> Iterator[Batch]:
        # An epoch's stream is a function of (seed, epoch, rank, worker): a run resumed in the
        # middle of one replays it and drops the batches already trained on (they are decoded
        # again, not trained on again).
        epoch, start_batch = divmod(step, self.batches_per_epoch)
        while True:
            loader = self._loader(
                self._stream(epoch, self.ctx.rank), batch_size=self.per_rank_batch, drop_last=True
            )
            yield from itertools.islice(fork_workers(loader), start_batch, self.batches_per_epoch)
            epoch, start_batch = epoch + 1, 0


def build_train_batches(cfg: ExperimentConfig, ctx: DistContext) -> TrainBatches:
    """The batches ``cfg.data`` names: ``train_shards`` when set, else ``train_manifest``.

    Raises:
        ConfigError: the data cannot make the batches asked for (too few utterances or speakers).
    """
    # Codec simulation runs on each crop in the loader workers; None unless augment.codec_prob > 0.
    transform = build_codec(cfg.augment, cfg.features.sample_rate)
    if cfg.data.train_shards:
        return ShardBatches(cfg, ctx, read_shard_index(cfg.data.train_shards), transform)
    return ManifestBatches(cfg, ctx, read_manifest(cfg.data.train_manifest), transform)
