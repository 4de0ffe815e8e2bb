"""Real water: the water polygons of a rendered NAIP scene score the same NDWI water IoU as the
map raster they came from (the issue's floor: within 0.01).

For each 4-band NAIP scene in ../shared/data/geotiff (R, G, B, NIR): water told by the
near-infrared band, independently of the model, as benchmarks/robustness.py does: NDWI =
(G - NIR) / (G + NIR) above its Otsu threshold (``skimage.filters.threshold_otsu``, 256 bins, as
robustness.py's own). The scene is rendered with the bundled model, on the model's grid (the
default) and on the scene's own (``output_res="native"``, robustness.py's figure); the map is
vectorized with the default options and its water polygons rasterized back onto the map's grid.
Printed per grid: IoU, precision and recall of the map raster's water (the legend's colour rule)
and of the polygons, against the NDWI truth on that grid (on the model grid, G and NIR are
resampled bilinearly before NDWI).

    python benchmarks/vectorize_water.py
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
DATA = HERE.parent.parent / "shared" / "data"


def scores(
    scene: Path, work: Path, output_res: str, model: object = None
) -> dict[str, dict[str, float]]:
    """IoU, precision, recall and water share of the map raster's water and of its water
    polygons against the scene's NDWI water, on the map's grid."""
    import pyogrio
    import rasterio
    import shapely
    from rasterio.features import rasterize
    from rasterio.warp import Resampling, reproject
    from skimage.filters import threshold_otsu

    from geomap_gan.legend import class_masks
    from geomap_gan.model.modelfile import load_model
    from geomap_gan.rendering.engine import RenderOptions, render
    from geomap_gan.vector import VectorizeOptions, vectorize

    mapfile, vectors = work / f"map_{output_res}.tif", work / f"map_{output_res}.gpkg"
    options = RenderOptions(bands=(1, 2, 3), output_res=output_res, overwrite=True)  # type: ignore[arg-type]
    render(scene, mapfile, model or load_model(None), options)
    vectorize(mapfile, vectors, VectorizeOptions(layers="water", overwrite=True))
    with rasterio.open(mapfile) as ds:
        shape, transform, crs = (ds.height, ds.width), ds.transform, ds.crs
        raster = class_masks(np.moveaxis(ds.read((1, 2, 3)), 0, -1))["water"]
        valid = ds.dataset_mask() > 0
    with rasterio.open(scene) as ds:
        bands = []
        for b in (2, 4):  # green, near-infrared
            out = np.full(shape, np.nan, dtype=np.float64)
            reproject(rasterio.band(ds, b), out, dst_transform=transform, dst_crs=crs,
                      dst_nodata=np.nan, resampling=Resampling.bilinear)  # fmt: skip
            bands.append(out)
    g, nir = bands
    valid &= np.isfinite(g) & np.isfinite(nir)
    ndwi = np.where(valid, (g - nir) / np.maximum(g + nir, 1), 0.0)
    truth = (ndwi > threshold_otsu(ndwi[valid])) & valid
    _, _, wkb, _ = pyogrio.raw.read(vectors, layer="water")
    geoms = shapely.from_wkb(wkb) if wkb is not None else []
    polygons = np.zeros(shape, dtype=bool)
    if len(geoms):
        polygons = rasterize(geoms, out_shape=shape, transform=transform).astype(bool)
    out = {}
    for name, water in (("raster", raster & valid), ("polygons", polygons & valid)):
        inter = int((water & truth).sum())
        out[name] = {
            "iou": inter / max(1, int((water | truth).sum())),
            "precision": inter / max(1, int(water.sum())),
            "recall": inter / max(1, int(truth.sum())),
            "share": float(water[valid].mean()),
        }
    out["grid"] = {"width": shape[1], "height": shape[0], "features": len(geoms),
                   "truth_share": float(truth[valid].mean())}  # fmt: skip
    return out


def main() -> None:
    sys.path.insert(0, str(HERE))
    from _machine import describe

    print(describe())
    scenes = sorted((DATA / "geotiff").glob("naip*.tif"))
    if not scenes:
        raise SystemExit(f"no NAIP scene in {DATA / 'geotiff'}")
    with tempfile.TemporaryDirectory() as tmp:
        for scene in scenes:
            for res in ("model", "native"):
                s = scores(scene, Path(tmp), res)
                g = s["grid"]
                print(f"{scene.name}, {res} grid ({g['width']}x{g['height']} px, "
                      f"{g['features']} water polygons, NDWI water {g['truth_share']:.1%}):")  # fmt: skip
                for name in ("raster", "polygons"):
                    v = s[name]
                    print(f"  {name:8s} IoU {v['iou']:.4f}, precision {v['precision']:.4f}, "
                          f"recall {v['recall']:.4f}, water {v['share']:.1%}")  # fmt: skip
                print(
                    f"  difference {abs(s['raster']['iou'] - s['polygons']['iou']):.4f} "
                    "(floor: at most 0.01)"
                )


if __name__ == "__main__":
    main()
