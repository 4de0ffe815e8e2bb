"""Write a side-by-side PNG preview (input | rendered map) of a scene and its render.

    python scripts/preview.py examples/naip_nd_2015.tif naip_map.tif docs/naip_preview.png

Both rasters are read over the output's footprint, downsampled to ``--width`` px each, so the
two panels show the same ground at the same scale.
"""

from __future__ import annotations

import argparse

import numpy as np
import rasterio
from PIL import Image
from rasterio.enums import Resampling
from rasterio.vrt import WarpedVRT


def panel(path: str, like: rasterio.DatasetReader, width: int, bands: list[int]) -> np.ndarray:
    height = round(like.height * width / like.width)
    with (
        rasterio.open(path) as src,
        WarpedVRT(
            src, crs=like.crs, transform=like.transform, width=like.width, height=like.height
        ) as vrt,
    ):
        data = vrt.read(bands, out_shape=(len(bands), height, width), resampling=Resampling.average)
    return np.moveaxis(data, 0, -1).astype(np.uint8)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("scene")
    ap.add_argument("rendered")
    ap.add_argument("png")
    ap.add_argument("--width", type=int, default=640, help="px per panel")
    args = ap.parse_args()
    with rasterio.open(args.rendered) as out:
        left = panel(args.scene, out, args.width, [1, 2, 3])
        right = panel(args.rendered, out, args.width, [1, 2, 3])
    gap = np.full((left.shape[0], 8, 3), 255, np.uint8)
    Image.fromarray(np.concatenate([left, gap, right], axis=1)).save(args.png, optimize=True)
    print(f"wrote {args.png}")


if __name__ == "__main__":
    main()
