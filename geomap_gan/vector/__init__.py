"""Map rasters to GIS vector layers: the library side of ``geomap-gan vectorize``.

    from geomap_gan.vector import VectorizeOptions, vectorize
    vectorize("map.tif", "map.gpkg", VectorizeOptions(layers=("water", "road")))

One layer per map class of the legend (:mod:`geomap_gan.legend`), in the map's CRS: water and
park as polygons (holes kept) with ``class`` and ``area_m2``; road and highway as centre lines
meeting at shared junction points, with ``class``, ``length_m`` and ``width_m``. The map is read
in strips, so memory stays bounded whatever its size, and the result is the same as processing
it whole. The library never prints: pass ``progress(rows_done, rows_total)`` to follow it.

Imports are lazy (rasterio, shapely and numpy load on first use), so the CLI can read the
defaults (:mod:`geomap_gan.vector.defaults`) without slowing ``--help``.
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    "vectorize": "geomap_gan.vector.core",
    "VectorizeResult": "geomap_gan.vector.core",
    "check_outputs": "geomap_gan.vector.writer",
    "VectorizeOptions": "geomap_gan.vector.options",
    "MAP_GSD": "geomap_gan.vector.options",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'geomap_gan.vector' has no attribute {name!r}")
