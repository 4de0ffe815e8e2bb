"""Processing algorithm ``geomap_gan:render``: parameters and feedback around one engine call.

All the work (reading, resampling, tiling, inference, blending, writing) is
``geomap_gan.render.render``; this module only turns Processing parameters into ``RenderOptions``,
QGIS feedback into the engine's ``progress``/``cancel`` callbacks and engine log lines, and
``GeomapGanError`` into ``QgsProcessingException`` with the same one-line message the CLI prints.

torch and geomap_gan are imported when the algorithm runs, never at plugin load, so QGIS starts
fast and a QGIS without them still lists the algorithm, which then says what to install.
"""

from __future__ import annotations

import importlib.util
import logging
import re
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from qgis.core import (
    QgsCoordinateReferenceSystem,
    QgsFeatureRequest,
    QgsGeometry,
    QgsProcessing,
    QgsProcessingAlgorithm,
    QgsProcessingContext,
    QgsProcessingException,
    QgsProcessingFeedback,
    QgsProcessingOutputNumber,
    QgsProcessingParameterBoolean,
    QgsProcessingParameterDefinition,
    QgsProcessingParameterEnum,
    QgsProcessingParameterExtent,
    QgsProcessingParameterFeatureSource,
    QgsProcessingParameterFile,
    QgsProcessingParameterNumber,
    QgsProcessingParameterRasterDestination,
    QgsProcessingParameterRasterLayer,
    QgsProcessingParameterString,
    QgsRasterLayer,
)
from qgis.PyQt.QtGui import QIcon

ICON = Path(__file__).resolve().parent / "icon.png"

# Defaults mirror geomap_gan.render.RenderOptions (and so the CLI); they are literals here so that
# QGIS can build the dialog without importing torch. tests/test_qgis_plugin.py checks they agree.
DEFAULT_OVERLAP = 32  # pixels of the model grid
DEFAULT_BATCH_SIZE = 0  # windows per forward pass; 0: the engine's choice for the device
DEVICES = ("auto", "cpu", "cuda")
OUTPUT_RESOLUTIONS = ("model", "native")
FORMATS = ("GTiff", "COG")
ENGINE_LOGGER = "geomap_gan"


def missing_dependency_message(exc: ImportError | None, missing: str | None = None) -> str:
    """One line saying which module QGIS's Python lacks and exactly how to provide it."""
    name = missing or (getattr(exc, "name", None) or "geomap_gan")
    top = name.split(".")[0]
    what = {
        "torch": "PyTorch ('torch')",
        "geomap_gan": "the geomap-gan package ('geomap_gan')",
    }.get(top, f"the Python module {top!r} (a dependency of geomap-gan)")
    if name == "geomap_gan.render":
        what = "geomap_gan.render (the installed geomap-gan is too old)"
    ver = f"{sys.version_info.major}.{sys.version_info.minor}"
    detail = f" ({exc})" if exc is not None else ""
    return (
        f"geomap-gan cannot run: QGIS's Python {ver} cannot import {what}{detail}. "
        f"Install geomap-gan and torch into a venv that shares QGIS's packages: "
        f"`/usr/bin/python3 -m venv --system-site-packages ~/geomap-venv && "
        f"~/geomap-venv/bin/pip install 'numpy<2' /path/to/geomap-gan`, then start QGIS with "
        f"PYTHONPATH=~/geomap-venv/lib/python{ver}/site-packages "
        f"(see the plugin's README.md)."
    )


def _import_engine() -> tuple[Any, Any, type[Exception]]:
    """``(render, RenderOptions, GeomapGanError)``, or a QgsProcessingException: what to install."""
    try:
        from geomap_gan.errors import GeomapGanError
        from geomap_gan.render import RenderOptions, render
    except ImportError as exc:
        raise QgsProcessingException(missing_dependency_message(exc)) from exc
    return render, RenderOptions, GeomapGanError


def parse_bands(text: str) -> tuple[int, ...] | None:
    """'1,2,3' (commas and/or spaces) -> (1, 2, 3), 1-based; '' -> None (engine chooses)."""
    text = text.strip()
    if not text:
        return None
    parts = [p for p in re.split(r"[,\s]+", text) if p]
    if not all(p.isdigit() and int(p) >= 1 for p in parts):
        raise QgsProcessingException(
            f"BANDS must be 1-based band numbers such as 1,2,3; got {text!r}"
        )
    return tuple(int(p) for p in parts)


def parse_scale(text: str) -> tuple[float, float] | None:
    """'MIN,MAX' -> (min, max) for the linear stretch to 8 bit; '' -> None (auto percentile)."""
    text = text.strip()
    if not text:
        return None
    parts = [p for p in re.split(r"[,\s]+", text) if p]
    try:
        low, high = (float(p) for p in parts)
    except ValueError:
        raise QgsProcessingException(
            f"SCALE must be two numbers MIN,MAX such as 0,3000; got {text!r}"
        ) from None
    return low, high


def crs_string(crs: QgsCoordinateReferenceSystem) -> str:
    """A CRS string rasterio understands: 'EPSG:n' when QGIS knows the code, else GDAL WKT."""
    authid = crs.authid()
    if authid.upper().startswith(("EPSG:", "ESRI:")):
        return authid
    return crs.toWkt(QgsCoordinateReferenceSystem.WKT_PREFERRED_GDAL)


class _FeedbackLogHandler(logging.Handler):
    """Forwards the engine's log records to the Processing log (warnings as errors in red)."""

    def __init__(self, feedback: QgsProcessingFeedback) -> None:
        super().__init__(logging.INFO)
        self.feedback = feedback
        self._lock_feedback = threading.Lock()

    def emit(self, record: logging.LogRecord) -> None:
        try:
            msg = self.format(record)
            with self._lock_feedback:
                if record.levelno >= logging.WARNING:
                    self.feedback.reportError(msg, False)
                else:
                    self.feedback.pushInfo(msg)
        except Exception:  # a logging handler must never raise into the engine
            self.handleError(record)


class RenderAlgorithm(QgsProcessingAlgorithm):
    """Render map from satellite image (``geomap_gan:render``)."""

    INPUT = "INPUT"
    MODEL = "MODEL"
    BANDS = "BANDS"
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
    ALLOW_UNGEOREFERENCED = "ALLOW_UNGEOREFERENCED"
    OUTPUT = "OUTPUT"

    # ---- identity ---------------------------------------------------------------------------
    def name(self) -> str:
        return "render"

    def displayName(self) -> str:  # noqa: N802 (QGIS API)
        return "Render map from satellite image"

    def shortDescription(self) -> str:  # noqa: N802 (QGIS API)
        return "Turn an aerial or satellite raster into a map-style raster with a pix2pix GAN."

    def tags(self) -> list[str]:
        return ["pix2pix", "gan", "map", "imagery", "deep learning", "style", "render"]

    def icon(self) -> QIcon:
        return QIcon(str(ICON))

    def createInstance(self) -> RenderAlgorithm:  # noqa: N802 (QGIS API)
        return RenderAlgorithm()

    def flags(self) -> QgsProcessingAlgorithm.Flags:
        return super().flags() | QgsProcessingAlgorithm.FlagCanCancel

    def shortHelpString(self) -> str:  # noqa: N802 (QGIS API)
        return (
            "Renders a map-style RGB GeoTIFF (roads, water, parks, buildings) from an RGB aerial "
            "or satellite raster with a pix2pix generator, keeping the input's CRS and extent. "
            "The input is resampled to the model's ground sample distance (metres per pixel), "
            "rendered in overlapping tiles blended without seams, and written at the model's "
            "resolution or back at the input's (Output resolution).<br><br>"
            "<b>Bands</b>: 1-based band numbers for R,G,B such as 1,2,3; empty: from the colour "
            "interpretation, else 1,2,3.<br>"
            "<b>Area of interest</b>: polygons and/or an extent; only tiles that touch them are "
            "rendered (polygons are clipped to the extent when both are given).<br>"
            "<b>Model</b>: a geomap-gan .safetensors model file; empty: the bundled model.<br>"
            "Same options and defaults as <code>geomap-gan render</code>. Needs the geomap-gan "
            "Python package and torch in QGIS's Python (see the plugin's README.md)."
        )

    def canExecute(self) -> tuple[bool, str]:  # noqa: N802 (QGIS API)
        """Cheap check (no import) so the toolbox can say what is missing before a run."""
        for module in ("geomap_gan", "torch"):
            try:
                found = importlib.util.find_spec(module) is not None
            except (ImportError, ValueError):
                found = False
            if not found:
                return False, missing_dependency_message(None, module)
        return True, ""

    # ---- parameters -------------------------------------------------------------------------
    def initAlgorithm(self, config: dict[str, Any] | None = None) -> None:  # noqa: N802
        self.addParameter(
            QgsProcessingParameterRasterLayer(self.INPUT, "Input aerial/satellite raster")
        )
        self.addParameter(
            QgsProcessingParameterFile(
                self.MODEL,
                "Model file (empty: the bundled model)",
                behavior=QgsProcessingParameterFile.File,
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
        self.addParameter(
            QgsProcessingParameterNumber(
                self.OVERLAP,
                "Tile overlap (pixels at model resolution)",
                type=QgsProcessingParameterNumber.Integer,
                defaultValue=DEFAULT_OVERLAP,
                minValue=0,
            )
        )
        self.addParameter(
            QgsProcessingParameterNumber(
                self.BATCH_SIZE,
                "Batch size (tiles per forward pass; 0: automatic)",
                type=QgsProcessingParameterNumber.Integer,
                defaultValue=DEFAULT_BATCH_SIZE,
                minValue=0,
            )
        )
        self.addParameter(self._enum(self.DEVICE, "Device: auto, cpu or cuda", DEVICES, DEVICES[0]))
        self.addParameter(
            self._enum(
                self.OUTPUT_RES,
                "Output resolution (model: the model's GSD; native: the input's pixel size)",
                OUTPUT_RESOLUTIONS,
                OUTPUT_RESOLUTIONS[0],
            )
        )
        self.addParameter(
            QgsProcessingParameterFeatureSource(
                self.AOI,
                "Area of interest (polygons)",
                types=[QgsProcessing.TypeVectorPolygon],
                optional=True,
            )
        )
        self.addParameter(
            QgsProcessingParameterExtent(self.EXTENT, "Area of interest (extent)", optional=True)
        )
        advanced = [
            QgsProcessingParameterNumber(
                self.GSD,
                "Override the model's input GSD (metres per pixel)",
                type=QgsProcessingParameterNumber.Double,
                minValue=0.0,
                optional=True,
            ),
            QgsProcessingParameterString(
                self.SCALE,
                "Linear stretch to 8 bit MIN,MAX (empty: automatic percentiles)",
                optional=True,
            ),
            self._enum(self.FORMAT, "Output format: GTiff or COG", FORMATS, FORMATS[0]),
            QgsProcessingParameterBoolean(
                self.AMP, "Use bfloat16 autocast where the device supports it", defaultValue=True
            ),
            QgsProcessingParameterBoolean(
                self.ALLOW_UNGEOREFERENCED,
                "Allow an input without CRS/geotransform",
                defaultValue=False,
            ),
        ]
        for param in advanced:
            param.setFlags(param.flags() | QgsProcessingParameterDefinition.FlagAdvanced)
            self.addParameter(param)
        self.addParameter(QgsProcessingParameterRasterDestination(self.OUTPUT, "Rendered map"))
        for name, label in (
            ("WINDOWS", "Tiles rendered"),
            ("WINDOWS_SKIPPED", "Tiles skipped (outside the AOI or nodata)"),
            ("SECONDS", "Render time (seconds)"),
            ("MEGAPIXELS", "Input megapixels at the model's GSD"),
        ):
            self.addOutput(QgsProcessingOutputNumber(name, label))

    @staticmethod
    def _enum(
        name: str, label: str, options: tuple[str, ...], default: str
    ) -> QgsProcessingParameterEnum:
        """An enum whose values are the CLI's words (``DEVICE=cpu``), not indexes.

        ``qgis_process help`` in 3.22 still lists indexes, so the labels name the words too.
        """
        param = QgsProcessingParameterEnum(name, label, options=list(options), defaultValue=default)
        param.setUsesStaticStrings(True)
        return param

    # ---- run --------------------------------------------------------------------------------
    def processAlgorithm(  # noqa: N802 (QGIS API)
        self,
        parameters: dict[str, Any],
        context: QgsProcessingContext,
        feedback: QgsProcessingFeedback,
    ) -> dict[str, Any]:
        render, render_options, geomap_gan_error = _import_engine()
        if feedback is None:  # C++ callers may pass none
            feedback = QgsProcessingFeedback()
        layer = self.parameterAsRasterLayer(parameters, self.INPUT, context)
        if layer is None:
            raise QgsProcessingException(self.invalidRasterError(parameters, self.INPUT))
        src = self._source_path(layer)
        dst = self.parameterAsOutputLayer(parameters, self.OUTPUT, context)
        if Path(dst).suffix.lower() not in (".tif", ".tiff"):
            raise QgsProcessingException(f"the output must be a GeoTIFF (.tif); got {dst}")
        aoi = self._aoi_wkt(parameters, context, layer.crs())
        gsd = (
            self.parameterAsDouble(parameters, self.GSD, context)
            if self._is_set(parameters, self.GSD)
            else None
        )
        model_path = self.parameterAsFile(parameters, self.MODEL, context) or None
        options = render_options(
            overlap=self.parameterAsInt(parameters, self.OVERLAP, context),
            batch_size=self.parameterAsInt(parameters, self.BATCH_SIZE, context),
            device=self.parameterAsEnumString(parameters, self.DEVICE, context),
            bands=parse_bands(self.parameterAsString(parameters, self.BANDS, context)),
            output_res=self.parameterAsEnumString(parameters, self.OUTPUT_RES, context),
            gsd=gsd,
            scale=parse_scale(self.parameterAsString(parameters, self.SCALE, context)),
            aoi=aoi,
            aoi_crs=crs_string(layer.crs()) if aoi is not None else None,
            driver=self.parameterAsEnumString(parameters, self.FORMAT, context),
            overwrite=True,  # QGIS asked the user already; temporary outputs are fresh paths
            allow_ungeoreferenced=self.parameterAsBoolean(
                parameters, self.ALLOW_UNGEOREFERENCED, context
            ),
            amp=self.parameterAsBoolean(parameters, self.AMP, context),
        )
        feedback.pushInfo(f"geomap-gan: {src} -> {dst}")
        feedback.pushInfo(f"model: {model_path or 'bundled default'}; {options}")

        def progress(done: int, total: int) -> None:
            feedback.setProgress(100.0 * done / total if total else 100.0)

        try:
            with _engine_log_to(feedback):
                result = render(
                    src, dst, model_path, options, progress=progress, cancel=feedback.isCanceled
                )
        except geomap_gan_error as exc:
            raise QgsProcessingException(str(exc)) from exc
        feedback.setProgress(100.0)
        feedback.pushInfo(
            f"rendered {result.width}x{result.height} px, CRS {result.crs}, "
            f"{result.windows} tiles ({result.windows_skipped} skipped) in {result.seconds:.1f} s"
        )
        return {
            self.OUTPUT: str(result.path),
            "WINDOWS": result.windows,
            "WINDOWS_SKIPPED": result.windows_skipped,
            "SECONDS": result.seconds,
            "MEGAPIXELS": result.megapixels,
        }

    # ---- helpers ----------------------------------------------------------------------------
    @staticmethod
    def _is_set(parameters: dict[str, Any], name: str) -> bool:
        value = parameters.get(name)
        return value is not None and value != ""

    @staticmethod
    def _source_path(layer: QgsRasterLayer) -> str:
        """The file (or GDAL dataset string) behind a layer; the engine reads it with rasterio."""
        if layer.providerType() != "gdal":
            raise QgsProcessingException(
                f"the input layer {layer.name()!r} is a {layer.providerType()} layer; "
                "save it as a GeoTIFF first (the renderer reads files through GDAL)"
            )
        return layer.source()

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
        if self._is_set(parameters, self.EXTENT):
            box = self.parameterAsExtentGeometry(parameters, self.EXTENT, context, crs)
            if box is not None and not box.isEmpty():
                area = box if area is None else area.intersection(box)
                if area.isEmpty():
                    raise QgsProcessingException(
                        "the AOI polygons and the extent do not overlap; nothing to render"
                    )
        return None if area is None else area.asWkt()


@contextmanager
def _engine_log_to(feedback: QgsProcessingFeedback) -> Iterator[None]:
    """Forward INFO and above from the engine's logger to the Processing log while rendering."""
    handler = _FeedbackLogHandler(feedback)
    logger = logging.getLogger(ENGINE_LOGGER)
    level = logger.level
    logger.addHandler(handler)
    if logger.getEffectiveLevel() > logging.INFO:
        logger.setLevel(logging.INFO)
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
