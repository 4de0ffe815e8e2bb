"""The engine's I/O ceiling: render() with a pass-through generator (read, resample, blend and
write only), at 1 and 2 (or --threads) GDAL I/O threads, on a scene at the model's GSD and one
that must be resampled (half the GSD).

Prints wall MP/s of map and MP per CPU-second (the ceiling per core: a host with N cores free for
I/O reaches about N times it while the work parallelises). Runs in this process, each case
after one warm-up, CPU time from the kernel (``resource.getrusage``). The resampled scene is
read both ways, side by side: the engine's own resampled reads (resample.ResampledView) and
GDAL's warper (WarpedVRT, what every resampled scene went through before).

    python benchmarks/render_io.py [--size 8192] [--threads 1,2] [--reps 2]
"""

from __future__ import annotations

import argparse
import contextlib
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine import describe  # noqa: E402
from _render_scene import make_scene  # noqa: E402

from geomap_gan.model.modelfile import MapModel, ModelCard  # noqa: E402
from geomap_gan.model.nets import receptive_radius  # noqa: E402
from geomap_gan.rendering import resample  # noqa: E402
from geomap_gan.rendering.engine import render  # noqa: E402
from geomap_gan.rendering.options import EngineSettings, RenderOptions  # noqa: E402

SCENES = Path(tempfile.gettempdir()) / "geomap-bench"


def pass_through(gsd: float) -> MapModel:
    """The default model's windowing (5 levels, antialiased, its receptive field), no network."""
    card = ModelCard(name="pass-through", ngf=32, num_downs=5, antialias=True,
                     receptive_field=receptive_radius(5, True), gsd=gsd)  # fmt: skip
    return MapModel(torch.nn.Identity(), card)


@contextlib.contextmanager
def reading_path(path: str):
    """``reads``: as the engine chooses; ``warper``: every resampled scene through WarpedVRT."""
    chooser = resample.can_resample_by_reads
    if path == "warper":
        resample.can_resample_by_reads = lambda ds, grid: False
    try:
        yield
    finally:
        resample.can_resample_by_reads = chooser


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def measure(
    scene: Path, out: Path, model: MapModel, threads: int, reps: int
) -> tuple[float, float]:
    """(MP/s of map, MP per CPU-second), medians over ``reps`` after a warm-up."""
    options = RenderOptions(overwrite=True, device="cpu", compile=False)
    engine = EngineSettings(io_threads=threads)
    render(scene, out, model, options, engine=engine)  # warm-up: page cache, imports
    rates, per_cpu = [], []
    for _ in range(reps):
        t0, c0 = time.perf_counter(), cpu_seconds()
        result = render(scene, out, model, options, engine=engine)
        wall, cpu = time.perf_counter() - t0, cpu_seconds() - c0
        mp = result.width * result.height / 1e6
        rates.append(mp / wall)
        per_cpu.append(mp / cpu)
    return statistics.median(rates), statistics.median(per_cpu)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=8192)
    parser.add_argument("--threads", default="1,2")
    parser.add_argument("--reps", type=int, default=2)
    parser.add_argument("--gsd", type=float, default=1.8881, help="the model GSD to emulate")
    args = parser.parse_args()
    torch.set_num_threads(1)  # nothing to compute: keep torch's pool out of the I/O figures
    print(describe())
    model = pass_through(args.gsd)
    print(f"{'scene':<36} {'path':>7} {'I/O threads':>11} {'MP/s':>7} {'MP/CPU-s':>9}")
    with tempfile.TemporaryDirectory() as tmp:
        for label, size, frac, paths in (
            ("at the model GSD", args.size, 1.0, ("direct",)),
            ("at half the GSD (resampled)", 2 * args.size, 0.5, ("reads", "warper")),
        ):
            scene = make_scene(SCENES, size, args.gsd * frac)
            for path in paths:
                for n in (int(t) for t in args.threads.split(",")):
                    with reading_path(path):
                        rate, per_cpu = measure(scene, Path(tmp) / "out.tif", model, n, args.reps)
                    print(f"{f'{size}^2 {label}':<36} {path:>7} {n:>11} {rate:7.1f} {per_cpu:9.1f}")


if __name__ == "__main__":
    main()
