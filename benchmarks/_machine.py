"""Describe the machine a benchmark ran on (every benchmark prints this first)."""

from __future__ import annotations

import os
import platform
from pathlib import Path


def describe() -> str:
    """CPU model, core count, AMX, torch version and GPU (if any), on one line."""
    import torch

    try:
        info = Path("/proc/cpuinfo").read_text()
    except OSError:
        info = ""
    names = [ln.split(":", 1)[1].strip() for ln in info.splitlines() if ln.startswith("model name")]
    cpu = names[0] if names else platform.processor() or "unknown CPU"
    amx = "amx_bf16" in info
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return (
        f"machine: {cpu}, {os.cpu_count()} cores, AMX={'yes' if amx else 'no'}, "
        f"torch {torch.__version__} ({torch.get_num_threads()} threads), {gpu}"
    )
