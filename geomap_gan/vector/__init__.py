"""Map rasters to GIS vector layers: the library side of ``geomap-gan vectorize``.

    from geomap_gan.vector import VectorizeOptions, vectorize
    vectorize("map.tif", "map.gpkg", VectorizeOptions(layers=("water", "road")))

One layer per map class of the legend (:mod:`geomap_gan.legend`), in the map's CRS: water and
park as polygons (holes kept) with ``class`` and ``area_m2``; road and highway as centre lines
meeting at shared junction points, with ``class``, ``length_m`` and ``width_m``. The map is read
in strips, so memory stays bounded whatever its size, and the result is the same as processing
it whole. The library never prints: pass ``progress(rows_done, rows_total)`` to follow it.
"""

from __future__ import annotations

from geomap_gan.vector.core import VectorizeResult, vectorize
from geomap_gan.vector.options import MAP_GSD, VectorizeOptions

__all__ = ["MAP_GSD", "VectorizeOptions", "VectorizeResult", "vectorize"]
