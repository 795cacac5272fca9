"""The machine a benchmark ran on, as its report prints it: CPU model, the SIMD flags that
change torch's and onnxruntime's kernels, core count, torch and Python versions."""

from __future__ import annotations

import os
import platform
from pathlib import Path


def describe() -> str:
    import torch

    info = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    model = next(
        (ln.split(":", 1)[1].strip() for ln in info.splitlines() if "model name" in ln), "?"
    )
    flags = next(
        (ln.split(":", 1)[1].split() for ln in info.splitlines() if ln.startswith("flags")), []
    )
    simd = ", ".join(
        f"{f} {'yes' if f in flags else 'no'}" for f in ("avx2", "avx512f", "avx512_vnni")
    )
    return (
        f"{model}, {os.cpu_count()} cores; {simd}; torch {torch.__version__}, "
        f"Python {platform.python_version()}"
    )
