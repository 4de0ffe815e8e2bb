"""Ahead-of-time compiled generators, cached on disk so that only the first render pays.

torch.compile with frozen weights runs the U-Net about 1.7x faster per window on CPU than eager
mode, but compiling costs 4-15 s and, with frozen (prepacked) weights, inductor's own caches are
bypassed ("mkldnn tensors unpickleable"): every process paid it again. AOTInductor compiles the
same frozen graph into a package (a shared library plus the prepacked weights) that loads in
about 0.8 s with its imports; we keep one package per (weights, input shape, precision, device,
torch version, CPU) in a cache folder. Its speed equals torch.compile's only with
device.keep_freed_memory() in effect (it allocates its buffers afresh on every call).

The packages hold native code: they are only ever loaded from the user's own cache folder
(``GEOMAP_GAN_CACHE_DIR``, else ``$XDG_CACHE_HOME/geomap-gan``, else ``~/.cache/geomap-gan``),
created with mode 0700 and written there by this module. Model files themselves stay
safetensors; nothing here unpickles anything.
"""

from __future__ import annotations

import hashlib
import logging
import os
import platform
import uuid
import warnings
from collections.abc import Callable
from pathlib import Path

import torch

from .device import cpu_signature

log = logging.getLogger(__name__)

Compiled = Callable[[torch.Tensor], torch.Tensor]
# Inductor settings for compiling the generator, ahead of time here or with torch.compile in
# render.py: frozen weights (prepacked for oneDNN: the whole gain on CPU; note that
# torch.compile(options=...) did not freeze them, measured 1.16x instead of 1.7x); the vector
# instruction set from the CPU flags instead of 10 probe builds in subprocesses (1.1 s per
# process; a build that fails anyway leaves eager mode).
INDUCTOR_OPTIONS = {"freezing": True, "cpp.vec_isa_ok": True}


def available() -> bool:
    """Whether this torch can build and load AOTInductor packages (torch 2.6 and later)."""
    try:
        import torch._inductor as inductor
    except ImportError:
        return False
    return hasattr(inductor, "aoti_compile_and_package") and hasattr(inductor, "aoti_load_package")


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
    """The package file for ``net`` and ``example`` (it may not exist yet)."""
    return cache_dir() / f"generator-{package_key(net, example)}.pt2"


def load(path: Path) -> Compiled | None:
    """The compiled model in ``path``, or None (and the file removed) if it cannot be loaded."""
    try:
        return _load_package(path)
    except Exception as exc:  # a stale or damaged package: build it again
        log.warning("compiled model %s does not load (%s); it will be rebuilt", path, exc)
        path.unlink(missing_ok=True)
        return None


def build(net: torch.nn.Module, example: torch.Tensor, path: Path) -> Compiled:
    """Export ``net`` for inputs like ``example``, compile it with frozen weights into ``path``
    (written atomically: parallel workers may build the same package) and load it."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(f".{path.stem}.{uuid.uuid4().hex}.tmp.pt2")
    try:
        # inductor freezes weights only when no gradient is wanted; torch's own deprecation
        # notices from inside export are not the user's business
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore", (FutureWarning, DeprecationWarning))
            exported = torch.export.export(net, (example,))
            torch._inductor.aoti_compile_and_package(
                exported, package_path=str(tmp), inductor_configs=INDUCTOR_OPTIONS
            )
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return _load_package(path)


def _load_package(path: Path) -> Compiled:
    """Load without inductor's vector-ISA probe builds (10 compiler runs in subprocesses, 1.25 s,
    only to populate a warning; the package was built for this CPU, see package_key)."""
    import torch._inductor.config as inductor_config

    with inductor_config.patch({"cpp.vec_isa_ok": True}):
        return torch._inductor.aoti_load_package(str(path))


def load_or_build(
    net: torch.nn.Module, example: torch.Tensor, build_if_missing: bool
) -> Compiled | None:
    """The cached compiled ``net`` for inputs like ``example``; built first when missing and
    ``build_if_missing``. None when neither worked (the caller runs ``net`` eagerly)."""
    path = cached_path(net, example)
    # checked second: importing inductor costs ~0.7 s, wasted on a scene that will run eagerly
    if not (path.exists() or build_if_missing) or not available():
        return None
    if path.exists():
        compiled = load(path)
        if compiled is not None:
            log.info("using the compiled generator %s", path)
            return compiled
    if not build_if_missing:
        return None
    log.info("compiling the generator ahead of time (once per model and machine) into %s", path)
    try:
        return build(net, example, path)
    except Exception as exc:  # no C++ compiler, unsupported platform or op: eager still works
        log.warning("compiling the generator failed (%s); rendering in eager mode", exc)
        return None
