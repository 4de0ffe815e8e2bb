"""Scenes per minute of ``render_many`` on a local Dask cluster of 1 and 2 workers, one scene in
strips on 2 workers, and the per-tile costs that the scale-out estimate in docs/scaleout.md is
built from.

Each worker is a single-threaded Dask process whose torch uses its share of the cores
(cores // workers). Scenes are the real NAIP photo of ../shared/data/geotiff tiled to --size px at
the model's GSD (_render_scene.py; no resampling), as --scenes links to one file; the generator is
a randomly initialised pix2pix U-Net of --ngf saved as a model file (speed does not depend on the
weights). Every cluster first renders one warm-up scene per worker (model load, oneDNN kernel
choice), reported apart, then the timed batch into a fresh folder.

Per-tile costs, in this process with all cores: the generator alone (bf16 where native, batch
--batch-size, channels_last), and the engine with an identity "generator" (reading, blending,
writing: everything but the model), both in ms per 256 px window.

    python benchmarks/dask_scenes.py [--scenes 8] [--size 2048] [--workers 1 2] [--ngf 32]
        [--strip-size 4096]
"""

from __future__ import annotations

import argparse
import logging
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine import describe  # noqa: E402
from _render_scene import make_scene  # noqa: E402

from geomap_gan.model.modelfile import MapModel, ModelCard, build_generator, save_model  # noqa: E402
from geomap_gan.model.nets import init_weights  # noqa: E402
from geomap_gan.rendering.engine import RenderOptions, render  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def model_file(folder: Path, ngf: int) -> Path:
    torch.manual_seed(0)
    card = ModelCard(name=f"random-ngf{ngf}", ngf=ngf)
    return save_model(MapModel(init_weights(build_generator(card)), card), folder / "m.safetensors")


def tile_cost(scene: Path, model: Path, options: RenderOptions, threads: int) -> dict[str, float]:
    """In this process with ``threads`` torch threads: the generator alone on a batch of 256 px
    tiles (ms/tile), the engine around an identity generator (ms/window: I/O and blending only),
    and a whole render (ms/window)."""
    from geomap_gan.device import autocast, resolve_device
    from geomap_gan.model.modelfile import load_model

    torch.set_num_threads(threads)
    device = resolve_device(options.device)
    m = load_model(model, device)
    net = m.generator.to(device, memory_format=torch.channels_last).eval()
    x = torch.rand(options.batch_size, 3, 256, 256, device=device).mul(2).sub(1)
    x = x.contiguous(memory_format=torch.channels_last)
    with torch.inference_mode(), autocast(device, options.amp):
        for _ in range(2):
            net(x)
        n = 4
        t0 = time.perf_counter()
        for _ in range(n):
            net(x)
        if device.type == "cuda":
            torch.cuda.synchronize()
        model_ms = (time.perf_counter() - t0) / (n * options.batch_size) * 1e3
    identity = MapModel(torch.nn.Identity(), m.card)  # type: ignore[arg-type]
    with tempfile.TemporaryDirectory(dir=scene.parent) as tmp:
        io = render(scene, Path(tmp) / "io.tif", identity, options)
        r = render(scene, Path(tmp) / "one.tif", m, options)
    return {
        "model_ms_per_tile": model_ms,
        "io_ms_per_window": io.seconds / max(1, io.windows) * 1e3,
        "io_mp_per_s": io.megapixels_per_second,
        "render_ms_per_window": r.seconds / max(1, r.windows) * 1e3,
        "render_mp_per_s": r.megapixels_per_second,
        "windows_per_scene": r.windows,
    }


def scenes_per_minute(
    scenes: list[Path], model: Path, options: RenderOptions, workers: int, work: Path
) -> tuple[float, float, float]:
    """(scenes/min, warm-up seconds, timed seconds) on a fresh local cluster of ``workers``."""
    from distributed import Client, LocalCluster

    from geomap_gan.distributed import render_many

    t0 = time.perf_counter()
    with (
        LocalCluster(
            n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=":0"
        ) as cluster,
        Client(cluster) as client,
    ):
        # warm-up: every worker loads the model and runs one scene
        warm = [work / f"warm{workers}_{k}" for k in range(workers)]
        for k, folder in enumerate(warm):
            folder.mkdir()
            (folder / f"w{k}.tif").symlink_to(scenes[0])
        render_many(warm, work / f"warm_out{workers}", model, options, scheduler=client)
        warmup = time.perf_counter() - t0
        t1 = time.perf_counter()
        report = render_many(scenes, work / f"out{workers}", model, options, scheduler=client)
        seconds = time.perf_counter() - t1
    if report.failed:
        raise SystemExit(f"{len(report.failed)} scene(s) failed: {report.failed[0].error}")
    return len(report.rendered) / seconds * 60, warmup, seconds


def strips_run(scene: Path, model: Path, options: RenderOptions, work: Path) -> None:
    """One scene in 2 strips on 2 workers, assembled into a GeoTIFF: where the time goes."""
    from distributed import Client, LocalCluster

    from geomap_gan.distributed import render_strips

    with (
        LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0"
        ) as c,
        Client(c) as client,
    ):
        r = render_strips(scene, work / "strips.tif", model, options, scheduler=client, n_strips=2)
    mp = r.width * r.height / 1e6
    print(
        f"strips: {r.width}x{r.height} px in {len(r.strips)} strips on 2 workers: strips "
        f"{', '.join(f'{s:.1f}' for s in r.strip_seconds)} s (model load included), assembly on "
        f"the client {r.assemble_seconds:.1f} s ({mp / r.assemble_seconds:.1f} MP/s), "
        f"total {r.seconds:.1f} s with cluster start"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--scenes", type=int, default=8)
    ap.add_argument("--size", type=int, default=2048, help="Scene side, px at the model GSD.")
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--ngf", type=int, default=32)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--overlap", type=int, default=32)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--strip-size", type=int, default=4096, help="Side of the strips scene, px.")
    ap.add_argument("--work", type=Path, default=ROOT / ".data" / "bench")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    import distributed  # noqa: F401  (sets Dask's log levels on import; quieten them next)

    logging.getLogger("distributed").setLevel(logging.WARNING)

    print(describe())
    busy = subprocess.run(
        ["pgrep", "-f", "train ../shared/data/maps286"], capture_output=True, text=True
    ).stdout.split()
    if busy:
        print(f"WARNING: a training run is going (pids {' '.join(busy)}): figures are distorted")
    options = RenderOptions(overlap=args.overlap, batch_size=args.batch_size, device=args.device)
    print(
        f"settings: {args.scenes} scenes of {args.size}x{args.size} px (real NAIP photo tiled, at "
        f"the model GSD), ngf={args.ngf} random weights, 256 px tiles, overlap {args.overlap}, "
        f"batch {args.batch_size}, device {args.device}, amp {options.amp}, 1 thread per Dask "
        f"worker process, torch threads per worker = cores // workers"
    )
    args.work.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=args.work) as tmp:
        work = Path(tmp)
        model = model_file(work, args.ngf)
        card_gsd = ModelCard().gsd
        scene = make_scene(args.work, args.size, card_gsd)
        scenes = []
        for k in range(args.scenes):
            link = work / f"scene_{k:03d}.tif"
            link.symlink_to(scene)
            scenes.append(link)
        cost = tile_cost(scene, model, options, os.cpu_count() or 1)
        print(
            f"per window (this process, {os.cpu_count()} threads): generator alone "
            f"{cost['model_ms_per_tile']:.1f} ms per 256 px tile; engine without model (read, "
            f"blend, write) {cost['io_ms_per_window']:.2f} ms ({cost['io_mp_per_s']:.1f} MP/s); "
            f"whole render {cost['render_ms_per_window']:.1f} ms ({cost['render_mp_per_s']:.2f} "
            f"MP/s, {cost['windows_per_scene']} windows per scene)"
        )
        first = None
        for w in args.workers:
            spm, warmup, seconds = scenes_per_minute(scenes, model, options, w, work)
            first = first or (w, spm)
            print(
                f"workers={w}: {spm:.1f} scenes/min ({args.scenes} scenes in {seconds:.1f} s, "
                f"{spm * args.size**2 / 60e6:.2f} MP/s, {spm / first[1]:.2f}x the "
                f"{first[0]}-worker figure) [cluster start + warm-up {warmup:.1f} s, not counted]"
            )
        if args.strip_size:
            strips_run(make_scene(args.work, args.strip_size, card_gsd), model, options, work)


if __name__ == "__main__":
    main()
