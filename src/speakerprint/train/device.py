"""The training device and precision: one function turns a device name into a device.

``train.device`` (and the CLI's ``--device``) name a device as torch does (``cpu``, ``cuda``,
``cuda:1``) or ``auto``; :func:`resolve_device` is the one place that checks the name and that
CUDA is there, so every caller fails with the same one-line :class:`ConfigError`.

>>> resolve_device("cpu")
device(type='cpu')
"""

from __future__ import annotations

import torch

from speakerprint.errors import ConfigError

__all__ = ["describe_device", "resolve_device", "resolve_precision"]


def resolve_device(name: str, *, option: str = "train.device") -> torch.device:
    """The device ``name`` means: ``auto`` is CUDA when available, else the CPU.

    ``option`` names the setting in the error, e.g. ``--device`` for the CLI.

    Raises:
        ConfigError: ``name`` is not a device, or names CUDA on a machine without it.
    """
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError):
        raise ConfigError(f"{option}={name}: not a device (cpu, cuda, cuda:1 ..., auto)") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"{option}={name}: CUDA is not available on this machine")
    return device


def describe_device(device: torch.device) -> str:
    """The hardware in words, for the records that figures are quoted from."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    threads = torch.get_num_threads()
    return f"cpu ({threads} thread{'s' if threads != 1 else ''})"


def resolve_precision(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype, or None for fp32. CPU trains in fp32 unless told otherwise."""
    if precision == "auto":
        return torch.bfloat16 if device.type == "cuda" else None
    return {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]
