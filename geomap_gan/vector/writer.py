"""Write the vector layers with pyogrio (GDAL's OGR, vectorised: no per-feature Python), under
the output rules of :mod:`geomap_gan.files`: every output is checked before the work (never an
input, nothing replaced without ``overwrite``), layers are written into a hidden temporary folder
beside the output that carries its writer's host and pid (so :func:`files.remove_stale` clears
what a killed run left), and each file gets its final name only when all are complete. On any
error the folder is removed: no partial output is left.
"""

from __future__ import annotations

import contextlib
import shutil
import warnings
from collections.abc import Iterable
from pathlib import Path
from types import TracebackType

import numpy as np
import shapely
from pyogrio.raw import write
from rasterio.crs import CRS

from geomap_gan import files
from geomap_gan.errors import GeomapGanError, OutputError, OutputExistsError
from geomap_gan.legend import AREA_CLASSES
from geomap_gan.vector.features import Batch
from geomap_gan.vector.options import MULTI_LAYER, driver_for, layer_paths

SHAPEFILE_PARTS = (".shp", ".shx", ".dbf", ".prj", ".cpg")
SHAPEFILE_INDEXES = (".qix", ".sbn", ".sbx")  # spatial indexes a replaced shapefile leaves stale
APPENDABLE = frozenset({"GPKG", "ESRI Shapefile"})
"""Drivers that append cheaply: their layers are written in batches as features come, so memory
does not hold the whole output. FlatGeobuf and GeoJSON rewrite on append: written once, at the
end."""
FLUSH_BYTES = 8 << 20
"""Queued features (as WKB) of all layers, in bytes, before the largest layer is written. A
layer's first write builds its spatial index at the end (96k road lines: 0.5 s), later ones
(appends) update it row by row (about 1 s per 100k lines, whatever their batch size); the queue
and the write's own copies are memory (about 2.5x the WKB: a 24 MB queue put 60 MB on the peak
RSS of a 16384^2 map). WKB is about 110 bytes a road line, a third of the shapely object."""


def _schema(layer: str) -> tuple[str, tuple[str, ...]]:
    """Geometry type and field names of a class's layer."""
    if layer in AREA_CLASSES:
        return "Polygon", ("class", "area_m2")
    return "LineString", ("class", "length_m", "width_m")


def _parts(driver: str, path: Path) -> list[Path]:
    """The files that make up one output (a shapefile is several)."""
    if driver == "ESRI Shapefile":
        return [path.with_suffix(s) for s in SHAPEFILE_PARTS]
    return [path]


def check_outputs(
    dst: str | Path,
    layers: Iterable[str],
    overwrite: bool,
    inputs: Iterable[str | Path] | files.InputFiles = (),
) -> dict[str, Path]:
    """The file of each layer of ``dst``, every one checked before any work (the output rules of
    :func:`geomap_gan.files.check_output`: a known suffix, never one of ``inputs``, nothing
    replaced without ``overwrite``). ``render --vectors`` calls it before rendering."""
    dst = Path(dst).expanduser().absolute()
    driver = driver_for(dst)
    paths = layer_paths(dst, tuple(layers))
    if not isinstance(inputs, files.InputFiles):
        inputs = files.InputFiles(inputs)
    for path in dict.fromkeys(paths.values()):
        for part in _parts(driver, path):
            files.check_output(part, overwrite, inputs)
    return paths


class LayerWriter:
    """The layers of one ``vectorize`` output, written atomically (a context manager)."""

    def __init__(
        self,
        dst: str | Path,
        layers: Iterable[str],
        crs: CRS | None,
        overwrite: bool,
        inputs: Iterable[str | Path] = (),
    ) -> None:
        self.dst = Path(dst).expanduser().absolute()
        self.driver = driver_for(self.dst)
        self.layers = tuple(layers)
        self.paths = check_outputs(self.dst, self.layers, overwrite, inputs)
        self.crs = crs.to_wkt() if crs is not None else None
        self.overwrite = overwrite
        self.tmp: Path | None = None
        self.buffers: dict[str, list[Batch]] = {name: [] for name in self.layers}
        self.queued: dict[str, int] = dict.fromkeys(self.layers, 0)  # WKB bytes queued
        self.written: set[str] = set()

    def _parts(self, path: Path) -> list[Path]:
        """The files that make up one output (a shapefile is several)."""
        return _parts(self.driver, path)

    def __enter__(self) -> LayerWriter:
        """Clear what killed runs left, and make this run's temporary folder."""
        files.remove_stale(self.dst)
        self.tmp = files.temp_path(self.dst)
        try:
            self.tmp.mkdir()
        except OSError as exc:
            raise OutputError(
                f"cannot write in {self.dst.parent} ({exc.strerror}); choose a "
                "writable output folder"
            ) from exc
        return self

    def add(self, batch: Batch) -> None:
        """Queue features of one layer, as WKB (written in batches where the driver appends
        cheaply: the largest queue whenever all of them exceed FLUSH_BYTES)."""
        wkb = shapely.to_wkb(batch.geometries) if len(batch.geometries) else np.array([])
        self.buffers[batch.layer].append(Batch(batch.layer, wkb, batch.fields))
        size = int(sum(len(w) for w in wkb.tolist()))
        self.queued[batch.layer] += size
        if self.driver in APPENDABLE and sum(self.queued.values()) >= FLUSH_BYTES:
            self._flush(max(self.queued, key=self.queued.__getitem__))

    def _flush(self, layer: str) -> None:
        """Write the queued features (WKB) of ``layer`` (an empty layer when it has none)."""
        assert self.tmp is not None
        batches = self.buffers[layer]
        if not batches and layer in self.written:
            return
        geom_type, names = _schema(layer)
        geoms = np.concatenate([b.geometries for b in batches]) if batches else np.array([])
        data = [
            np.concatenate([b.fields[n] for b in batches])
            if batches
            else np.array([], dtype=object if n == "class" else float)
            for n in names
        ]
        path = self.tmp / self.paths[layer].name
        name = layer if self.driver in MULTI_LAYER else path.stem
        with warnings.catch_warnings():  # a map with no CRS gives layers with none: intended
            warnings.filterwarnings("ignore", "'crs' was not provided", UserWarning)
            write(
                str(path),
                geoms if len(geoms) else np.array([], dtype=object),
                data,
                list(names),
                layer=name,
                driver=self.driver,
                geometry_type=geom_type,
                crs=self.crs,
                append=path.exists(),
            )
        self.buffers[layer] = []
        self.queued[layer] = 0
        self.written.add(layer)

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Write what is queued and publish every file; on any error publish nothing. The
        temporary folder goes either way."""
        assert self.tmp is not None
        try:
            if exc_type is None:
                try:
                    for layer in self.layers:
                        self._flush(layer)
                except Exception as err:
                    if not isinstance(err, GeomapGanError) and files._nearly_full(self.dst.parent):
                        raise OutputError(
                            f"the disk is full (writing {self.dst}); free some space and run again"
                        ) from err
                    raise
                self._publish()
        finally:
            shutil.rmtree(self.tmp, ignore_errors=True)

    def _publish(self) -> None:
        """Give every written file its final name; if one cannot be, take back the ones that
        were published (unless they replaced files, which ``overwrite`` allowed)."""
        assert self.tmp is not None
        done: list[Path] = []
        try:
            for path in dict.fromkeys(self.paths.values()):
                for part in self._parts(path):
                    src = self.tmp / part.name
                    if src.exists():
                        files.publish(src, part, self.overwrite)
                        done.append(part)
                if self.driver == "ESRI Shapefile":
                    for s in SHAPEFILE_INDEXES:
                        with contextlib.suppress(FileNotFoundError):
                            path.with_suffix(s).unlink()
        except (OutputExistsError, OSError):
            if not self.overwrite:
                for part in done:
                    with contextlib.suppress(OSError):
                        part.unlink()
            raise
