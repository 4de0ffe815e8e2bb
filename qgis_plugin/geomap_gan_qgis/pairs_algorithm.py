"""Processing algorithm ``geomap_gan:pairs`` ("Make training pairs"): a raster layer (the aerial),
vector layers per map class and/or a map raster, and a coverage layer in; a folder of A|B
training pairs out, made by ``geomap-gan pairs`` in the engine's own process.

Vector layers of any provider (a GeoPackage layer, a memory layer, selected features only) are
handed to the engine as single-layer files: QGIS writes a temporary copy when the layer is not
one already. Nothing here imports torch, rasterio or geomap_gan.
"""

from __future__ import annotations

import re
from typing import Any

from qgis.core import (
    QgsProcessing,
    QgsProcessingContext,
    QgsProcessingException,
    QgsProcessingFeedback,
    QgsProcessingOutputNumber,
    QgsProcessingParameterFeatureSource,
    QgsProcessingParameterFile,
    QgsProcessingParameterFolderDestination,
    QgsProcessingParameterNumber,
    QgsProcessingParameterRasterLayer,
    QgsProcessingParameterString,
)

from . import compat
from .engine import EngineError, check_executable, not_found_message, run_engine
from .render_algorithm import (
    CancellableAlgorithm,
    _is_set,
    _show_event,
    _source_path,
    locate_engine,
)

# Defaults mirror geomap_gan.training.pairs (PairsOptions, and so the CLI); literals, because
# the plugin never imports the engine. tests/qgis/test_qgis_pairs.py checks that they agree.
DEFAULT_TILE = 286
DEFAULT_STEP = 0
DEFAULT_VAL_SHARE = 0.15
CLASS_LAYERS = (("WATER", "water", "Water (polygons)"), ("PARK", "park", "Parks (polygons)"),
                ("ROAD", "road", "Roads (lines)"), ("HIGHWAY", "highway", "Highways (lines)"))  # fmt: skip
SINGLE_LAYER_FORMATS = ["shp", "geojson", "fgb"]  # what the engine reads one layer of
LINES = compat.scoped("ProcessingSourceType.VectorLine", QgsProcessing, "TypeVectorLine")


class PairsAlgorithm(CancellableAlgorithm):
    """Make training pairs (``geomap_gan:pairs``)."""

    INPUT = "INPUT"
    MAP = "MAP"
    COVERAGE = "COVERAGE"
    WIDTH_ROAD = "WIDTH_ROAD"
    WIDTH_HIGHWAY = "WIDTH_HIGHWAY"
    VAL_SHARE = "VAL_SHARE"
    TILE = "TILE"
    STEP = "STEP"
    MODEL = "MODEL"
    BANDS = "BANDS"
    OUTPUT = "OUTPUT"

    NAME = "pairs"
    DISPLAY_NAME = "Make training pairs"
    DESCRIPTION = "Training pairs from an aerial raster and map layers, to fine-tune the model."
    TAGS = ("pix2pix", "training", "fine-tune", "pairs", "map", "imagery", "deep learning")

    def shortHelpString(self) -> str:  # noqa: N802 (QGIS API)
        return (
            "Draws your map layers in the model's map style (water and parks filled, roads and "
            "highways as strokes) and/or takes a map raster of any style, and cuts it with the "
            "aerial raster into training pairs on the grid the renderer uses (the model's ground "
            "sample distance), in a folder that <i>Fine-tune model</i> trains on. A share of the "
            "pairs is kept for validation, in whole blocks away from the training pairs.<br><br>"
            "<b>Coverage</b>: polygons where your layers are complete; pairs are cut only inside "
            "(a road missing from a layer would teach the model to leave roads out). Empty: the "
            "whole raster.<br>"
            "<b>Stroke widths</b>: metres; empty: the training maps' widths at the model's GSD. "
            "A 'width' attribute (metres) sets a line's own width.<br>"
            "Only the selected features are used when a layer has a selection and the "
            "selection box is ticked."
        )

    def canExecute(self) -> tuple[bool, str]:  # noqa: N802 (QGIS API)
        return (True, "") if locate_engine() is not None else (False, not_found_message())

    def initAlgorithm(self, config: dict[str, Any] | None = None) -> None:  # noqa: N802
        self.addParameter(QgsProcessingParameterRasterLayer(self.INPUT, "Aerial/satellite raster"))
        for name, _, label in CLASS_LAYERS:
            kinds = [compat.POLYGONS] if name in ("WATER", "PARK") else [LINES, compat.POLYGONS]
            self.addParameter(
                QgsProcessingParameterFeatureSource(name, label, types=kinds, optional=True)
            )
        self.addParameter(
            QgsProcessingParameterRasterLayer(
                self.MAP, "Map raster of any style (layers are drawn over it)", optional=True
            )
        )
        self.addParameter(
            QgsProcessingParameterFeatureSource(
                self.COVERAGE, "Coverage: where the layers are complete (polygons)",
                types=[compat.POLYGONS], optional=True,
            )
        )  # fmt: skip
        advanced = [
            QgsProcessingParameterNumber(self.WIDTH_ROAD, "Road stroke width (metres)",
                                         type=compat.DOUBLE, minValue=0.01, optional=True),
            QgsProcessingParameterNumber(self.WIDTH_HIGHWAY, "Highway stroke width (metres)",
                                         type=compat.DOUBLE, minValue=0.01, optional=True),
            QgsProcessingParameterNumber(self.VAL_SHARE, "Validation share", type=compat.DOUBLE,
                                         defaultValue=DEFAULT_VAL_SHARE, minValue=0.0,
                                         maxValue=0.9),
            QgsProcessingParameterNumber(self.TILE, "Pair side (px of the model grid)",
                                         type=compat.INTEGER, defaultValue=DEFAULT_TILE,
                                         minValue=32),
            QgsProcessingParameterNumber(self.STEP, "Step between pairs (px; 0: half a pair)",
                                         type=compat.INTEGER, defaultValue=DEFAULT_STEP,
                                         minValue=0),
            QgsProcessingParameterFile(self.MODEL, "Model whose grid to cut on (empty: bundled)",
                                       behavior=compat.FILE, optional=True,
                                       fileFilter="geomap-gan models (*.safetensors)"),
            QgsProcessingParameterString(self.BANDS, "RGB bands, 1-based, e.g. 1,2,3",
                                         optional=True),
        ]  # fmt: skip
        for param in advanced:
            param.setFlags(param.flags() | compat.ADVANCED)
            self.addParameter(param)
        self.addParameter(QgsProcessingParameterFolderDestination(self.OUTPUT, "Pairs folder"))
        self.addOutput(QgsProcessingOutputNumber("TRAIN", "Training pairs"))
        self.addOutput(QgsProcessingOutputNumber("VAL", "Validation pairs"))

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
        args = [str(engine), "pairs", *self._engine_arguments(parameters, context, feedback)]
        feedback.pushInfo("$ " + " ".join(args))
        try:
            check_executable(engine)
            result = run_engine(args, lambda e: _show_event(e, feedback), feedback.isCanceled)
        except EngineError as exc:
            message = str(exc)
            if feedback.isCanceled():
                message = "cancelled; no pairs were written"
            raise QgsProcessingException(message) from None
        feedback.setProgress(100.0)
        feedback.pushInfo(
            f"wrote {result['train']} training and {result['val']} validation pairs to "
            f"{result['out_dir']} ({result['tile']} px at {result['gsd']:.4g} m/px)"
        )
        return {self.OUTPUT: result["out_dir"], "TRAIN": result["train"], "VAL": result["val"]}

    def _vector_path(
        self, parameters: dict[str, Any], name: str, context: QgsProcessingContext,
        feedback: QgsProcessingFeedback,
    ) -> str | None:  # fmt: skip
        """A single-layer file of the parameter's features (a temporary copy unless it is one)."""
        if not _is_set(parameters, name):
            return None
        path = self.parameterAsCompatibleSourceLayerPath(
            parameters, name, context, SINGLE_LAYER_FORMATS, "gpkg", feedback
        )
        if not path:
            raise QgsProcessingException(self.invalidSourceError(parameters, name))
        return str(path).split("|")[0]

    def _engine_arguments(
        self, parameters: dict[str, Any], context: QgsProcessingContext,
        feedback: QgsProcessingFeedback,
    ) -> list[str]:  # fmt: skip
        layer = self.parameterAsRasterLayer(parameters, self.INPUT, context)
        if layer is None:
            raise QgsProcessingException(self.invalidRasterError(parameters, self.INPUT))
        out = self.parameterAsString(parameters, self.OUTPUT, context)
        # QGIS asked for this folder: an earlier pairs folder there is replaced (the engine
        # refuses a folder holding anything else)
        args = [_source_path(layer), out, "--progress", "json", "--overwrite"]
        for name, cls, _ in CLASS_LAYERS:
            path = self._vector_path(parameters, name, context, feedback)
            if path is not None:
                args += ["--layer", f"{cls}={path}"]
        map_layer = self.parameterAsRasterLayer(parameters, self.MAP, context)
        if map_layer is not None:
            args += ["--map", _source_path(map_layer)]
        if "--layer" not in args and "--map" not in args:
            raise QgsProcessingException(
                "give the map: at least one of the class layers, or a map raster"
            )
        coverage = self._vector_path(parameters, self.COVERAGE, context, feedback)
        if coverage is not None:
            args += ["--coverage", coverage]
        for name, cls in ((self.WIDTH_ROAD, "road"), (self.WIDTH_HIGHWAY, "highway")):
            if _is_set(parameters, name):
                args += ["--width", f"{cls}={self.parameterAsDouble(parameters, name, context)!r}"]
        args += ["--val-share", repr(self.parameterAsDouble(parameters, self.VAL_SHARE, context))]
        args += ["--tile", str(self.parameterAsInt(parameters, self.TILE, context))]
        args += ["--step", str(self.parameterAsInt(parameters, self.STEP, context))]
        model = self.parameterAsFile(parameters, self.MODEL, context)
        if model:
            args += ["--model", model]
        bands = re.sub(r"[\s,]+", ",", self.parameterAsString(parameters, self.BANDS, context))
        if bands.strip(","):
            args += ["--bands", bands.strip(",")]
        return args
