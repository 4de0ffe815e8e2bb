"""1:1 crops for the README: for each real scene in ../shared/data/geotiff, a full-resolution crop
(no downscaling) of the input resampled to the map grid | the map of model A | the map of model B.

    python scripts/readme_crops.py OLD.safetensors NEW.safetensors docs/crops [--scene NAME --at FX,FY]

Each scene is rendered with ``render`` at the default settings (scenes render refuses as too
coarse are rendered at their own GSD, as its message advises); the crop is ``--size`` px of the
map grid around the point given in CROPS (fractions of the width and height), else the centre.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
import rasterio
from PIL import Image
from rasterio.enums import Resampling
from rasterio.vrt import WarpedVRT

from geomap_gan.errors import InputError
from geomap_gan.model.modelfile import load_model
from geomap_gan.rendering.engine import RenderOptions, render

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "geotiff"
CROPS = {"naip_nd_2015.tif": (0.42, 0.55), "drone_alpha_irregular.tif": (0.5, 0.5)}


def map_grid_input(src: Path, like: rasterio.DatasetReader, bands: list[int]) -> np.ndarray:
    """The input resampled onto the map's grid (8-bit stretched per band for non-uint8)."""
    with rasterio.open(src) as s, WarpedVRT(s, crs=like.crs, transform=like.transform,
                                            width=like.width, height=like.height,
                                            resampling=Resampling.cubic) as vrt:  # fmt: skip
        data = vrt.read(bands).astype(np.float64)
    if data.max() > 255 or data.dtype.kind == "f":
        lo, hi = np.nanpercentile(data, 2, axis=(1, 2)), np.nanpercentile(data, 98, axis=(1, 2))
        data = (data - lo[:, None, None]) / np.maximum(hi - lo, 1e-9)[:, None, None] * 255
    return np.clip(np.nan_to_num(data), 0, 255).astype(np.uint8).transpose(1, 2, 0)


def render_map(src: Path, dst: Path, model) -> Path:
    try:
        render(src, dst, model, RenderOptions(overwrite=True))
    except InputError:  # far coarser than the model's GSD: at the scene's own, as advised
        with rasterio.open(src) as s:
            render(src, dst, model, RenderOptions(overwrite=True, gsd=abs(s.transform.a)))
    return dst


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("old")
    ap.add_argument("new")
    ap.add_argument("out_dir", type=Path)
    ap.add_argument("--size", type=int, default=360, help="crop side, map pixels")
    ap.add_argument("--scene", default="*", help="only scenes matching this glob (file name)")
    ap.add_argument("--at", default=None, help="FX,FY: crop centre as fractions of the map")
    args = ap.parse_args()
    at = tuple(float(v) for v in args.at.split(",")) if args.at else None
    models = [load_model(args.old), load_model(args.new)]
    args.out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        for src in sorted(DATA.glob(f"{args.scene}.tif")):
            maps = [render_map(src, Path(tmp) / f"{i}.tif", m) for i, m in enumerate(models)]
            with rasterio.open(maps[1]) as like:
                with rasterio.open(src) as s:
                    bands = [1, 2, 3] if s.count >= 3 else [1, 1, 1]
                panels = [map_grid_input(src, like, bands)]
            for path in maps:
                with rasterio.open(path) as m, WarpedVRT(m, crs=like.crs, transform=like.transform,
                                                         width=like.width, height=like.height) as v:  # fmt: skip
                    panels.append(v.read([1, 2, 3]).transpose(1, 2, 0))
            h, w = panels[0].shape[:2]
            fx, fy = at or CROPS.get(src.name, (0.5, 0.5))
            size = min(args.size, h, w)
            y0 = int(np.clip(fy * h - size / 2, 0, h - size))
            x0 = int(np.clip(fx * w - size / 2, 0, w - size))
            gap = np.full((size, 4, 3), 255, np.uint8)
            row = [p[y0 : y0 + size, x0 : x0 + size] for p in panels]
            strip = np.concatenate([row[0], gap, row[1], gap, row[2]], axis=1)
            out = args.out_dir / f"{src.stem}.png"
            Image.fromarray(strip).save(out, optimize=True)
            print(f"{out}: {size}x{size} map px at ({x0}, {y0}) of {w}x{h}")


if __name__ == "__main__":
    main()
