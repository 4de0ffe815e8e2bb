"""Whole-process render time of two (or more) model files side by side, as a user sees it.

Runs ``geomap-gan render SCENE OUT -q --overwrite --json --model M`` (default settings otherwise)
for each model, compiled (a warm cache: each model's library is built by a first, untimed render)
and eager (``--no-compile``), in fresh processes, rounds interleaved (A B A B ...) so that another
job on the cores slows them alike. Prints per model and mode the median wall time, MP/s of map,
peak RSS (the kernel's accounting of the child) and the speed-up over the first model by the
median. The scene is the real NAIP photo tiled up (see _render_scene.py) at a fraction of the
first model's GSD (default: 16384^2 px at half the GSD, 8192^2 px of map).

    python benchmarks/model_render.py geomap_gan/models/default.safetensors runs/s/model.safetensors
        [--size 16384] [--gsd-fraction 0.5] [--reps 3] [--modes compiled,eager]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _child_render import run_command  # noqa: E402
from _machine import describe  # noqa: E402
from _render_scene import make_scene  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SCENES = Path(os.environ.get("GEOMAP_GAN_BENCH_DIR", Path(tempfile.gettempdir()) / "geomap-bench"))


def run(model: Path, scene: Path, out: Path, mode: str) -> dict[str, float]:
    """One whole ``geomap-gan render`` in a fresh process: wall s, MP of map, peak RSS GB."""
    flag = "--compile" if mode == "compiled" else "--no-compile"
    cmd = [sys.executable, "-m", "geomap_gan", "-q", "render", str(scene), str(out), "--overwrite",
           "--json", "--model", str(model), flag]  # fmt: skip
    wall, printed, usage = run_command(cmd, ROOT)
    data = json.loads(printed)
    if data["generator"] != mode:
        raise SystemExit(f"{model} ran {data['generator']}, not {mode}")
    return {"wall": wall, "mp": data["width"] * data["height"] / 1e6, **usage}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="+", type=Path, help="model files; the first is the base")
    parser.add_argument("--size", type=int, default=16384, help="scene side, px")
    parser.add_argument("--gsd-fraction", type=float, default=0.5, help="scene GSD / model GSD")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--modes", default="compiled,eager")
    args = parser.parse_args()
    from geomap_gan.model.modelfile import load_model

    print(describe())
    gsd = load_model(args.models[0]).card.gsd
    scene = make_scene(SCENES, args.size, gsd * args.gsd_fraction)
    modes = args.modes.split(",")
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "map.tif"
        if "compiled" in modes:
            for model in args.models:  # warm the compile cache, untimed
                run(model, scene, out, "compiled")
        times: dict[tuple[str, int], list[dict[str, float]]] = {}
        for _ in range(args.reps):
            for mode in modes:
                for i, model in enumerate(args.models):
                    times.setdefault((mode, i), []).append(run(model, scene, out, mode))
    print(f"scene {args.size}^2 px at {args.gsd_fraction:g}x the model GSD ({gsd:.4g} m), "
          f"{args.reps} rounds, median wall; speed-up against {args.models[0].name}")  # fmt: skip
    for mode in modes:
        base = statistics.median(r["wall"] for r in times[(mode, 0)])
        for i, model in enumerate(args.models):
            runs = times[(mode, i)]
            wall = statistics.median(r["wall"] for r in runs)
            cpu = statistics.median(r["cpu"] for r in runs)
            walls = " ".join(f"{r['wall']:.1f}" for r in runs)
            rss = max(r["rss_gb"] for r in runs)
            print(f"{mode:<9} {str(model):<48} {wall:6.1f} s ({walls}) {cpu:6.1f} CPU-s "
                  f"{runs[0]['mp'] / wall:5.2f} MP/s {rss:5.2f} GB  x{base / wall:.2f}")  # fmt: skip


if __name__ == "__main__":
    main()
