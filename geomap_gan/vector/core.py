"""``vectorize``: a map raster to GIS vector layers, one strip of rows at a time.

Memory is bounded by the strip (about 4 Mpx with its context rows, whatever the map's size) plus
the features not yet final (a lake or road that has not closed yet) and, for FlatGeobuf and
GeoJSON, the output itself. The result does not depend on the strip height: features crossing a
strip border come out as one, as if the map were processed whole.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import rasterio
from rasterio.io import DatasetReader

from geomap_gan import files
from geomap_gan.vector.features import Batch
from geomap_gan.vector.graph import trace
from geomap_gan.vector.lines import HALO, LineAssembler, skeleton
from geomap_gan.vector.masks import MapInfo, open_map, read_masks
from geomap_gan.vector.options import STRIP_PIXELS, VectorizeOptions, layer_paths
from geomap_gan.vector.polygons import PolygonAssembler
from geomap_gan.vector.writer import LayerWriter

Progress = Callable[[int, int], None]

GDAL_CACHE_MB = 32
"""GDAL's block cache (MB): strips are read in order, so one row of the input's blocks (a 16384 px
wide row of 256 px RGB tiles is 12 MB) is all it needs to hold; GDAL's default, 5% of RAM,
would let memory grow with the map."""


@dataclass(frozen=True)
class VectorizeResult:
    """What ``vectorize`` wrote: the file of each layer, its feature count, and the wall time
    (seconds)."""

    paths: dict[str, Path]
    features: dict[str, int]
    seconds: float = 0.0
    path: Path | None = None  # the output asked for (absolute); layers may be beside it

    def to_dict(self) -> dict[str, object]:
        """JSON-ready: ``path`` (the output asked for), ``paths`` (each layer's file),
        ``features`` (per layer) and ``seconds``."""
        return {
            "path": str(self.path) if self.path else None,
            "paths": {k: str(v) for k, v in self.paths.items()},
            "features": dict(self.features),
            "seconds": round(self.seconds, 3),
        }


def strip_rows(width: int, options: VectorizeOptions) -> int:
    """Rows per strip: as asked, else about STRIP_PIXELS pixels (64 to 1024 rows)."""
    if options.strip_rows:
        return options.strip_rows
    return max(64, min(1024, STRIP_PIXELS // max(width, 1)))


def vectorize(
    src: str | Path,
    dst: str | Path,
    options: VectorizeOptions | None = None,
    progress: Progress | None = None,
) -> VectorizeResult:
    """Vectorize the map raster ``src`` into ``dst`` (format from its suffix: .gpkg, .fgb,
    .geojson, .shp): polygons of water and park with ``class`` and ``area_m2``, centre lines of
    road and highway with ``class``, ``length_m`` and ``width_m``, in the map's CRS.

    ``progress(rows_done, rows_total)`` is called after each strip. Raises InputError for an
    unusable map or options, OutputExistsError / OutputError for the output; on any error no
    output file is left.
    """
    t0 = time.perf_counter()
    options = options or VectorizeOptions()
    layer_paths(dst, options.classes)  # an unknown suffix is refused before any work
    env = rasterio.Env(GDAL_CACHEMAX=GDAL_CACHE_MB)
    with env, open_map(src, options.allow_ungeoreferenced) as (ds, info):
        counts = dict.fromkeys(options.classes, 0)
        inputs = files.gdal_files(src, ds)  # a VRT's sources and sidecars are inputs too
        with LayerWriter(dst, options.classes, info.crs, options.overwrite, inputs) as out:
            for batch in _batches(ds, info, options, progress):
                out.add(batch)
                counts[batch.layer] += len(batch.geometries)
    return VectorizeResult(out.paths, counts, time.perf_counter() - t0, out.dst)


def _assemblers(
    info: MapInfo, options: VectorizeOptions
) -> tuple[PolygonAssembler, dict[str, LineAssembler]]:
    """The polygon and line assemblers, thresholds converted from metres to pixels."""
    pixel = float(np.sqrt(info.pixel_area_m2))
    tolerance = options.simplify / pixel
    polys = PolygonAssembler(
        options.area_layers,
        info.height,
        info.transform,
        info.pixel_area_m2,
        options.min_area / info.pixel_area_m2,
        tolerance,
    )
    lines = {
        name: LineAssembler(
            name,
            info.height,
            info.transform,
            info.scale,
            info.pixel_m,
            options.min_length,
            tolerance,
        )
        for name in options.line_layers
    }
    return polys, lines


def _batches(
    ds: DatasetReader, info: MapInfo, options: VectorizeOptions, progress: Progress | None
) -> Iterator[Batch]:
    """Final features of every layer, strip by strip."""
    polys, lines = _assemblers(info, options)
    rows = strip_rows(info.width, options)
    halo = HALO if lines else 0
    for row0 in range(0, info.height, rows):
        row1 = min(row0 + rows, info.height)
        w0, w1 = max(0, row0 - halo), min(info.height, row1 + halo)
        masks = read_masks(ds, info, w0, w1)
        core = slice(row0 - w0, row1 - w0)
        yield from polys.add({c: masks[c][core] for c in polys.classes}, row0, row1)
        for name, assembler in lines.items():
            sk, dist = skeleton(masks[name], info.pixel_m)
            yield from assembler.add(trace(sk, dist, w0, row0, row1), row0, row1)
        del masks
        if progress is not None:
            progress(row1, info.height)
