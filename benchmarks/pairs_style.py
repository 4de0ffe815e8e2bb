"""Style floor of ``pairs``: the maps val split's own map tiles, turned into vector layers by
``geomap-gan vectorize`` and drawn back by ``geomap-gan pairs``, against the originals with the
legend's class IoU (issue 37: water and park >= 0.9, road and highway >= 0.7).

1. ``--tiles`` val pairs (evenly spaced over maps256/val, 256 px) are laid side by side into an
   aerial mosaic and a map mosaic, georeferenced in UTM at the bundled model's GSD (so the render
   grid is the mosaic's own pixel grid, on the CRS lattice).
2. ``vectorize(map mosaic)`` -> one GeoPackage (water, park polygons; road, highway centre lines
   with their measured ``width_m``).
3. ``make_pairs(aerial mosaic, --layer CLASS=that GeoPackage for each class)``, 256 px tiles at a
   256 px step, no val share: each pair's map half is the drawn-back map of one val tile.
4. Per class, IoU of the drawn-back maps against the original maps (legend.class_masks,
   accumulated over all pixels), once with each line's ``width_m`` and once with the default
   stroke widths (the layers without widths: what a user's road layer gives).

    python benchmarks/pairs_style.py [--tiles 64]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import rasterio
from affine import Affine

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine import describe  # noqa: E402

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def mosaics(tiles: int) -> tuple[np.ndarray, np.ndarray, int]:
    """(aerial, map) mosaics (3, H, W) of ``tiles`` val pairs and the side in tiles."""
    from geomap_gan.training.data import load_split

    pairs, _ = load_split(DATA / "maps256", "val", 256)
    picks = np.linspace(0, len(pairs) - 1, tiles).round().astype(int)
    side = int(np.ceil(np.sqrt(tiles)))
    a = np.zeros((3, side * 256, side * 256), np.uint8)
    b = np.zeros_like(a)
    for i, k in enumerate(picks):
        r, c = divmod(i, side)
        a[:, r * 256 : (r + 1) * 256, c * 256 : (c + 1) * 256] = pairs[k, 0].transpose(2, 0, 1)
        b[:, r * 256 : (r + 1) * 256, c * 256 : (c + 1) * 256] = pairs[k, 1].transpose(2, 0, 1)
    return a, b, side


def write(path: Path, data: np.ndarray, gsd: float) -> None:
    t = Affine(gsd, 0, 14000 * 32 * gsd, 0, -gsd, 80000 * 32 * gsd)  # on the 32 px lattice
    with rasterio.open(path, "w", driver="GTiff", width=data.shape[2], height=data.shape[1],
                       count=3, dtype="uint8", crs="EPSG:32618", transform=t) as ds:  # fmt: skip
        ds.write(data)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tiles", type=int, default=64)
    args = parser.parse_args()

    from geomap_gan.legend import CLASSES, class_masks
    from geomap_gan.model.modelfile import load_model
    from geomap_gan.training.pairs import PairsOptions, make_pairs
    from geomap_gan.vector import VectorizeOptions, vectorize

    print(describe())
    gsd = load_model(None).card.gsd
    a, b, side = mosaics(args.tiles)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        write(folder / "aerial.tif", a, gsd)
        write(folder / "map.tif", b, gsd)
        t0 = time.perf_counter()
        found = vectorize(folder / "map.tif", folder / "layers.gpkg", VectorizeOptions())
        print(f"{args.tiles} maps256/val tiles ({side}x{side} mosaic, {gsd} m/px); vectorize: "
              f"{found.features} in {time.perf_counter() - t0:.1f} s")  # fmt: skip
        # the same layers without the width attribute: the default stroke widths
        import pyogrio

        plain = folder / "plain.gpkg"
        for cls in CLASSES:
            meta, _, geom, fields = pyogrio.raw.read(str(folder / "layers.gpkg"), layer=cls)
            pyogrio.raw.write(str(plain), geom, [], [], layer=cls, driver="GPKG",
                              geometry_type=meta["geometry_type"], crs=meta["crs"],
                              append=plain.exists())  # fmt: skip
        for name, gpkg in (("width_m per line", folder / "layers.gpkg"),
                           ("default widths", plain)):  # fmt: skip
            out = folder / f"pairs_{gpkg.stem}"
            layers = [f"{c}={gpkg}" for c in CLASSES]
            made = make_pairs(folder / "aerial.tif", out, layers,
                              options=PairsOptions(tile=256, step=256, val_share=0))  # fmt: skip
            manifest = json.loads((out / "pairs.json").read_text())
            inter = dict.fromkeys(CLASSES, 0)
            union = dict.fromkeys(CLASSES, 0)
            from PIL import Image

            for p in manifest["pairs"]:
                x, y, w, h = p["window"]
                drawn = np.asarray(Image.open(out / p["file"]).convert("RGB"))[:, 256:]
                real = b[:, y : y + h, x : x + w].transpose(1, 2, 0)
                dm, rm = class_masks(drawn), class_masks(real)
                for c in CLASSES:
                    inter[c] += int((dm[c] & rm[c]).sum())
                    union[c] += int((dm[c] | rm[c]).sum())
            ious = {c: round(inter[c] / max(union[c], 1), 3) for c in CLASSES}
            print(f"drawn back ({name}; {made.train} pairs, stroke widths "
                  f"{manifest['style']['stroke_width_m']} m by default): class IoU {ious}")  # fmt: skip


if __name__ == "__main__":
    main()
