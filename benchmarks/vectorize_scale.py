"""Peak memory (RSS) and time of ``vectorize`` against map size: memory must be bounded by the
strip, not by the map (target: a 16384^2 map under 1.5 GB and within 1.3x of a 4096^2 one).
First, the round trip on val map tiles: each layer rasterized back (lines buffered by half their
width) against its class mask, IoU pooled over the tiles and per tile.

The maps are synthetic but realistic: the real map halves of maps256/val (512x256 A|B pairs,
the right half a map in the legend's colours) tiled up to each size, with a UTM CRS and 1.9 m
pixels. Every step runs in its own child process. Each vectorize's peak RSS is the kernel's
account of that child (``os.wait4``) and, as a check, the child's own high-water mark (VmHWM):
Linux carries the parent's RSS at fork over into a child's ``ru_maxrss``, so this parent imports
nothing heavy and holds no data (numpy, torch, the tiles all live in the children).

    python benchmarks/vectorize_scale.py [--iou-tiles 200] [--sizes 4096 16384] [--format .gpkg]
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
VAL = HERE.parent.parent / "shared" / "data" / "maps256" / "val"
GSD = 1.9


def map_tiles(count: int) -> list[Any]:
    """The right (map) halves of the first ``count`` val pairs, as (256, 256, 3) uint8."""
    import numpy as np
    from PIL import Image

    files = sorted(VAL.glob("*.jpg"), key=lambda p: int(p.stem) if p.stem.isdigit() else 0)
    if not files:
        raise SystemExit(f"no map tiles in {VAL}: this benchmark needs ../shared/data/maps256")
    return [np.asarray(Image.open(f).convert("RGB"))[:, 256:] for f in files[:count]]


def make_map(path: Path, size: int, count: int) -> None:
    """A ``size`` x ``size`` map GeoTIFF tiled from ``count`` val tiles (written a row of tiles
    at a time)."""
    import numpy as np
    import rasterio
    from affine import Affine

    if path.exists():
        return
    tiles = map_tiles(count)
    t = tiles[0].shape[0]
    per_row = -(-size // t)
    profile = dict(driver="GTiff", width=size, height=size, count=3, dtype="uint8",
                   crs="EPSG:32633", transform=Affine(GSD, 0, 500000, 0, -GSD, 5000000),
                   tiled=True, blockxsize=256, blockysize=256, compress="deflate")  # fmt: skip
    tmp = path.with_suffix(".part.tif")
    with rasterio.open(tmp, "w", **profile) as ds:
        for r in range(per_row):
            row = np.concatenate([tiles[(r * per_row + c) % len(tiles)] for c in range(per_row)], 1)
            h = min(t, size - r * t)
            ds.write(np.moveaxis(row[:h, :size], -1, 0), window=((r * t, r * t + h), (0, size)))
    tmp.rename(path)


def round_trip(count: int, work: Path) -> None:
    """Print each layer's round-trip IoU over ``count`` val tiles: pooled, and the mean, 5th
    percentile and minimum over the tiles where the class covers at least 1%."""
    import numpy as np
    import pyogrio
    import rasterio
    import shapely
    from affine import Affine
    from rasterio.features import rasterize

    from geomap_gan.legend import class_masks
    from geomap_gan.vector import VectorizeOptions, vectorize
    from geomap_gan.vector.masks import exclusive

    names = ("water", "park", "road", "highway")
    transform = Affine(GSD, 0, 500000, 0, -GSD, 5000000)
    inter, union = dict.fromkeys(names, 0), dict.fromkeys(names, 0)
    per_tile: dict[str, list[float]] = {n: [] for n in names}
    src, dst = work / "roundtrip.tif", work / "roundtrip.gpkg"
    tiles = map_tiles(count)
    t0 = time.perf_counter()
    for img in tiles:
        with rasterio.open(
            src,
            "w",
            driver="GTiff",
            width=img.shape[1],
            height=img.shape[0],
            count=3,
            dtype="uint8",
            crs="EPSG:32633",
            transform=transform,
        ) as ds:
            ds.write(np.moveaxis(img, -1, 0))  # fmt: skip
        vectorize(src, dst, VectorizeOptions(overwrite=True))
        masks = exclusive(class_masks(img), np.ones(img.shape[:2], dtype=bool))
        for n in names:
            _, _, wkb, fields = pyogrio.raw.read(dst, layer=n)
            geoms = shapely.from_wkb(wkb) if wkb is not None else []
            if n in ("road", "highway") and len(geoms):
                geoms = shapely.buffer(geoms, fields[2] / 2)
            back = np.zeros(img.shape[:2], dtype=bool)
            if len(geoms):
                back = rasterize(geoms, out_shape=img.shape[:2], transform=transform) > 0
            i, u = int((back & masks[n]).sum()), int((back | masks[n]).sum())
            inter[n] += i
            union[n] += u
            if masks[n].mean() >= 0.01:
                per_tile[n].append(i / u)
    took = time.perf_counter() - t0
    print(
        f"round trip on {len(tiles)} val map tiles ({took:.0f} s, {took / len(tiles):.2f} s/tile):"
    )
    for n in names:
        v = np.array(per_tile[n])
        print(f"  {n:8s} IoU pooled {inter[n] / max(union[n], 1):.4f}; per tile (n={len(v)}, "
              f"class >= 1%): mean {v.mean():.4f}, 5th pct {np.percentile(v, 5):.4f}, "
              f"min {v.min():.4f}")  # fmt: skip


def vectorize_here(src: Path, dst: Path) -> None:
    """The measured step: one vectorize with the default options; prints its seconds, feature
    counts and this process's own peak RSS (VmHWM, MB)."""
    from geomap_gan.vector import VectorizeOptions, vectorize

    t = time.perf_counter()
    result = vectorize(src, dst, VectorizeOptions(overwrite=True))
    seconds = time.perf_counter() - t
    status = Path("/proc/self/status").read_text()
    hwm = next((int(ln.split()[1]) / 1024 for ln in status.splitlines()
                if ln.startswith("VmHWM:")), float("nan"))  # fmt: skip
    print(json.dumps(dict(seconds=seconds, features=result.features, vmhwm_mb=hwm)))


def child(*args: str) -> tuple[str, Any]:
    """Run this script's ``--stage`` ``args`` in a fresh interpreter: its output and usage."""
    proc = subprocess.Popen([sys.executable, __file__, "--stage", *args],
                            stdout=subprocess.PIPE, text=True)  # fmt: skip
    assert proc.stdout is not None
    printed = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"stage {args[0]} failed in a child process")
    return printed, usage


def stage(args: list[str]) -> None:
    """One step, in a child process."""
    name, rest = args[0], args[1:]
    if name == "machine":
        sys.path.insert(0, str(HERE))
        from _machine import describe

        print(describe())
    elif name == "roundtrip":
        round_trip(int(rest[0]), Path(rest[1]))
    elif name == "build":
        make_map(Path(rest[0]), int(rest[1]), int(rest[2]))
    elif name == "vectorize":
        vectorize_here(Path(rest[0]), Path(rest[1]))


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--stage":
        stage(sys.argv[2:])
        return
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--iou-tiles", type=int, default=200, help="round-trip tiles (0: skip)")
    ap.add_argument("--sizes", type=int, nargs="*", default=[4096, 16384])
    ap.add_argument("--tiles", type=int, default=256, help="distinct val tiles to repeat")
    ap.add_argument("--format", default=".gpkg", choices=[".gpkg", ".fgb", ".geojson", ".shp"])
    ap.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "geomap-gan-bench")
    args = ap.parse_args()

    print(child("machine")[0].strip(), flush=True)
    args.work.mkdir(parents=True, exist_ok=True)
    if args.iou_tiles:
        print(child("roundtrip", str(args.iou_tiles), str(args.work))[0].strip(), flush=True)
    peaks = {}
    for size in args.sizes:
        src = args.work / f"vectorize_map_{size}.tif"
        t0 = time.perf_counter()
        child("build", str(src), str(size), str(args.tiles))
        made = time.perf_counter() - t0
        dst = args.work / f"vectorize_out_{size}{args.format}"
        printed, usage = child("vectorize", str(src), str(dst))
        info = json.loads(printed.strip().splitlines()[-1])
        peaks[size] = peak = usage.ru_maxrss / 1024
        feats = ", ".join(f"{k} {v}" for k, v in info["features"].items())
        print(f"{size}x{size} px ({size * size / 1e6:.0f} MP, map ready in {made:.0f} s): "
              f"peak RSS {peak:.0f} MB (child's VmHWM {info['vmhwm_mb']:.0f} MB), "
              f"{info['seconds']:.0f} s ({size * size / 1e6 / info['seconds']:.2f} MP/s, "
              f"CPU {usage.ru_utime + usage.ru_stime:.0f} s); {feats}", flush=True)  # fmt: skip
        for p in dst.parent.glob(f"{dst.stem}*"):
            p.unlink()
    if len(peaks) > 1:
        small, large = min(peaks), max(peaks)
        print(f"peak RSS {large}^2 / {small}^2: {peaks[large] / peaks[small]:.2f}x")


if __name__ == "__main__":
    main()
