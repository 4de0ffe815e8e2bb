"""Device choice and mixed precision, decided once in one place.

bf16 autocast is used where the hardware runs it natively: CUDA GPUs with bf16 support, and CPUs
with AMX or AVX512-BF16, where it (with channels_last) runs the U-Net 3-4x faster than fp32.
Elsewhere bf16 is emulated and slower than fp32, so autocast stays off.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
from pathlib import Path
from typing import Literal

import torch

from geomap_gan.errors import InputError

log = logging.getLogger(__name__)

DeviceName = Literal["auto", "cpu", "cuda", "mps"]


def resolve_device(name: str = "auto") -> torch.device:
    """``auto`` -> cuda if available, else mps, else cpu; an unavailable explicit choice is an
    InputError naming what is available."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise InputError("--device cuda asked for, but torch sees no CUDA GPU; use --device auto")
    if name == "mps" and not (
        getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()
    ):
        raise InputError("--device mps asked for, but MPS is not available; use --device auto")
    if name not in ("cpu", "cuda", "mps") and not name.startswith("cuda:"):
        raise InputError(f"unknown device {name!r}; use auto, cpu, cuda or mps")
    return torch.device(name)


@functools.lru_cache(maxsize=1)
def cpu_has_native_bf16() -> bool:
    """True on CPUs with AMX or AVX512-BF16 (from /proc/cpuinfo; False where unknown)."""
    flags = cpu_signature()
    return "amx_bf16" in flags or "avx512_bf16" in flags


# torch's CPU threads when the model runs on a GPU (threads=0): the CPU then only blends tiles,
# and torch's default pool, one thread per core, spins against the reader and writer threads
# (16-core H100 host, 8192^2: 13.0 MP/s with 16 threads, 25.7-28.9 with 1 to 8)
ACCELERATOR_CPU_THREADS = 2


def max_threads() -> int:
    """The most torch threads a command accepts: 4 per core (more crashed OpenMP, exit 139)."""
    return 4 * (os.cpu_count() or 1)


def configure_process(device: torch.device, threads: int = 0, share: int = 1) -> None:
    """Set the process-wide state that rendering on ``device`` runs best with: torch's CPU
    threads (``threads``, else all cores divided by ``share`` processes on CPU, else
    ACCELERATOR_CPU_THREADS beside a GPU) and glibc's malloc (:func:`keep_freed_memory`).

    Why a function of its own: this state belongs to whoever owns the process, so the CLI, the
    Dask worker set-up and the benchmarks call it; library calls such as render() never do
    (inside QGIS, a notebook or a shared Dask worker they would change the host process).
    """
    if threads < 0 or threads > max_threads():
        raise InputError(f"--threads must be 0 (auto) to {max_threads()}, got {threads}")
    if device.type == "cpu":
        keep_freed_memory()
        threads = threads or max(1, (os.cpu_count() or 1) // max(1, share))
    else:
        threads = threads or min(ACCELERATOR_CPU_THREADS, os.cpu_count() or 1)
    torch.set_num_threads(threads)


@functools.lru_cache(maxsize=1)
def keep_freed_memory() -> bool:
    """Ask glibc's malloc to keep freed blocks for reuse instead of returning them to the OS.

    Why: every forward pass allocates its activations afresh; with glibc's defaults the larger
    ones are mmap-ed and unmapped each time, so each pass page-faults them in again (11% of the
    CPU in ``perf``). Keeping them ran the ngf=32 U-Net 7% faster eager and 15% faster compiled
    on the project's CPU. One malloc arena, so that the reader and writer threads do not each
    keep their own freed memory. Process-wide, and only where glibc is the C library.
    """
    import ctypes
    import ctypes.util
    import platform

    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    m_trim_threshold, m_mmap_threshold, m_arena_max = -1, -3, -8  # <malloc.h>
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        settings = ((m_arena_max, 1), (m_mmap_threshold, 64 << 20), (m_trim_threshold, 512 << 20))
        ok = all(libc.mallopt(param, value) for param, value in settings)
    except (OSError, AttributeError):
        return False
    log.debug("malloc keeps freed memory for reuse: %s", ok)
    return ok


@functools.lru_cache(maxsize=1)
def cpu_signature() -> str:
    """The CPU model and instruction-set flags (from /proc/cpuinfo; the platform's processor
    string elsewhere): compiled kernels are only reused on a CPU with the same signature."""
    import platform

    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return platform.processor()
    wanted = ("model name", "flags")
    found = {
        k.strip(): v.strip()
        for k, _, v in (ln.partition(":") for ln in lines)
        if k.strip() in wanted
    }
    return " | ".join(found.get(k, "") for k in wanted)


def bf16_supported(device: torch.device) -> bool:
    """Whether bf16 autocast is native, hence faster, on this device."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        return cpu_has_native_bf16()
    return False


def autocast(device: torch.device, enabled: bool = True) -> contextlib.AbstractContextManager:
    """bf16 autocast where native (see module doc), else a no-op context."""
    if enabled and bf16_supported(device):
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()
