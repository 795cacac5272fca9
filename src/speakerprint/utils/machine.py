"""The machine in words, for the records and reports that figures are quoted from."""

from __future__ import annotations

import platform
from pathlib import Path


def cpu_name() -> str:
    """The CPU model, e.g. 'AMD EPYC 7B13' (from /proc/cpuinfo where there is one)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


#: The instruction-set flags that change numeric kernels (int8 products, float reductions).
SIMD_FLAGS = ("avx2", "fma", "avx512f", "avx512bw", "avx512_vnni", "avx_vnni", "amx_int8")


def cpu_flags() -> list[str]:
    """Which of :data:`SIMD_FLAGS` this CPU has (empty where /proc/cpuinfo is not readable)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                have = set(line.split(":", 1)[1].split())
                return [flag for flag in SIMD_FLAGS if flag in have]
    except OSError:
        pass
    return []


def device_name(device: str | object = "cpu") -> str:
    """The GPU's name for a CUDA device, else the CPU model (:func:`cpu_name`)."""
    import torch

    device = torch.device(device)
    return torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_name()
