"""1:1 crops of vector layers drawn over the imagery, for the README and for looking at every real
scene: for each scene in ../shared/data/geotiff, the input on the map grid with the vector layers
of its map drawn over it (polygons outlined, centre lines at their width) | the map itself.

    python scripts/readme_vectors.py docs/crops/vectors [--model MODEL] [--size 360]

Each scene is rendered with ``render`` (scenes far coarser than the model at their own GSD) and
vectorized with ``vectorize`` at the default clean-up; the crop is ``--size`` map pixels around
readme_crops.CROPS' point, else the centre.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np
import pyogrio
import rasterio
import shapely
from PIL import Image, ImageDraw

sys.path.insert(0, str(Path(__file__).resolve().parent))
from readme_crops import CROPS, DATA, map_grid_input, render_map  # noqa: E402

from geomap_gan.legend import COLOURS  # noqa: E402
from geomap_gan.model.modelfile import load_model  # noqa: E402
from geomap_gan.vector import vectorize  # noqa: E402

OUTLINE = {
    "water": (0, 90, 255),
    "park": (0, 150, 40),
    "road": (255, 40, 40),
    "highway": (255, 150, 0),
}


def draw_layers(image: Image.Image, gpkg: Path, transform: rasterio.Affine) -> None:
    """Draw every layer of ``gpkg`` onto ``image`` (pixels of the map grid ``transform``)."""
    inv = ~transform
    draw = ImageDraw.Draw(image, "RGBA")
    for layer in ("park", "water", "road", "highway"):
        try:
            meta, _, geoms, fields = pyogrio.raw.read(gpkg, layer=layer)
        except Exception:  # an absent class: nothing to draw
            continue
        names = list(meta["fields"])
        widths = fields[names.index("width_m")] if "width_m" in names else None
        for k, wkb in enumerate(geoms):
            geom = shapely.transform(shapely.from_wkb(wkb), lambda xy: np.stack(inv * xy.T, 1))
            parts = getattr(geom, "geoms", [geom])
            for part in parts:
                if part.geom_type == "Polygon":
                    fill = (*COLOURS[layer], 90)
                    draw.polygon(list(part.exterior.coords), fill=fill, outline=OUTLINE[layer])
                    for hole in part.interiors:
                        draw.line(list(hole.coords), fill=OUTLINE[layer], width=1)
                elif widths is not None:
                    px = max(1, round(float(widths[k]) / abs(transform.a) / 2))  # half the stroke
                    draw.line(list(part.coords), fill=OUTLINE[layer], width=px)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("out_dir", type=Path)
    ap.add_argument("--model", default=None, help="model file (default: the bundled one)")
    ap.add_argument("--size", type=int, default=360, help="crop side, map pixels")
    args = ap.parse_args()
    model = load_model(args.model)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        for src in sorted(DATA.glob("*.tif")):
            out = render_map(src, Path(tmp) / f"{src.stem}_map.tif", model)
            gpkg = Path(tmp) / f"{src.stem}.gpkg"
            vectorize(out, gpkg)
            with rasterio.open(out) as m:
                rgb = m.read([1, 2, 3]).transpose(1, 2, 0)
                bands = [1, 2, 3]
                aerial = Image.fromarray(map_grid_input(src, m, bands))
                draw_layers(aerial, gpkg, m.transform)
                fx, fy = CROPS.get(src.name, (0.5, 0.5))
                s = min(args.size, m.width, m.height)
                x0 = int(np.clip(fx * m.width - s / 2, 0, m.width - s))
                y0 = int(np.clip(fy * m.height - s / 2, 0, m.height - s))
            box = (x0, y0, x0 + s, y0 + s)
            sheet = Image.new("RGB", (2 * s + 8, s), "white")
            sheet.paste(aerial.crop(box), (0, 0))
            sheet.paste(Image.fromarray(rgb).crop(box), (s + 8, 0))
            sheet.save(args.out_dir / f"{src.stem}.png")
            print(args.out_dir / f"{src.stem}.png")


if __name__ == "__main__":
    main()
