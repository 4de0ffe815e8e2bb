"""Helpers of the vectorize tests: tiny map rasters drawn in the legend's colours, written with
rasterio, and readers for the layers vectorize writes."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pyogrio
import rasterio
import shapely
from affine import Affine
from rasterio.errors import NotGeoreferencedWarning

from geomap_gan.legend import BACKGROUND, COLOURS

GSD = 1.9
ORIGIN = (500000.0, 5000000.0)
TRANSFORM = Affine(GSD, 0, ORIGIN[0], 0, -GSD, ORIGIN[1])


def canvas(height: int, width: int) -> np.ndarray:
    """An empty map (background colour), (rows, cols, 3) uint8."""
    img = np.empty((height, width, 3), dtype=np.uint8)
    img[:] = BACKGROUND
    return img


def paint(img: np.ndarray, name: str, rows: slice, cols: slice) -> np.ndarray:
    img[rows, cols] = COLOURS[name]
    return img


def write_map(path: Path, img: np.ndarray, crs: str | None = "EPSG:32633",
              transform: Affine = TRANSFORM, **profile: object) -> Path:  # fmt: skip
    """Write ``img`` ((rows, cols, bands) uint8) as a GeoTIFF map."""
    h, w, bands = img.shape
    kw: dict[str, object] = dict(driver="GTiff", width=w, height=h, count=bands,
                                 dtype=img.dtype.name, transform=transform)  # fmt: skip
    if crs is not None:
        kw["crs"] = crs
    kw.update(profile)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with rasterio.Env(), rasterio.open(path, "w", **kw) as ds:
            ds.write(np.moveaxis(img, -1, 0))
    return path


def read_layer(path: Path, layer: str | None = None) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """The geometries (shapely) and fields of one layer."""
    meta, _, wkb, values = pyogrio.raw.read(path, layer=layer)
    geoms = shapely.from_wkb(wkb) if wkb is not None else np.array([], dtype=object)
    return geoms, dict(zip(meta["fields"], values, strict=True))


def to_pixels(geoms: np.ndarray, transform: Affine = TRANSFORM) -> np.ndarray:
    """Geometries from the map's CRS back to pixel coordinates (x = column, y = row)."""
    inv = ~transform

    def back(xy: np.ndarray) -> np.ndarray:
        x, y = xy[:, 0], xy[:, 1]
        return np.column_stack([inv.a * x + inv.b * y + inv.c, inv.d * x + inv.e * y + inv.f])

    return shapely.transform(geoms, back)


def iou(a: np.ndarray, b: np.ndarray) -> float:
    union = (a | b).sum()
    return float((a & b).sum() / union) if union else 1.0
