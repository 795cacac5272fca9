"""Random draws for the augmentations: small per-utterance tensors drawn on the CPU.

Every decision (which utterance, which file, which offset, which SNR) is one number per
utterance, so drawing them on the CPU from a CPU :class:`torch.Generator` costs nothing and makes
the augmentation of a batch the same on any device for the same seed. The draws are moved to the
batch's device with the batch.
"""

from __future__ import annotations

import torch
from torch import Tensor


def uniform(shape: tuple[int, ...], generator: torch.Generator | None) -> Tensor:
    """Uniform in [0, 1), float64, on the CPU."""
    return torch.rand(shape, generator=generator, dtype=torch.float64)


def uniform_between(
    shape: tuple[int, ...], low: float, high: float, generator: torch.Generator | None
) -> Tensor:
    return low + (high - low) * uniform(shape, generator)


def randint_below(high: Tensor, generator: torch.Generator | None) -> Tensor:
    """One integer in ``[0, high)`` per element of ``high`` (int64 CPU tensor, every value >= 1)."""
    u = uniform(tuple(high.shape), generator)
    return torch.minimum((u * high.to(torch.float64)).long(), high - 1)


def bernoulli(num: int, prob: float, generator: torch.Generator | None) -> Tensor:
    """``num`` booleans, each true with probability ``prob``."""
    return uniform((num,), generator) < prob


def check_generator(generator: torch.Generator | None) -> None:
    if generator is not None and generator.device.type != "cpu":
        raise ValueError(
            "augmentation draws its per-utterance decisions on the CPU: pass a CPU "
            f"torch.Generator, got one on {generator.device}"
        )


def valid_mask(lengths: Tensor, num_samples: int) -> Tensor:
    """``(B, N)`` bool, true on the first ``lengths[b]`` samples of row ``b``."""
    positions = torch.arange(num_samples, device=lengths.device)
    return positions[None, :] < lengths[:, None]
