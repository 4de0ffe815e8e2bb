"""Where the render engine's time goes, per 256 px window: the generator alone (eager and
torch.compile'd), the engine's loop with in-memory reads and writes (model + blending + queues),
GDAL reading and writing alone, and the whole engine, all on one machine in one run.

The scene is the real NAIP photo of ../shared/data/geotiff tiled up to --size (see
_render_scene.py); the generator is a randomly initialised ngf=32 U-Net. Generator timings are
interleaved (eager, compiled, eager, ...) so that a machine whose speed drifts affects both alike.
Uses the engine's internals (render.TileRunner, render.run_tiles) on purpose.

    python benchmarks/render_breakdown.py [--size 4096] [--ngf 32] [--reps 12]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import rasterio
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine import describe  # noqa: E402
from _render_scene import make_scene  # noqa: E402
from render_throughput import random_model  # noqa: E402

from geomap_gan.rendering import (  # noqa: E402
    engine,  # noqa: E402
    output,
    reader,
)
from geomap_gan.rendering.blend import window_weights  # noqa: E402
from geomap_gan.rendering.grid import Grid  # noqa: E402
from geomap_gan.rendering.windows import TileGrid  # noqa: E402

TILE, OVERLAP = 256, 32


def generator_alone(ngf: int, batch: int, reps: int) -> dict[str, float]:
    """Median ms per window of the generator (uint8 in, weighted float out), eager vs compiled."""
    weights = window_weights(TILE, OVERLAP)
    cpu = torch.device("cpu")
    nets = {
        "eager": engine.TileRunner(random_model(ngf, "v1"), cpu, True, weights, batch, False),
        "compiled": engine.TileRunner(random_model(ngf, "v1"), cpu, True, weights, batch, True),
    }
    tiles = np.random.default_rng(0).integers(0, 256, (batch, 3, TILE, TILE), dtype=np.uint8)
    for net in nets.values():  # compile and warm up
        net(tiles)
        net(tiles)
    times: dict[str, list[float]] = {name: [] for name in nets}
    for _ in range(reps):
        for name, net in nets.items():
            t0 = time.perf_counter()
            net(tiles)
            times[name].append((time.perf_counter() - t0) / batch * 1e3)
    return {name: statistics.median(v) for name, v in times.items()}


class _MemoryReader:
    """RegionReader stand-in: random pixels, no GDAL."""

    def __init__(self, width: int) -> None:
        self.rgb = np.random.default_rng(1).integers(0, 256, (3, TILE, width), dtype=np.uint8)
        self.valid = np.ones((TILE, width), dtype=bool)

    def read(self, x: int, y: int, width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
        return self.rgb[:, :height, :width].copy(), self.valid[:height, :width]


class _NoWriter:
    def add(self, y: int, rgb: np.ndarray, valid: np.ndarray) -> None:
        pass

    def close(self) -> None:
        pass


def engine_loop(ngf: int, batch: int, size: int) -> dict[str, float]:
    """ms per window of the engine's loop (threads, batches, model, blending) without GDAL."""
    tiles = TileGrid.over(size, size, TILE, OVERLAP)
    options = engine.RenderOptions(batch_size=batch, overlap=OVERLAP)
    out = {}
    for name, compiled in (("eager", False), ("compiled", True)):
        net = engine.TileRunner(random_model(ngf, "v1"), torch.device("cpu"), True,
                                window_weights(TILE, OVERLAP), batch, compiled)  # fmt: skip
        net(np.zeros((batch, 3, TILE, TILE), np.uint8))  # compile outside the clock
        t0 = time.perf_counter()
        engine.run_tiles(net, _MemoryReader(size + 2 * TILE), _NoWriter(), tiles,
                          range(len(tiles.ys)), (0, size), None, options,
                          engine.ProgressCounter(len(tiles), None, None))  # fmt: skip
        out[name] = (time.perf_counter() - t0) / len(tiles) * 1e3
    return out


def gdal_alone(scene_path: Path, work: Path) -> dict[str, float]:
    """CPU ms per window of reading the scene's windows (block-aligned row bands) and of writing
    a same-sized output (tiled DEFLATE, as the engine does)."""
    with rasterio.open(scene_path) as ds:
        size = ds.width
        tiles = TileGrid.over(size, size, TILE, OVERLAP)
        region = reader.RegionReader(ds, (1, 2, 3), None, scene_path.name)
        t0 = time.thread_time()
        for y in tiles.ys:
            region.read(tiles.xs[0], y, tiles.xs[-1] + TILE - tiles.xs[0], TILE)
        read_ms = (time.thread_time() - t0) / len(tiles) * 1e3
        grid = Grid(size, size, ds.transform, ds.crs)
    rows = np.asarray(
        np.random.default_rng(2).integers(0, 256, (3, TILE - OVERLAP, size)), dtype=np.uint8
    )
    valid = np.ones(rows.shape[1:], dtype=bool)
    out = work / "breakdown_write.tif"
    with output.create_output(out, grid, alpha=False) as dst:
        writer = output.BlockRowWriter(dst)
        t0 = time.thread_time()
        for y in range(0, size, rows.shape[1]):
            n = min(rows.shape[1], size - y)
            writer.add(y, rows[:, :n], valid[:n])
        writer.close()
        write_ms = (time.thread_time() - t0) / len(tiles) * 1e3
    out.unlink()
    return {"read": read_ms, "write": write_ms}


def whole_engine(scene: Path, work: Path, ngf: int, batch: int) -> dict[str, float]:
    """ms per window of render() (compiled: compile time included)."""
    out = {}
    for name, compiled in (("eager", False), ("compiled", True)):
        options = engine.RenderOptions(batch_size=batch, overwrite=True, compile=compiled)
        result = engine.render(scene, work / "breakdown.tif", random_model(ngf, "v1"), options)
        out[name] = result.seconds / result.windows * 1e3
    (work / "breakdown.tif").unlink()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--size", type=int, default=4096, help="scene side, pixels")
    ap.add_argument("--ngf", type=int, default=32)
    ap.add_argument("--batch-size", type=int, default=engine.AUTO_BATCH["cpu"])
    ap.add_argument("--reps", type=int, default=12)
    ap.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "geomap-gan-bench")
    args = ap.parse_args()

    os.environ.setdefault("GEOMAP_GAN_CACHE_DIR", str(args.work / "aot-cache"))
    print(describe())
    scene = make_scene(args.work, args.size, random_model(args.ngf, "v1").card.gsd)
    windows = len(TileGrid.over(args.size, args.size, TILE, OVERLAP))
    print(f"scene {args.size}^2 px, {windows} windows of {TILE} px (overlap {OVERLAP}), "
          f"ngf={args.ngf}, batch {args.batch_size}, bf16 where native; ms per window:")  # fmt: skip
    rows = [
        ("generator alone (median)", generator_alone(args.ngf, args.batch_size, args.reps)),
        ("engine loop, no GDAL", engine_loop(args.ngf, args.batch_size, args.size)),
        ("GDAL alone, CPU", gdal_alone(scene, args.work)),
        ("whole engine (compile included)", whole_engine(scene, args.work, args.ngf, args.batch_size)),
    ]  # fmt: skip
    for label, figures in rows:
        print(f"  {label:34s} " + ", ".join(f"{k} {v:.2f}" for k, v in figures.items()))


if __name__ == "__main__":
    main()
