"""Ahead-of-time compiled generators (CPU), cached on disk so that only the first render pays.

torch.compile with frozen weights runs the U-Net about 1.7x faster per window on CPU than eager
mode, but compiling costs 4-15 s and, with frozen (prepacked) weights, inductor's own caches are
bypassed ("mkldnn tensors unpickleable"): every process paid it again. AOTInductor compiles the
same frozen graph into a shared library holding the prepacked weights; we keep one per (weights,
input shape, precision, torch version, CPU) in a cache folder and load it with torch's
model-container runner in about 0.01 s, without importing inductor.

Two traps, both measured on the 2-core AMX Xeon:
- The runner copies the weights into one ``malloc`` block, which is only 16-byte aligned; the
  oneDNN AMX kernels then ran 1.7x slower (5.1 vs 3.0 ms per window, by which of the 4 possible
  offsets the heap gave), so each load points it at 64-byte aligned copies of them
  (:func:`_realign_constants`; the original block stays allocated, one model's size).
- The library allocates its activations afresh on every call: it is as fast as torch.compile only
  with device.keep_freed_memory() in effect.

The libraries are native code: they are only ever loaded from the user's own cache folder
(``GEOMAP_GAN_CACHE_DIR``, else ``$XDG_CACHE_HOME/geomap-gan``, else ``~/.cache/geomap-gan``),
created with mode 0700 and written there by this module. Model files themselves stay
safetensors; nothing here unpickles anything.
"""

from __future__ import annotations

import hashlib
import logging
import os
import platform
import time
import warnings
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from geomap_gan import files
from geomap_gan.device import cpu_signature

log = logging.getLogger(__name__)

Compiled = Callable[[torch.Tensor], torch.Tensor]
# Inductor settings for compiling the generator, ahead of time here or with torch.compile in
# render.py: frozen weights (prepacked for oneDNN: the whole gain on CPU; note that
# torch.compile(options=...) did not freeze them, measured 1.16x instead of 1.7x); the vector
# instruction set from the CPU flags instead of 10 probe builds in subprocesses (1.1 s per
# process; a build that fails anyway leaves eager mode).
# What the announcement says a build takes: 10-20 s measured for the default model on a 2-core
# Xeon (more cores build faster); an estimate for the user, never a limit.
COMPILE_SECONDS_ESTIMATE = 20
INDUCTOR_OPTIONS = {"freezing": True, "cpp.vec_isa_ok": True}


def available() -> bool:
    """Whether this torch can build and run AOTInductor libraries on CPU (torch 2.6 and later)."""
    try:
        import torch._inductor as inductor
    except ImportError:
        return False
    return hasattr(inductor, "aoti_compile_and_package") and _runner_class() is not None


def _runner_class() -> type | None:
    return getattr(getattr(torch._C, "_aoti", None), "AOTIModelContainerRunnerCpu", None)


def cache_dir() -> Path:
    """Where compiled packages live (see the module docstring)."""
    if os.environ.get("GEOMAP_GAN_CACHE_DIR"):
        return Path(os.environ["GEOMAP_GAN_CACHE_DIR"]) / "aot"
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "geomap-gan" / "aot"


def package_key(net: torch.nn.Module, example: torch.Tensor) -> str:
    """A name for the package of ``net`` compiled for inputs like ``example``: changes with any
    weight, the input shape and type, the device, torch's version and the CPU."""
    h = hashlib.sha256()
    for name, tensor in net.state_dict().items():
        h.update(name.encode())
        h.update(str(tuple(tensor.shape)).encode())
        h.update(tensor.detach().cpu().contiguous().float().numpy().tobytes())
    context = (tuple(example.shape), example.dtype, example.device.type, torch.__version__,
               platform.machine(), cpu_signature(), getattr(net, "amp", None))  # fmt: skip
    h.update(repr(context).encode())
    return h.hexdigest()[:32]


def cached_path(net: torch.nn.Module, example: torch.Tensor) -> Path:
    """The compiled library for ``net`` and ``example`` (it may not exist yet)."""
    return cache_dir() / f"generator-{package_key(net, example)}.so"


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _checksum_path(path: Path) -> Path:
    return path.with_suffix(".sha256")


def load(path: Path) -> Compiled | None:
    """The compiled model in ``path``, or None (and the file removed) if it cannot be loaded.

    Why the checksum: a library cut short (a full disk, a killed copy) can still look like a
    shared library, and loading it kills the process with a bus error (exit 135) on every
    render; its SHA-256, written beside it at build time, is checked before it is loaded."""
    checksum = _checksum_path(path)
    try:
        intact = checksum.is_file() and checksum.read_text().strip() == _digest(path)
    except OSError:
        intact = False
    if not intact:
        log.warning("compiled model %s is damaged or incomplete; it will be rebuilt", path)
        path.unlink(missing_ok=True)
        checksum.unlink(missing_ok=True)
        return None
    try:
        return _load_library(path)
    except Exception as exc:  # a stale or damaged library: build it again
        log.warning("compiled model %s does not load (%s); it will be rebuilt", path, exc)
        path.unlink(missing_ok=True)
        return None


def build(net: torch.nn.Module, example: torch.Tensor, path: Path) -> Compiled:
    """Export ``net`` for inputs like ``example``, compile it with frozen weights and keep the
    package's shared library as ``path`` (written atomically: parallel workers may build the
    same one), then load it."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    package = files.temp_path(path).with_suffix(".pt2")  # the packager wants this suffix
    try:
        # inductor freezes weights only when no gradient is wanted; torch's own deprecation
        # notices from inside export are not the user's business
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore", (FutureWarning, DeprecationWarning))
            exported = torch.export.export(net, (example,))
            torch._inductor.aoti_compile_and_package(
                exported, package_path=str(package), inductor_configs=INDUCTOR_OPTIONS
            )
        with zipfile.ZipFile(package) as z:
            (library,) = [n for n in z.namelist() if n.endswith(".so")]  # weights included
            data = z.read(library)
        with files.atomic_output(_checksum_path(path)) as tmp:
            tmp.write_text(hashlib.sha256(data).hexdigest() + "\n")
        with files.atomic_output(path) as tmp:
            tmp.write_bytes(data)
    finally:
        package.unlink(missing_ok=True)
    return _load_library(path)


def _load_library(path: Path) -> Compiled:
    runner_class = _runner_class()
    if runner_class is None:
        raise RuntimeError("this torch has no AOTInductor CPU runner")
    runner = runner_class(str(path), 1)
    aligned = _realign_constants(runner)

    def run(x: torch.Tensor) -> torch.Tensor:
        _ = aligned  # the runner uses these tensors without owning them
        return runner.run([x])[0]

    return run


def _realign_constants(runner: Any) -> dict[str, torch.Tensor]:
    """Point the runner at copies of its weights in tensors of their own, 64-byte aligned like
    every torch allocation, instead of the 16-byte aligned block it copied them into (module
    docstring). The runner lists only the frozen (prepacked) weights, not every bias: the
    others stay where they are. Returns the copies, which must outlive the runner; none where
    this torch's runner cannot do it (the library then runs as loaded, correct but slower)."""
    try:
        aligned = {name: t.clone() for name, t in runner.extract_constants_map(False).items()}
        runner.update_constant_buffer(aligned, False, False, True)  # active buffer, user-managed
    except (AttributeError, RuntimeError, TypeError) as exc:
        log.info("compiled generator runs with its weights as loaded (%s)", exc)
        return {}
    return aligned


def load_or_build(
    net: torch.nn.Module,
    example: torch.Tensor,
    build_if_missing: bool,
    on_build: Callable[[], None] | None = None,
) -> Compiled | None:
    """The cached compiled ``net`` for CPU inputs like ``example``; built first when missing and
    ``build_if_missing`` (``on_build`` called just before: the build takes seconds that a caller
    should announce). None when neither worked (the caller runs ``net`` eagerly)."""
    path = cached_path(net, example)
    if path.exists():
        compiled = load(path)
        if compiled is not None:
            log.info("using the compiled generator %s", path)
            return compiled
    # checked only now: importing inductor costs ~0.7 s, wasted on a scene that runs eagerly
    if not build_if_missing or not available():
        return None
    # Seen without -v: a first large render otherwise sits silent for this long.
    log.warning(
        "compiling the generator for this CPU, once, about %d s (cached in %s)",
        COMPILE_SECONDS_ESTIMATE,
        path.parent,
    )
    if on_build is not None:
        on_build()
    t0 = time.perf_counter()
    try:
        compiled = build(net, example, path)
        log.info("compiled in %.0f s", time.perf_counter() - t0)
        return compiled
    except Exception as exc:  # no C++ compiler, unsupported platform or op: eager still works
        log.warning("compiling the generator failed (%s); rendering in eager mode", exc)
        return None
