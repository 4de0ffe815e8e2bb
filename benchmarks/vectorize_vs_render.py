"""Vectorizing a map against rendering it: the issue's floor is that ``vectorize`` costs at most a
quarter of the time the render of that map took. Also the block-border check on the same real
render: its features vectorized in strips (the default) and in one strip of the whole map must
be the same features.

The scene is the real NAIP photo of ../shared/data/geotiff tiled up to SIZE x SIZE at the
bundled model's GSD (benchmarks/_render_scene.py); it is rendered with the bundled model and
default options, as ``geomap-gan render`` does, then the map is vectorized with the default
options, as ``geomap-gan vectorize`` does. Each step runs in its own child process; its wall time
is the library call's own (the process's start, imports and model load are printed beside it),
its peak RSS the kernel's account of the child (``os.wait4``).

    python benchmarks/vectorize_vs_render.py [--size 8192] [--work /tmp/geomap-gan-bench]
        [--no-whole]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent


def child(*args: str) -> tuple[dict[str, Any], Any, float]:
    """Run this script's ``--stage`` ``args`` in a fresh interpreter: its JSON line, usage and
    wall seconds (start-up included)."""
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, __file__, "--stage", *args],
                            stdout=subprocess.PIPE, text=True)  # fmt: skip
    assert proc.stdout is not None
    printed = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"stage {args[0]} failed in a child process")
    return json.loads(printed.strip().splitlines()[-1]), usage, wall


def stage(args: list[str]) -> None:
    """One step, in a child process; prints one JSON line."""
    name, rest = args[0], args[1:]
    if name == "machine":
        sys.path.insert(0, str(HERE))
        from _machine import describe

        print(json.dumps({"machine": describe()}))
    elif name == "scene":
        sys.path.insert(0, str(HERE))
        from _render_scene import make_scene

        from geomap_gan.model.modelfile import load_model

        gsd = load_model(None).card.gsd
        print(json.dumps({"scene": str(make_scene(Path(rest[0]), int(rest[1]), gsd))}))
    elif name == "render":
        from geomap_gan.device import configure_process, resolve_device
        from geomap_gan.model.modelfile import load_model
        from geomap_gan.rendering.engine import RenderOptions, render

        options = RenderOptions(overwrite=True)
        device = resolve_device(options.device)
        configure_process(device, options.threads)  # as the CLI does
        result = render(rest[0], rest[1], load_model(None, device), options)
        print(json.dumps({"seconds": result.seconds, "width": result.width,
                          "height": result.height, "windows": result.windows}))  # fmt: skip
    elif name == "vectorize":
        from geomap_gan.vector import VectorizeOptions, vectorize

        rows = int(rest[2])
        t = time.perf_counter()
        result = vectorize(rest[0], rest[1], VectorizeOptions(overwrite=True, strip_rows=rows))
        print(json.dumps({"seconds": time.perf_counter() - t, "features": result.features}))
    elif name == "compare":
        print(json.dumps({"same": same_features(Path(rest[0]), Path(rest[1]))}))


def same_features(a: Path, b: Path) -> dict[str, bool]:
    """Per layer: the two files hold the same features (geometry exactly, and attributes),
    whatever their order."""
    import numpy as np
    import pyogrio
    import shapely

    out = {}
    for layer in ("water", "park", "road", "highway"):
        ra, rb = pyogrio.raw.read(a, layer=layer), pyogrio.raw.read(b, layer=layer)
        wa = [] if ra[2] is None else shapely.to_wkb(shapely.normalize(shapely.from_wkb(ra[2])))
        wb = [] if rb[2] is None else shapely.to_wkb(shapely.normalize(shapely.from_wkb(rb[2])))
        ka = sorted(range(len(wa)), key=lambda k: bytes(wa[k]))
        kb = sorted(range(len(wb)), key=lambda k: bytes(wb[k]))
        same = len(wa) == len(wb) and all(
            bytes(wa[i]) == bytes(wb[j]) for i, j in zip(ka, kb, strict=True)
        )
        out[layer] = same and all(
            np.array_equal(np.asarray(fa)[ka], np.asarray(fb)[kb])
            for fa, fb in zip(ra[3], rb[3], strict=True)
        )
    return out


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--stage":
        stage(sys.argv[2:])
        return
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--size", type=int, default=8192, help="scene side, pixels at the model GSD")
    ap.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "geomap-gan-bench")
    ap.add_argument("--no-whole", action="store_true",
                    help="skip the block-border check (one strip of the whole map)")  # fmt: skip
    args = ap.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    print(child("machine")[0]["machine"], flush=True)
    scene = child("scene", str(args.work), str(args.size))[0]["scene"]
    mapfile = args.work / f"vectorize_vs_render_map_{args.size}.tif"
    out = args.work / f"vectorize_vs_render_{args.size}.gpkg"
    r, r_use, r_wall = child("render", scene, str(mapfile))
    v, v_use, v_wall = child("vectorize", str(mapfile), str(out), "0")
    mp = r["width"] * r["height"] / 1e6
    print(f"render    {r['width']}x{r['height']} px ({mp:.0f} MP of map, {r['windows']} windows): "
          f"{r['seconds']:.1f} s (process {r_wall:.1f} s, CPU {r_use.ru_utime + r_use.ru_stime:.0f} s),"
          f" peak RSS {r_use.ru_maxrss / 1024:.0f} MB", flush=True)  # fmt: skip
    feats = ", ".join(f"{k} {n}" for k, n in v["features"].items())
    print(f"vectorize {v['seconds']:.1f} s (process {v_wall:.1f} s, CPU "
          f"{v_use.ru_utime + v_use.ru_stime:.0f} s), peak RSS {v_use.ru_maxrss / 1024:.0f} MB; "
          f"{feats}", flush=True)  # fmt: skip
    print(
        f"vectorize / render: {v['seconds'] / r['seconds']:.2f} (floor: at most 0.25); "
        f"whole processes {v_wall / r_wall:.2f}",
        flush=True,
    )
    if not args.no_whole:
        whole = args.work / f"vectorize_vs_render_{args.size}_whole.gpkg"
        w, w_use, _ = child("vectorize", str(mapfile), str(whole), str(r["height"]))
        same = child("compare", str(out), str(whole))[0]["same"]
        print(
            "block borders: in strips vs the whole map as one strip "
            f"({w['seconds']:.1f} s, peak RSS {w_use.ru_maxrss / 1024:.0f} MB):"
        )
        for layer, n in v["features"].items():
            print(
                f"  {layer:8s} {n} vs {w['features'][layer]} features, "
                f"{'identical' if same[layer] else 'DIFFERENT'}"
            )
        whole.unlink()


if __name__ == "__main__":
    main()
