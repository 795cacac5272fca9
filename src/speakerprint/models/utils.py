"""Small tensor helpers shared by the encoders: length masks and statistics over valid frames."""

from __future__ import annotations

import torch
from torch import Tensor

from speakerprint.errors import ConfigError


def lengths_to_mask(lengths: Tensor, max_len: int) -> Tensor:
    """Boolean mask of valid frames, True where ``t < lengths[b]``.

    Args:
        lengths: (B,) number of valid frames of each sequence.
        max_len: T, the padded length.

    Returns:
        (B, T) bool tensor on the device of ``lengths``.

    >>> lengths_to_mask(torch.tensor([1, 3]), 3)
    tensor([[ True, False, False],
            [ True,  True,  True]])
    """
    frames = torch.arange(max_len, device=lengths.device)
    return frames.unsqueeze(0) < lengths.unsqueeze(1)


def masked_mean(x: Tensor, mask: Tensor) -> Tensor:
    """Mean over time of the valid frames.

    Args:
        x: (B, C, T), zero or not at padded frames.
        mask: (B, 1, T) bool, True at valid frames; every row needs at least one.

    Returns:
        (B, C).
    """
    count = mask.sum(dim=-1).to(x.dtype)  # (B, 1)
    return (x * mask).sum(dim=-1) / count


def masked_mean_std(
    x: Tensor, mask: Tensor, eps: float = 1e-7, unbiased: bool = False
) -> tuple[Tensor, Tensor]:
    """Mean and standard deviation over time of the valid frames, each (B, C).

    By default the variance is the population one (divided by the number of frames n, so that one
    frame works) and is clamped at ``eps`` before the square root, which keeps the gradient finite
    on constant inputs. ``unbiased`` gives WeSpeaker's statistics instead (``torch.var`` then
    ``sqrt(var + eps)``): divided by n - 1 (by 1 when n = 1, where ``torch.var`` would give NaN),
    ``eps`` added rather than clamped. The arguments are not keyword-only because TorchScript cannot
    compile keyword-only defaults.
    """
    mean = masked_mean(x, mask)
    squares = ((x - mean.unsqueeze(-1)).square() * mask).sum(dim=-1)  # (B, C)
    count = mask.sum(dim=-1).to(x.dtype)  # (B, 1)
    if unbiased:
        return mean, (squares / (count - 1).clamp(min=1) + eps).sqrt()
    return mean, (squares / count).clamp(min=eps).sqrt()


def check_int(name: str, value: object, *, minimum: int = 1) -> int:
    """Return ``value`` if it is an int (not a bool) of at least ``minimum``, else raise ConfigError.

    Constructor arguments usually come from YAML configs, where ``"512"`` or ``512.0`` are easy typos.
    """
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{name} must be an int, got {type(value).__name__} {value!r}")
    if value < minimum:
        raise ConfigError(f"{name} must be >= {minimum}, got {value}")
    return value
