"""The tile runner: the generator on its device as uint8 tiles in, weighted grey levels out
(BatchNorm folded, bf16 and channels_last where native, eval mode, inference mode), the compile
policy (AOT library on CPU, torch.compile elsewhere, eager fallback) and the batch-size rule."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import numpy as np
import torch

from geomap_gan.model.modelfile import MapModel
from geomap_gan.model.nets import from_model_range, to_model_range
from geomap_gan.rendering.options import RenderOptions, Status
from geomap_gan.rendering.scene import one_line

log = logging.getLogger(__name__)


# Building the compiled generator costs 10-20 s once per model and machine (aot.py caches it;
# loading it then takes about 0.01 s) and saves about 45% per window on CPU: worth building
# from this many windows (100 MP at the defaults); a library already cached is used for any
# scene.
COMPILE_MIN_WINDOWS = 2000

BUILD_STATUS = "compiling the generator for this CPU, once per model and machine (10-20 s)"
"""What the progress line says while the library builds (the log says it too, with the cache)."""


# Windows per forward pass when RenderOptions.batch_size is 0. On CPU, batch 4 ran the compiled
# ngf=32 U-Net at 3.5 ms/window against 4.3 at batch 8 (same process, interleaved) and eager at
# the same speed as 8; GPUs want larger batches.
AUTO_BATCH = {"cpu": 4, "cuda": 16, "mps": 8}


# Memory a batch may take: the U-Net's activations are about ACTIVATION_BYTES_PER_PIXEL per
# window pixel (ngf=32, fp32 eager, measured peak over input size), so --batch-size 100000 on a
# one-window scene no longer asks for 19.6 GB.
BATCH_MEMORY_BYTES = 4 * 2**30


ACTIVATION_BYTES_PER_PIXEL = 1000


class TileNet(torch.nn.Module):
    """uint8 tiles in, blend-weighted grey levels out, as one module: compiled, the scaling in
    and the clamp, scaling and weighting out fuse into the network's first and last kernels."""

    weights: torch.Tensor

    def __init__(
        self, generator: torch.nn.Module, weights: torch.Tensor, device: torch.device, amp: bool
    ) -> None:
        super().__init__()
        self.generator = generator
        self.register_buffer("weights", weights)
        self.device, self.amp = device, amp

    def forward(self, tiles: torch.Tensor) -> torch.Tensor:
        """(B, 3, T, T) uint8 -> (B, 3, T, T) float32 grey levels x blend weights."""
        x = to_model_range(tiles.contiguous(memory_format=torch.channels_last))
        if self.amp:  # bf16 where native (decided by device.bf16_supported, outside the graph)
            with torch.autocast(self.device.type, dtype=torch.bfloat16):
                y = self.generator(x)
        else:
            y = self.generator(x)
        return from_model_range(y).mul(self.weights).contiguous()


class TileRunner:
    """The model on its device: uint8 tiles in, blend-weighted float tiles out.

    BatchNorm is folded into the convolutions (eval mode). Compiled, the network runs on CPU as an
    ahead-of-time compiled library from the cache of :mod:`geomap_gan.model.aot` (built on first use),
    elsewhere (or where this torch has no AOTInductor) through torch.compile, and every batch is
    padded to ``batch_size`` (static shapes). Whatever fails in compiling falls back to eager
    mode. ``compile``: True always, False never, None where it pays, on CPU: a library is already
    cached, or the scene has ``COMPILE_MIN_WINDOWS`` windows or more. (On a GPU the engine waits
    on GDAL, not on the network.)
    """

    def __init__(
        self,
        model: MapModel,
        device: torch.device,
        amp: bool,
        weights: np.ndarray,
        batch_size: int,
        compile: bool | None = False,
        windows: int = 0,
        status: Status | None = None,
    ) -> None:
        from geomap_gan.device import bf16_supported
        from geomap_gan.model.nets import fuse_batchnorm

        generator = fuse_batchnorm(model.generator.eval())
        generator = generator.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
        amp = amp and bf16_supported(device)
        self.eager = TileNet(generator, torch.from_numpy(weights), device, amp).to(device)
        self.net: Callable[[torch.Tensor], torch.Tensor] = self.eager
        self.device = device
        self.batch_size = batch_size
        self.compiled = False
        self.build_seconds: float | None = None  # set when this runner built the library
        self._status = status
        if compile is not False:
            pixels = windows * len(weights) ** 2  # as many pixels as COMPILE_MIN_WINDOWS of 256
            big = pixels >= COMPILE_MIN_WINDOWS * 256**2
            worth_it = compile is True or (device.type == "cpu" and big)
            self.compiled = self._compile(len(weights), build=worth_it)

    def _compile(self, tile: int, build: bool) -> bool:
        """Switch to a compiled network: on CPU a cached AOT library (built when ``build``),
        elsewhere, or where this torch has no AOTInductor, torch.compile in this process."""
        from geomap_gan.model import aot

        if self.device.type == "cpu":
            example = torch.zeros((self.batch_size, 3, tile, tile), dtype=torch.uint8)
            started: list[float] = []

            def announce() -> None:
                started.append(time.perf_counter())
                if self._status is not None:
                    self._status(BUILD_STATUS)

            compiled = aot.load_or_build(self.eager, example, build, announce)
            if started:
                self.build_seconds = time.perf_counter() - started[0]
            if compiled is not None:
                self.net = compiled
                return True
        if build and (self.device.type != "cpu" or not aot.available()):
            import torch._inductor.config as inductor_config

            jit = torch.compile(self.eager, dynamic=False)

            def run(x: torch.Tensor) -> torch.Tensor:
                # inductor reads its settings when (re)compiling, at a call: scoped to these
                with inductor_config.patch(aot.INDUCTOR_OPTIONS):
                    return jit(x)

            self.net = run
            return True
        return False

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.compiled:
            return self.net(x)
        try:
            return self.net(x)
        except Exception as exc:  # inductor raises many types; eager always works
            log.warning("compiled generator failed (%s); rendering in eager mode", one_line(exc))
            self.net, self.compiled = self.eager, False
            return self.net(x)

    @torch.inference_mode()
    def __call__(self, tiles: np.ndarray) -> np.ndarray:
        """(B, 3, T, T) uint8 -> (B, 3, T, T) float32 grey levels x blend weights."""
        n = len(tiles)
        if self.compiled and n < self.batch_size:
            pad = np.zeros((self.batch_size - n, *tiles.shape[1:]), tiles.dtype)
            return self(np.concatenate([tiles, pad]))[:n]
        x = torch.from_numpy(tiles).to(self.device, non_blocking=True)
        return self._forward(x).cpu().numpy()


def batch_size_for(
    options: RenderOptions, device: torch.device, tile: int = 256, windows: int = 0
) -> int:
    """Windows per forward pass. One rule for render() and prepare_compiled(), whose compiled
    library must match the render's.

    0 (auto): AUTO_BATCH for the device, in 256 px windows' worth of pixels for larger windows.
    A number the user gave is capped by the scene's ``windows`` (when known) and by
    BATCH_MEMORY_BYTES of activations, so that a typo cannot exhaust the machine's memory.
    """
    if not options.batch_size:
        return max(1, AUTO_BATCH.get(device.type, 8) * 256**2 // max(tile, 256) ** 2)
    cap = max(1, BATCH_MEMORY_BYTES // (tile * tile * ACTIVATION_BYTES_PER_PIXEL))
    return max(1, min(options.batch_size, cap, windows or options.batch_size))
