"""Which compression suits a map: write time and file size of one map-style raster with each
GTiff codec and level, side by side in one process.

The map is real: map halves of the maps val split (Google-style maps in the legend's colours)
tiled to SIZE x SIZE, written as the renderer writes (RGB, 256 px tiles, the given codec), each
case after one warm-up, best of REPS. A map is flat colours and thin strokes, so a low DEFLATE
level or ZSTD may cost much less time than the level a photo needs for the same size.

    python benchmarks/output_codec.py [--size 4096] [--reps 2] [--threads 1]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import rasterio
from PIL import Image
from rasterio.transform import from_origin

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine import describe  # noqa: E402

VAL = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "maps256" / "val"
CASES = {
    "DEFLATE level 6 (GDAL's default)": {"COMPRESS": "DEFLATE", "PREDICTOR": "2"},
    "DEFLATE level 1": {"COMPRESS": "DEFLATE", "ZLEVEL": "1", "PREDICTOR": "2"},
    "DEFLATE level 3": {"COMPRESS": "DEFLATE", "ZLEVEL": "3", "PREDICTOR": "2"},
    "DEFLATE level 1, no predictor": {"COMPRESS": "DEFLATE", "ZLEVEL": "1"},
    "ZSTD level 1": {"COMPRESS": "ZSTD", "ZSTD_LEVEL": "1", "PREDICTOR": "2"},
    "ZSTD level 3": {"COMPRESS": "ZSTD", "ZSTD_LEVEL": "3", "PREDICTOR": "2"},
    "LZW": {"COMPRESS": "LZW", "PREDICTOR": "2"},
    "LZW, no predictor": {"COMPRESS": "LZW"},
    "none": {"COMPRESS": "NONE"},
}


def real_map(size: int) -> np.ndarray:
    """(3, size, size) uint8: the val split's map halves side by side, row by row."""
    tiles = [np.asarray(Image.open(p).convert("RGB"))[:, 256:] for p in sorted(VAL.glob("*.jpg"))]
    per_row = size // 256
    rows = []
    for r in range(per_row):
        row = [tiles[(r * per_row + c) % len(tiles)] for c in range(per_row)]
        rows.append(np.concatenate(row, axis=1))
    return np.ascontiguousarray(np.concatenate(rows, axis=0).transpose(2, 0, 1))


def write(path: Path, rgb: np.ndarray, options: dict[str, str], threads: int) -> float:
    """Seconds to write ``rgb`` as a tiled GeoTIFF with ``options``, in 1024-row strips."""
    _, h, w = rgb.shape
    profile = dict(driver="GTiff", width=w, height=h, count=3, dtype="uint8", tiled=True,
                   blockxsize=256, blockysize=256, crs="EPSG:32618",
                   transform=from_origin(500000, 4500000, 1.9, 1.9), NUM_THREADS=str(threads),
                   **options)  # fmt: skip
    t0 = time.perf_counter()
    with rasterio.open(path, "w", **profile) as dst:
        for y in range(0, h, 1024):
            win = rasterio.windows.Window(0, y, w, min(1024, h - y))
            dst.write(rgb[:, y : y + 1024], window=win)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=4096)
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1, help="GDAL's NUM_THREADS for compression")
    args = ap.parse_args()
    print(describe())
    print(f"map: {args.size}^2 px from {VAL} map halves; GDAL threads {args.threads}")
    rgb = real_map(args.size)
    mp = rgb.shape[1] * rgb.shape[2] / 1e6
    with tempfile.TemporaryDirectory() as tmp:
        base = None
        for name, options in CASES.items():
            path = Path(tmp) / "map.tif"
            write(path, rgb, options, args.threads)  # warm-up
            best = min(write(path, rgb, options, args.threads) for _ in range(args.reps))
            size = path.stat().st_size / 1e6
            base = base or (best, size)
            print(f"{name:<34} {best:6.2f} s  {mp / best:6.1f} MP/s  {size:7.1f} MB  "
                  f"time x{best / base[0]:.2f}  size x{size / base[1]:.2f}")  # fmt: skip


if __name__ == "__main__":
    main()
