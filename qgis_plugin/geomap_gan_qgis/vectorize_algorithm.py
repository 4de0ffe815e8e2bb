"""Processing algorithm ``geomap_gan:vectorize`` ("Vectorize map"): a map raster in, its classes
as vector layers in a GeoPackage out (water and park polygons, road and highway centre lines),
made by ``geomap-gan vectorize`` in the engine's own process, and loaded into the project in
the map's colours. Nothing here imports torch, rasterio or geomap_gan.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from qgis.core import (
    QgsProcessingContext,
    QgsProcessingException,
    QgsProcessingFeedback,
    QgsProcessingOutputNumber,
    QgsProcessingParameterBoolean,
    QgsProcessingParameterEnum,
    QgsProcessingParameterFileDestination,
    QgsProcessingParameterNumber,
    QgsProcessingParameterRasterLayer,
)

from . import compat
from .engine import EngineError, check_executable, not_found_message, run_engine
from .render_algorithm import CancellableAlgorithm, _show_event, _source_path, locate_engine
from .styles import CLASSES, load_layers

# Defaults mirror geomap_gan.vector.VectorizeOptions (and so the CLI); literals, because the
# plugin never imports the engine. tests/qgis/test_qgis_vectorize.py checks that they agree.
DEFAULT_MIN_AREA = 15.0  # square metres
DEFAULT_SIMPLIFY = 1.0  # metres
DEFAULT_MIN_LENGTH = 8.0  # metres
GPKG_FILTER = "GeoPackage (*.gpkg)"


class VectorizeAlgorithm(CancellableAlgorithm):
    """Vectorize map (``geomap_gan:vectorize``)."""

    INPUT = "INPUT"
    LAYERS = "LAYERS"
    MIN_AREA = "MIN_AREA"
    SIMPLIFY = "SIMPLIFY"
    MIN_LENGTH = "MIN_LENGTH"
    ALLOW_UNGEOREFERENCED = "ALLOW_UNGEOREFERENCED"
    LOAD = "LOAD"
    OUTPUT = "OUTPUT"

    NAME = "vectorize"
    DISPLAY_NAME = "Vectorize map"
    DESCRIPTION = "A map raster's water, parks, roads and highways as vector layers."
    TAGS = ("vectorize", "polygonize", "centre line", "centerline", "skeleton", "map", "water",
            "park", "road", "highway", "geopackage")  # fmt: skip

    def shortHelpString(self) -> str:  # noqa: N802 (QGIS API)
        return (
            "Turns a map raster (the output of <i>Render map from satellite image</i>, or any "
            "3-band 8-bit raster drawn in the training maps' colours) into vector layers in one "
            "GeoPackage, in the map's CRS: <b>water</b> and <b>park</b> as polygons with their "
            "holes (attributes class, area_m2), <b>road</b> and <b>highway</b> as centre lines "
            "that meet at their junctions (class, length_m, width_m). Maps of any size are "
            "read in strips; a lake or road crossing a strip border is one feature.<br><br>"
            "<b>Minimum area</b>: smaller polygons are dropped and smaller holes filled.<br>"
            "<b>Simplify</b>: tolerance; shared boundaries stay shared.<br>"
            "<b>Minimum length</b>: skeleton spurs reaching less than this beyond their road "
            "are pruned, shorter isolated lines dropped.<br>"
            "The layers are added to the project in the map's colours."
        )

    def canExecute(self) -> tuple[bool, str]:  # noqa: N802 (QGIS API)
        return (True, "") if locate_engine() is not None else (False, not_found_message())

    def initAlgorithm(self, config: dict[str, Any] | None = None) -> None:  # noqa: N802
        self.addParameter(QgsProcessingParameterRasterLayer(self.INPUT, "Map raster"))
        layers = QgsProcessingParameterEnum(
            self.LAYERS, "Layers", options=list(CLASSES), allowMultiple=True,
            defaultValue=list(CLASSES),
        )  # fmt: skip
        layers.setUsesStaticStrings(True)
        self.addParameter(layers)
        for name, label, default in (
            (self.MIN_AREA, "Minimum area (square metres)", DEFAULT_MIN_AREA),
            (self.SIMPLIFY, "Simplify tolerance (metres)", DEFAULT_SIMPLIFY),
            (self.MIN_LENGTH, "Minimum line length (metres)", DEFAULT_MIN_LENGTH),
        ):
            self.addParameter(
                QgsProcessingParameterNumber(
                    name, label, type=compat.DOUBLE, defaultValue=default, minValue=0.0
                )
            )
        ungeo = QgsProcessingParameterBoolean(
            self.ALLOW_UNGEOREFERENCED, "Allow a map without CRS", defaultValue=False
        )
        ungeo.setFlags(ungeo.flags() | compat.ADVANCED)
        self.addParameter(ungeo)
        self.addParameter(
            QgsProcessingParameterBoolean(
                self.LOAD, "Add the layers to the project in the map's colours", defaultValue=True
            )
        )
        self.addParameter(
            QgsProcessingParameterFileDestination(self.OUTPUT, "Vector layers", GPKG_FILTER)
        )
        for name in CLASSES:
            self.addOutput(QgsProcessingOutputNumber(name.upper(), f"{name.title()} features"))
        self.addOutput(QgsProcessingOutputNumber("SECONDS", "Time in the engine (seconds)"))

    def processAlgorithm(  # noqa: N802 (QGIS API)
        self,
        parameters: dict[str, Any],
        context: QgsProcessingContext,
        feedback: QgsProcessingFeedback,
    ) -> dict[str, Any]:
        if feedback is None:
            feedback = QgsProcessingFeedback()
        engine = locate_engine()
        if engine is None:
            raise QgsProcessingException(not_found_message())
        layer = self.parameterAsRasterLayer(parameters, self.INPUT, context)
        if layer is None:
            raise QgsProcessingException(self.invalidRasterError(parameters, self.INPUT))
        dst = self.parameterAsFileOutput(parameters, self.OUTPUT, context)
        names = layer_names(self.parameterAsEnumStrings(parameters, self.LAYERS, context))
        args = [str(engine), "vectorize", _source_path(layer), dst, "--progress", "json",
                "--overwrite", "--layers", ",".join(names)]  # fmt: skip
        for name, flag in ((self.MIN_AREA, "--min-area"), (self.SIMPLIFY, "--simplify"),
                           (self.MIN_LENGTH, "--min-length")):  # fmt: skip
            args += [flag, repr(self.parameterAsDouble(parameters, name, context))]
        if self.parameterAsBoolean(parameters, self.ALLOW_UNGEOREFERENCED, context):
            args.append("--allow-ungeoreferenced")
        feedback.pushInfo("$ " + " ".join(args))
        try:
            check_executable(engine)
            result = run_engine(args, lambda e: _show_event(e, feedback), feedback.isCanceled)
        except EngineError as exc:
            raise QgsProcessingException(str(exc)) from None
        feedback.setProgress(100.0)
        counts = result["features"]
        feedback.pushInfo(
            "vectorized: " + ", ".join(f"{n} {c}" for c, n in counts.items())
            + f" in {result['seconds']:.1f} s"
        )  # fmt: skip
        if self.parameterAsBoolean(parameters, self.LOAD, context):
            load_layers(context, str(result["path"]), list(counts), Path(dst).stem)
        out: dict[str, Any] = {self.OUTPUT: str(result["path"]), "SECONDS": result["seconds"]}
        out.update({c.upper(): counts.get(c, 0) for c in CLASSES})
        return out


def layer_names(chosen: list[str]) -> list[str]:
    """The chosen classes in the legend's order; all of them when none is chosen."""
    picked = [c for c in CLASSES if c in chosen]
    return picked or list(CLASSES)
