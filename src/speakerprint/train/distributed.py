"""Data-parallel training under torchrun: setup, teardown, batch sharding, rank-0-only work.

The loop is the same with one process and with many: ``torchrun --nproc_per_node=N`` sets
``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK``, :func:`setup` reads them and joins the process group
(NCCL on GPU, gloo on CPU), and everything else asks the returned :class:`DistContext`. Every
rank builds the same global batch from the same seeded sampler and keeps its own contiguous slice
(:class:`ShardedBatchSampler`), so the union of the ranks' samples is exactly the one-process
batch; DDP averages the gradients, which for a mean loss over equal slices is the gradient of the
mean over the whole batch. Only rank 0 writes checkpoints, metrics and the bundle.

>>> ctx = setup("auto")                          # doctest: +SKIP
>>> ctx.rank, ctx.world_size, ctx.device         # doctest: +SKIP
(0, 1, device(type='cpu'))
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch.utils.data import Sampler

from speakerprint.errors import ConfigError
from speakerprint.train.device import resolve_device

__all__ = ["DistContext", "ShardedBatchSampler", "env_world_size", "setup", "teardown"]


@dataclass(frozen=True)
class DistContext:
    """Where this process stands: its rank among ``world_size`` and its training device."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0: the one process that writes files and evaluates."""
        return self.rank == 0

    def any(self, *flags: bool) -> list[bool]:
        """Each flag OR-ed over all ranks, so that every rank takes the same decision.

        One small all-reduce for all flags; without a process group the flags come back as given.
        """
        if not self.is_distributed:
            return [bool(f) for f in flags]
        t = torch.tensor([float(f) for f in flags], device=self.device)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return [bool(v) for v in t.tolist()]


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise ConfigError(f"environment variable {name}={raw!r} is not an integer") from None


def env_world_size() -> int:
    """The world size torchrun announced, 1 when not launched by it."""
    return _env_int("WORLD_SIZE", 1)


def setup(device_name: str = "auto") -> DistContext:
    """Join the process group when ``WORLD_SIZE`` > 1 (idempotent) and pick this rank's device.

    ``device_name`` is ``train.device``: ``auto`` means CUDA when available. Under torchrun each
    rank takes GPU ``LOCAL_RANK``; NCCL is the backend on GPU and gloo on CPU. The rendezvous is
    torchrun's (``MASTER_ADDR``/``MASTER_PORT``, the ``env://`` method).
    """
    world_size = env_world_size()
    rank = _env_int("RANK", 0)
    local_rank = _env_int("LOCAL_RANK", rank)
    if world_size < 1 or not 0 <= rank < world_size:
        raise ConfigError(f"RANK={rank} and WORLD_SIZE={world_size} do not fit together")
    device = resolve_device(device_name)
    if device.type == "cuda":
        if world_size > 1 or device.index is None:
            device = torch.device("cuda", local_rank if world_size > 1 else 0)
        torch.cuda.set_device(device)
    if world_size > 1 and not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        kwargs = {"device_id": device} if device.type == "cuda" else {}
        dist.init_process_group(backend=backend, rank=rank, world_size=world_size, **kwargs)
    return DistContext(rank=rank, world_size=world_size, local_rank=local_rank, device=device)


def teardown() -> None:
    """Leave the process group, if one was joined."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def per_rank_batch_size(batch_size: int, world_size: int) -> int:
    """``data.batch_size`` is the global batch; each rank takes an equal share of it."""
    if batch_size % world_size:
        raise ConfigError(
            f"data.batch_size={batch_size} is the global batch and must divide evenly among "
            f"the {world_size} processes"
        )
    return batch_size // world_size


class ShardedBatchSampler(Sampler[list]):
    """This rank's contiguous slice of every batch of ``batches``.

    ``batches`` yields the global batches (identical on every rank, as the seeded samplers of
    :mod:`speakerprint.data.dataset` do); rank ``r`` of ``n`` keeps items ``[r*b/n, (r+1)*b/n)``.
    Contiguous slices keep the K utterances a speaker-balanced batch puts side by side together
    when ``b/n`` is a multiple of K.

    >>> list(ShardedBatchSampler([[1, 2, 3, 4], [5, 6, 7, 8]], rank=1, world_size=2))
    [[3, 4], [7, 8]]
    """

    def __init__(self, batches: Iterable[list], *, rank: int, world_size: int) -> None:
        if not 0 <= rank < world_size:
            raise ValueError(f"rank must be in [0, {world_size}), got {rank}")
        self.batches = batches
        self.rank = rank
        self.world_size = world_size

    def __len__(self) -> int:
        return len(self.batches)  # type: ignore[arg-type]

    def __iter__(self) -> Iterator[list]:
        for batch in self.batches:
            share = per_rank_batch_size(len(batch), self.world_size)
            yield batch[self.rank * share : (self.rank + 1) * share]


class TrainStep(torch.nn.Module):
    """Encoder and loss as one module, so that DDP synchronises the loss head's gradients too.

    Returns ``(loss, accuracy)`` as plain tensors (DDP looks for tensors in the output).
    """

    def __init__(self, model: torch.nn.Module, loss_fn: torch.nn.Module) -> None:
        super().__init__()
        self.model = model
        self.loss_fn = loss_fn

    def forward(
        self, feats: torch.Tensor, frame_lengths: torch.Tensor, labels: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        emb = self.model(feats, frame_lengths)  # (B, D)
        out = self.loss_fn(emb, labels)
        return out.loss, torch.as_tensor(out.accuracy)


def wrap_ddp(step: TrainStep, ctx: DistContext) -> torch.nn.Module:
    """The step module under DDP when distributed, as it is otherwise.

    With ``train.sync_batchnorm`` (the default) the training loop has already converted the
    encoder's BatchNorms (``convert_sync_batchnorm``): their statistics are over the global batch
    and a run on N processes equals a one-process run with the same global batch. Without it,
    each rank normalises its slice by its own statistics (as WeSpeaker trains) and DDP broadcasts
    rank 0's running statistics at every forward, so the saved ones are rank 0's.
    """
    if not ctx.is_distributed:
        return step
    from torch.nn.parallel import DistributedDataParallel

    if ctx.device.type == "cuda":
        return DistributedDataParallel(step, device_ids=[ctx.device.index])
    return DistributedDataParallel(step)
