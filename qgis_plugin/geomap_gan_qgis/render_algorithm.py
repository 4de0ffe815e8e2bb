"""Processing algorithm ``geomap_gan:render``: Processing parameters in, one engine run out.

The engine is the ``geomap-gan`` command of its own environment, run as a child process
(``engine.run_engine``): this module only turns parameters into its command line, its JSON events
into QGIS feedback, and its one-line errors into ``QgsProcessingException``. Nothing here imports
torch, rasterio or geomap_gan, so QGIS's Python never loads them.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from qgis.core import (
    QgsApplication,
    QgsCoordinateReferenceSystem,
    QgsFeatureRequest,
    QgsGeometry,
    QgsProcessingAlgorithm,
    QgsProcessingContext,
    QgsProcessingException,
    QgsProcessingFeedback,
    QgsProcessingOutputNumber,
    QgsProcessingParameterBoolean,
    QgsProcessingParameterEnum,
    QgsProcessingParameterExtent,
    QgsProcessingParameterFeatureSource,
    QgsProcessingParameterFile,
    QgsProcessingParameterFileDestination,
    QgsProcessingParameterNumber,
    QgsProcessingParameterRasterDestination,
    QgsProcessingParameterRasterLayer,
    QgsProcessingParameterString,
    QgsProcessingUtils,
    QgsRasterLayer,
)
from qgis.PyQt.QtGui import QIcon

from . import compat
from .engine import (
    SETTING,
    EngineError,
    check_executable,
    find_engine,
    not_found_message,
    run_engine,
)
from .styles import load_layers

ICON = Path(__file__).resolve().parent / "icon.png"

# Defaults mirror geomap_gan's RenderOptions (and so the CLI); literals, because the plugin never
# imports the engine. tests/test_qgis_plugin.py checks that they agree.
DEFAULT_WINDOW = 1024  # px of the model grid, models with a bounded receptive field
DEFAULT_OVERLAP = 32  # px of the model grid, blended windows (models without one)
DEFAULT_BATCH_SIZE = 0  # windows per forward pass; 0: the engine's choice for the device
DEVICES = ("auto", "cpu", "cuda")
OUTPUT_RESOLUTIONS = ("model", "native")
FORMATS = ("GTiff", "COG")


def setup_venv() -> Path:
    """Where "Set up geomap-gan" puts the engine: a venv in the user's QGIS profile folder."""
    return Path(QgsApplication.qgisSettingsDirPath()) / "geomap-gan" / "venv"


def engine_setting() -> str | None:
    """The provider setting (Settings > Options > Processing > Providers > geomap-gan)."""
    from processing.core.ProcessingConfig import ProcessingConfig

    value = ProcessingConfig.getSetting(SETTING)
    return str(value) if value else None


def locate_engine() -> Path | None:
    return find_engine(engine_setting(), setup_venv(), os.environ)


def crs_string(crs: QgsCoordinateReferenceSystem) -> str:
    """A CRS string the engine understands: 'EPSG:n' when QGIS knows the code, else GDAL WKT."""
    authid = crs.authid()
    if authid.upper().startswith(("EPSG:", "ESRI:")):
        return authid
    return crs.toWkt(compat.WKT_GDAL)


class CancellableAlgorithm(QgsProcessingAlgorithm):
    """What every geomap-gan algorithm shares: its identity from four class attributes, the
    icon, a fresh copy per run, and Cancel (each runs a child process that Cancel stops)."""

    NAME = ""
    DISPLAY_NAME = ""
    DESCRIPTION = ""
    TAGS: tuple[str, ...] = ()

    def name(self) -> str:
        return self.NAME

    def displayName(self) -> str:  # noqa: N802 (QGIS API)
        return self.DISPLAY_NAME

    def shortDescription(self) -> str:  # noqa: N802 (QGIS API)
        return self.DESCRIPTION

    def tags(self) -> list[str]:
        return list(self.TAGS)

    def icon(self) -> QIcon:
        return QIcon(str(ICON))

    def createInstance(self) -> QgsProcessingAlgorithm:  # noqa: N802 (QGIS API)
        return type(self)()

    def flags(self) -> Any:
        return super().flags() | compat.CAN_CANCEL


class RenderAlgorithm(CancellableAlgorithm):
    """Render map from satellite image (``geomap_gan:render``)."""

    INPUT = "INPUT"
    MODEL = "MODEL"
    BANDS = "BANDS"
    WINDOW = "WINDOW"
    OVERLAP = "OVERLAP"
    BATCH_SIZE = "BATCH_SIZE"
    DEVICE = "DEVICE"
    OUTPUT_RES = "OUTPUT_RES"
    AOI = "AOI"
    EXTENT = "EXTENT"
    GSD = "GSD"
    SCALE = "SCALE"
    FORMAT = "FORMAT"
    AMP = "AMP"
    HARMONIZE = "HARMONIZE"
    ALLOW_UNGEOREFERENCED = "ALLOW_UNGEOREFERENCED"
    OUTPUT = "OUTPUT"
    VECTORS = "VECTORS"
    RENDER_SHARE = 85.0  # per cent of the progress bar for the render when vectors follow

    NAME = "render"
    DISPLAY_NAME = "Render map from satellite image"
    DESCRIPTION = "Turn an aerial or satellite raster into a map-style raster with a pix2pix GAN."
    TAGS = ("pix2pix", "gan", "map", "imagery", "deep learning", "style", "render")

    def shortHelpString(self) -> str:  # noqa: N802 (QGIS API)
        return (
            "Renders a map-style RGB GeoTIFF (roads, water, parks, buildings) from an RGB aerial "
            "or satellite raster with a pix2pix generator, keeping the input's CRS and extent. "
            "The input is resampled to the model's ground sample distance (metres per pixel) and "
            "rendered in large windows, each keeping only the pixels whose whole neighbourhood "
            "it sees, so the map does not depend on the window grid. Output at the model's "
            "resolution or back at the input's (Output resolution).<br><br>"
            "The model was trained on New York aerials: elsewhere expect plausible but "
            "imperfect maps; the log says when a scene's colours are far from the training "
            "aerials.<br><br>"
            "<b>Bands</b>: 1-based band numbers for R,G,B such as 1,2,3; empty: from the colour "
            "interpretation, else 1,2,3.<br>"
            "<b>Area of interest</b>: polygons and/or an extent; only windows that touch them "
            "are rendered.<br>"
            "<b>Model</b>: a geomap-gan .safetensors file; empty: the bundled model.<br>"
            "<b>Map as vector layers</b> (optional): a GeoPackage of the map's water and park "
            "polygons and road and highway centre lines, made from the rendered map in the "
            "same run (as <i>Vectorize map</i> with its defaults) and added to the project in "
            "the map's colours.<br>"
            "The engine runs as the geomap-gan command in its own environment: run "
            "<i>Set up geomap-gan</i> once, or point Settings > Options > Processing > "
            "Providers > geomap-gan at an installed geomap-gan."
        )

    def canExecute(self) -> tuple[bool, str]:  # noqa: N802 (QGIS API)
        """Whether an engine is configured or installed (no process is started)."""
        return (True, "") if locate_engine() is not None else (False, not_found_message())

    # ---- parameters -------------------------------------------------------------------------
    def initAlgorithm(self, config: dict[str, Any] | None = None) -> None:  # noqa: N802
        self.addParameter(
            QgsProcessingParameterRasterLayer(self.INPUT, "Input aerial/satellite raster")
        )
        self.addParameter(
            QgsProcessingParameterFile(
                self.MODEL,
                "Model file (empty: the bundled model)",
                behavior=compat.FILE,
                fileFilter="geomap-gan models (*.safetensors *.pt *.pth);;All files (*.*)",
                optional=True,
            )
        )
        self.addParameter(
            QgsProcessingParameterString(
                self.BANDS,
                "RGB bands, 1-based, e.g. 1,2,3 (empty: from colour interpretation)",
                optional=True,
            )
        )
        self.addParameter(_enum(self.DEVICE, "Device", DEVICES, DEVICES[0]))
        self.addParameter(
            _enum(
                self.OUTPUT_RES,
                "Output resolution (model: the model's GSD; native: the input's pixel size)",
                OUTPUT_RESOLUTIONS,
                OUTPUT_RESOLUTIONS[0],
            )
        )
        self.addParameter(
            QgsProcessingParameterFeatureSource(
                self.AOI, "Area of interest (polygons)", types=[compat.POLYGONS], optional=True
            )
        )
        self.addParameter(
            QgsProcessingParameterExtent(self.EXTENT, "Area of interest (extent)", optional=True)
        )
        for param in self._advanced_parameters():
            param.setFlags(param.flags() | compat.ADVANCED)
            self.addParameter(param)
        self.addParameter(QgsProcessingParameterRasterDestination(self.OUTPUT, "Rendered map"))
        self.addParameter(
            QgsProcessingParameterFileDestination(
                self.VECTORS,
                "Map as vector layers (water, parks, roads, highways)",
                "GeoPackage (*.gpkg)",
                optional=True,
                createByDefault=False,
            )
        )
        for name, label in (
            ("WINDOWS", "Windows rendered"),
            ("WINDOWS_SKIPPED", "Windows skipped (outside the AOI or nodata)"),
            ("SECONDS", "Render time in the engine (seconds)"),
            ("MEGAPIXELS", "Input megapixels at the model's GSD"),
        ):
            self.addOutput(QgsProcessingOutputNumber(name, label))

    def _advanced_parameters(self) -> list[Any]:
        def integer(name: str, label: str, default: int, minimum: int) -> Any:
            return QgsProcessingParameterNumber(
                name, label, type=compat.INTEGER, defaultValue=default, minValue=minimum
            )

        return [
            integer(self.WINDOW, "Window side (px of the model grid)", DEFAULT_WINDOW, 64),
            integer(self.OVERLAP, "Overlap of blended windows (older models)", DEFAULT_OVERLAP, 0),
            integer(
                self.BATCH_SIZE,
                "Batch size (windows per pass; 0: automatic)",
                DEFAULT_BATCH_SIZE,
                0,
            ),
            QgsProcessingParameterNumber(
                self.GSD,
                "Override the model's input GSD (metres per pixel)",
                type=compat.DOUBLE,
                minValue=0.0,
                optional=True,
            ),
            QgsProcessingParameterString(
                self.SCALE,
                "Linear stretch to 8 bit MIN,MAX (empty: automatic percentiles)",
                optional=True,
            ),
            _enum(self.FORMAT, "Output format", FORMATS, FORMATS[0]),
            QgsProcessingParameterBoolean(
                self.AMP, "Use bfloat16 autocast where the device supports it", defaultValue=True
            ),
            QgsProcessingParameterBoolean(
                self.HARMONIZE,
                "Map the scene's colours onto the training aerials' (harmonise)",
                defaultValue=False,
            ),
            QgsProcessingParameterBoolean(
                self.ALLOW_UNGEOREFERENCED,
                "Allow an input without CRS/geotransform",
                defaultValue=False,
            ),
        ]

    # ---- run --------------------------------------------------------------------------------
    def processAlgorithm(  # noqa: N802 (QGIS API)
        self,
        parameters: dict[str, Any],
        context: QgsProcessingContext,
        feedback: QgsProcessingFeedback,
    ) -> dict[str, Any]:
        if feedback is None:  # C++ callers may pass none
            feedback = QgsProcessingFeedback()
        engine = locate_engine()
        if engine is None:
            raise QgsProcessingException(not_found_message())
        args = [str(engine), "render", *self._engine_arguments(parameters, context)]
        vectors = self._vectors_path(parameters, context)
        if vectors:
            args += ["--vectors", vectors]
        feedback.pushInfo("$ " + " ".join(args))
        share = self.RENDER_SHARE if vectors else 100.0

        def on_event(event: dict[str, Any]) -> None:
            _show_event(event, feedback, (0.0, share) if "stage" not in event else (share, 100.0))

        try:
            check_executable(engine)
            result = run_engine(args, on_event, feedback.isCanceled)
        except EngineError as exc:
            raise QgsProcessingException(str(exc)) from None
        feedback.setProgress(100.0)
        feedback.pushInfo(
            f"rendered {result['width']}x{result['height']} px, CRS {result['crs']}, "
            f"{result['windows']} windows ({result['windows_skipped']} skipped) in "
            f"{result['seconds']:.1f} s"
        )
        out = {
            self.OUTPUT: str(result["path"]),
            "WINDOWS": result["windows"],
            "WINDOWS_SKIPPED": result["windows_skipped"],
            "SECONDS": result["seconds"],
            "MEGAPIXELS": result["megapixels"],
        }
        if vectors and "vectors" in result:
            made = result["vectors"]
            counts = made["features"]
            feedback.pushInfo(
                "vectorized: " + ", ".join(f"{n} {c}" for c, n in counts.items())
                + f" in {made['seconds']:.1f} s"
            )  # fmt: skip
            out[self.VECTORS] = str(made["path"])
            if context.willLoadLayerOnCompletion(str(result["path"])):
                load_layers(context, str(made["path"]), list(counts), Path(vectors).stem)
        return out

    def _vectors_path(self, parameters: dict[str, Any], context: QgsProcessingContext) -> str:
        """The GeoPackage the map's vector layers go to, or '' when none is asked for."""
        value = parameters.get(self.VECTORS)
        if value is None or value == "":
            return ""
        return self.parameterAsFileOutput(parameters, self.VECTORS, context) or ""

    def _engine_arguments(
        self, parameters: dict[str, Any], context: QgsProcessingContext
    ) -> list[str]:
        """The ``geomap-gan render`` arguments for these parameters (the engine validates them)."""
        layer = self.parameterAsRasterLayer(parameters, self.INPUT, context)
        if layer is None:
            raise QgsProcessingException(self.invalidRasterError(parameters, self.INPUT))
        dst = self.parameterAsOutputLayer(parameters, self.OUTPUT, context)  # the engine checks it
        args = [_source_path(layer), dst, "--progress", "json", "--overwrite"]  # QGIS asked
        args += ["--device", self.parameterAsEnumString(parameters, self.DEVICE, context)]
        args += ["--output-res", self.parameterAsEnumString(parameters, self.OUTPUT_RES, context)]
        args += ["--format", self.parameterAsEnumString(parameters, self.FORMAT, context)]
        for name, flag in ((self.WINDOW, "--window"), (self.OVERLAP, "--overlap"),
                           (self.BATCH_SIZE, "--batch-size")):  # fmt: skip
            args += [flag, str(self.parameterAsInt(parameters, name, context))]
        model = self.parameterAsFile(parameters, self.MODEL, context)
        if model:
            args += ["--model", model]
        for name, flag in ((self.BANDS, "--bands"), (self.SCALE, "--scale")):
            text = re.sub(r"[\s,]+", ",", self.parameterAsString(parameters, name, context).strip())
            if text:
                args += [flag, text]
        if _is_set(parameters, self.GSD):
            args += ["--gsd", repr(self.parameterAsDouble(parameters, self.GSD, context))]
        args.append(
            "--amp" if self.parameterAsBoolean(parameters, self.AMP, context) else "--no-amp"
        )
        if self.parameterAsBoolean(parameters, self.HARMONIZE, context):
            args.append("--harmonize")
        if self.parameterAsBoolean(parameters, self.ALLOW_UNGEOREFERENCED, context):
            args.append("--allow-ungeoreferenced")
        aoi = self._aoi_wkt(parameters, context, layer.crs())
        if aoi is not None:  # a file: a polygon layer's WKT can outgrow a command line
            path = Path(QgsProcessingUtils.generateTempFilename("aoi.wkt"))
            path.write_text(aoi, encoding="utf-8")
            args += ["--aoi", str(path), "--aoi-crs", crs_string(layer.crs())]
        return args

    def _aoi_wkt(
        self,
        parameters: dict[str, Any],
        context: QgsProcessingContext,
        crs: QgsCoordinateReferenceSystem,
    ) -> str | None:
        """AOI polygons (clipped to the extent when both are given) as WKT in the raster's CRS."""
        area: QgsGeometry | None = None
        source = self.parameterAsSource(parameters, self.AOI, context)
        if source is not None:
            request = QgsFeatureRequest().setNoAttributes()
            if crs.isValid():
                request.setDestinationCrs(crs, context.transformContext())
            parts = [f.geometry() for f in source.getFeatures(request) if f.hasGeometry()]
            area = QgsGeometry.unaryUnion(parts) if parts else QgsGeometry()
            if area.isEmpty():
                raise QgsProcessingException(
                    "the AOI layer has no polygon features; select or draw at least one polygon"
                )
        if _is_set(parameters, self.EXTENT):
            box = self.parameterAsExtentGeometry(parameters, self.EXTENT, context, crs)
            if box is not None and not box.isEmpty():
                area = box if area is None else area.intersection(box)
                if area.isEmpty():
                    raise QgsProcessingException(
                        "the AOI polygons and the extent do not overlap; nothing to render"
                    )
        return None if area is None else area.asWkt()


def _enum(name: str, label: str, options: tuple[str, ...], default: str) -> Any:
    """A drop-down whose values are the CLI's words (``DEVICE=cpu`` in qgis_process), not
    indexes: static strings."""
    param = QgsProcessingParameterEnum(name, label, options=list(options), defaultValue=default)
    param.setUsesStaticStrings(True)
    return param


def _is_set(parameters: dict[str, Any], name: str) -> bool:
    value = parameters.get(name)
    return value is not None and value != ""


def _source_path(layer: QgsRasterLayer) -> str:
    """The file (or GDAL dataset string) behind a layer; the engine reads it with GDAL."""
    if layer.providerType() != "gdal":
        raise QgsProcessingException(
            f"the input layer {layer.name()!r} is a {layer.providerType()} layer; "
            "save it as a GeoTIFF first (the renderer reads files through GDAL)"
        )
    return layer.source()


def _show_event(
    event: dict[str, Any],
    feedback: QgsProcessingFeedback,
    span: tuple[float, float] = (0.0, 100.0),
) -> None:
    """One engine event on the Processing feedback: progress bar (its ``span`` of it, per
    cent), status on the progress text, log, warnings in red."""
    if event["event"] == "progress":
        total = event.get("total") or 0
        part = event.get("done", 0) / total if total else 0.0
        feedback.setProgress(span[0] + (span[1] - span[0]) * part)
    elif event["event"] == "status":
        feedback.setProgressText(str(event.get("message", "")))
    elif event["event"] == "log":
        message = str(event.get("message", ""))
        if event.get("level") in ("WARNING", "ERROR", "CRITICAL"):
            feedback.reportError(message, False)
        else:
            feedback.pushInfo(message)
