"""Benchmark scenes for the render engine: a real aerial photo tiled up to any size.

The NAIP photo of ../shared/data/geotiff (934x723, R,G,B,NIR) is mirrored and repeated to the
requested size and written as a tiled, DEFLATE-compressed RGB GeoTIFF whose pixels are already at
the model's GSD, so the benchmark measures tiling, inference, blending and I/O, not resampling.
Scenes are written strip by strip (bounded memory) and cached by size in a work folder.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import rasterio
from affine import Affine

ROOT = Path(__file__).resolve().parents[1]
SOURCE = ROOT.parent / "shared" / "data" / "geotiff" / "naip_nd_2015.tif"
STRIP = 512  # rows written at a time


def _mirrored(tile: np.ndarray) -> np.ndarray:
    """A 2x2 mosaic of the tile and its mirror images: repeats without hard edges."""
    top = np.concatenate([tile, tile[:, :, ::-1]], axis=2)
    return np.concatenate([top, top[:, ::-1]], axis=1)


def make_scene(folder: Path, size: int, gsd: float) -> Path:
    """A ``size`` x ``size`` RGB uint8 GeoTIFF at ``gsd`` metres per pixel (cached)."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"naip_tiled_{size}_{gsd:.4f}.tif"
    if path.exists():
        return path
    with rasterio.open(SOURCE) as src:
        base = _mirrored(src.read([1, 2, 3]))
        crs, origin = src.crs, (src.transform.c, src.transform.f)
    bh, bw = base.shape[1:]
    reps_x = -(-size // bw)
    profile = dict(
        driver="GTiff", width=size, height=size, count=3, dtype="uint8", crs=crs,
        transform=Affine(gsd, 0, origin[0], 0, -gsd, origin[1]), tiled=True, blockxsize=512,
        blockysize=512, compress="deflate", predictor=2, photometric="RGB",
        BIGTIFF="IF_SAFER",
    )  # fmt: skip
    tmp = path.with_suffix(".partial.tif")
    with rasterio.open(tmp, "w", **profile) as dst:
        for y in range(0, size, STRIP):
            rows = np.arange(y, min(y + STRIP, size)) % bh
            strip = np.tile(base[:, rows], (1, 1, reps_x))[:, :, :size]
            dst.write(strip, window=((y, y + len(rows)), (0, size)))
    tmp.replace(path)
    return path
