"""Render throughput: megapixels of input (at the model's GSD) per second, for the engine and for
a naive baseline measured in the same run on the same scene.

The naive baseline renders the way reference pix2pix test scripts do: one 256 px tile at a time,
fp32, NCHW, no overlap, no blending, no prefetch (read, infer, write in turn); it writes the same
tiled DEFLATE GeoTIFF as the engine so that only the rendering strategy differs.

The scene is the real NAIP photo of ../shared/data/geotiff tiled up to --size (see
_render_scene.py); the generator is a randomly initialised pix2pix U-Net (speed does not depend on
the weights).

    python benchmarks/render_throughput.py [--size 8192] [--ngf 32] [--device auto]
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import rasterio
import torch
from rasterio.windows import Window

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _child_render import render_in_child  # noqa: E402
from _machine import describe  # noqa: E402
from _render_scene import make_scene  # noqa: E402

from geomap_gan.device import configure_process, resolve_device  # noqa: E402
from geomap_gan.model.modelfile import MapModel, ModelCard, build_generator  # noqa: E402
from geomap_gan.model.nets import init_weights, receptive_radius  # noqa: E402
from geomap_gan.rendering.output import gtiff_options  # noqa: E402

ARCHS = {
    # v1: pix2pix unet_256 (8 levels) on blended 256 px windows, the default model until v2
    "v1": dict(num_downs=8),
    # v2: 5 levels, antialiased downsampling, bounded receptive field: core windows
    "v2": dict(num_downs=5, antialias=True, receptive_field=receptive_radius(5, True)),
}


def random_model(ngf: int, arch: str = "v2") -> MapModel:
    """A randomly initialised generator of the default model's architecture (speed does not
    depend on the weights)."""
    torch.manual_seed(0)
    card = ModelCard(name=f"random-{arch}-ngf{ngf}", ngf=ngf, **ARCHS[arch])  # type: ignore[arg-type]
    return MapModel(init_weights(build_generator(card)).eval(), card)


@torch.inference_mode()
def naive_render(src: Path, dst: Path, model: MapModel, device: torch.device) -> float:
    """One tile at a time, fp32, no overlap: returns seconds."""
    t0 = time.perf_counter()
    net = model.generator.to(device).eval()
    tile = model.card.tile_size
    with rasterio.open(src) as s:
        profile = dict(driver="GTiff", width=s.width, height=s.height, count=3, dtype="uint8",
                       crs=s.crs, transform=s.transform, **gtiff_options(alpha=False))  # fmt: skip
        with rasterio.open(dst, "w", **profile) as d:
            for y in range(0, s.height, tile):
                for x in range(0, s.width, tile):
                    w, h = min(tile, s.width - x), min(tile, s.height - y)
                    a = np.zeros((3, tile, tile), np.uint8)
                    a[:, :h, :w] = s.read([1, 2, 3], window=Window(x, y, w, h))
                    inp = torch.from_numpy(a)[None].float().div(127.5).sub(1).to(device)
                    out = net(inp)[0].add(1).mul(127.5).clamp(0, 255).byte().cpu().numpy()
                    d.write(out[:, :h, :w], window=Window(x, y, w, h))
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - t0


def cpu_seconds() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--size", type=int, default=8192, help="scene side, pixels (>= 8000)")
    ap.add_argument("--ngf", type=int, default=32)
    ap.add_argument("--batch-size", type=int, default=0, help="0: the engine's choice")
    ap.add_argument("--overlap", type=int, default=32, help="blended windows (v1) only")
    ap.add_argument("--arch", choices=sorted(ARCHS), default="v2", help="generator architecture")
    ap.add_argument("--window", type=int, default=1024, help="core windows (v2) only, pixels")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--no-amp", action="store_true")
    ap.add_argument(
        "--compile",
        choices=["off", "on", "all"],
        default="all",
        help="off: eager; on: compiled generator from a cold then a warm cache (aot.py; the "
        "compile time counts in the cold run); all: the three runs",
    )
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    ap.add_argument(
        "--co",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="GTiff creation option for the engine's output (repeatable)",
    )
    ap.add_argument("--skip-naive", action="store_true")
    ap.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "geomap-gan-bench")
    args = ap.parse_args()

    device = resolve_device(args.device)
    configure_process(device, args.threads)  # as the CLI does (the naive loop runs here)
    print(describe())
    print(f"load average before: {os.getloadavg()}")
    model = random_model(args.ngf, args.arch)
    scene = make_scene(args.work, args.size, model.card.gsd)
    mp = args.size * args.size / 1e6
    print(f"scene: {scene.name}, {args.size}x{args.size} px = {mp:.1f} MP at {model.card.gsd:.3f} "
          f"m/px; generator {args.arch} ngf={args.ngf}; device {device}")  # fmt: skip

    runs = {"off": [False], "on": ["cold", "warm"], "all": [False, "cold", "warm"]}[args.compile]
    cache = args.work / "aot-cache"
    os.environ["GEOMAP_GAN_CACHE_DIR"] = str(cache)
    speeds = {}
    for run in runs:
        if run == "cold":
            shutil.rmtree(cache, ignore_errors=True)
        options = dict(overlap=args.overlap, window=args.window, batch_size=args.batch_size,
                       device=str(device),
                       amp=not args.no_amp, overwrite=True, compile=bool(run),
                       threads=args.threads,
                       creation_options=dict(co.split("=", 1) for co in args.co))  # fmt: skip
        out = args.work / "engine_out.tif"
        result = render_in_child(scene, out, args.ngf, options, args.arch)
        name = {False: "eager", "cold": "compiled, cold cache", "warm": "compiled, warm cache"}[run]
        speeds[name] = mp / result["seconds"]
        layout = f"overlap {args.overlap}" if args.arch == "v1" else f"window {args.window}"
        print(f"engine ({name}, fresh process): {layout}, batch "
              f"{args.batch_size or 'auto'}, amp={'off' if args.no_amp else 'bf16 where native'}: "
              f"{result['seconds']:.1f} s, {speeds[name]:.2f} MP/s, {result['windows']} windows, "
              f"CPU {result['cpu']:.0f} s")  # fmt: skip
        out.unlink()
    if not args.skip_naive:
        naive_model = random_model(args.ngf, "v1")
        c0 = cpu_seconds()
        seconds = naive_render(scene, args.work / "naive_out.tif", naive_model, device)
        naive = mp / seconds
        print(f"naive baseline (1 tile at a time, fp32, no overlap, no prefetch): {seconds:.1f} s, "
              f"{naive:.2f} MP/s, CPU {cpu_seconds() - c0:.0f} s")  # fmt: skip
        (args.work / "naive_out.tif").unlink()
        for name, speed in speeds.items():
            print(f"speed-up, engine ({name}) / naive: {speed / naive:.2f}x")
    print(f"load average after: {os.getloadavg()}")


if __name__ == "__main__":
    main()
