"""The defaults of :class:`geomap_gan.vector.VectorizeOptions` (why these values: its module,
:mod:`geomap_gan.vector.options`), in a module that imports nothing, so that the CLI's options
show them without loading numpy."""

from __future__ import annotations

LAYERS = "road,water,park,highway"
"""Every class of the legend, in its order (``geomap_gan.legend.CLASSES``; a test checks)."""

MIN_AREA = 15.0
"""Square metres: smaller polygons are dropped and smaller holes filled."""

SIMPLIFY = 1.0
"""Metres: simplification tolerance (topology kept)."""

MIN_LENGTH = 8.0
"""Metres: shorter skeleton spurs are pruned and shorter isolated lines dropped."""

SUFFIXES = (".gpkg", ".fgb", ".geojson", ".shp")
"""Output suffixes (``options.DRIVERS``'s keys; a test checks)."""
