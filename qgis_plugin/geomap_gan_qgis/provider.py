"""The Processing provider "geomap-gan" (id ``geomap_gan``)."""

from __future__ import annotations

from pathlib import Path

from qgis.core import QgsProcessingProvider
from qgis.PyQt.QtGui import QIcon

from .render_algorithm import RenderAlgorithm

ICON = Path(__file__).resolve().parent / "icon.png"


class GeomapGanProvider(QgsProcessingProvider):
    """Holds the render algorithm; outputs are GeoTIFF only (the engine writes GTiff or COG)."""

    def id(self) -> str:
        return "geomap_gan"

    def name(self) -> str:
        return "geomap-gan"

    def longName(self) -> str:  # noqa: N802 (QGIS API)
        return "geomap-gan: satellite image to map (pix2pix)"

    def icon(self) -> QIcon:
        return QIcon(str(ICON))

    def svgIconPath(self) -> str:  # noqa: N802 (QGIS API)
        return str(ICON)

    def loadAlgorithms(self) -> None:  # noqa: N802 (QGIS API)
        self.addAlgorithm(RenderAlgorithm())

    def supportedOutputRasterLayerExtensions(self) -> list[str]:  # noqa: N802 (QGIS API)
        return ["tif"]

    def defaultRasterFileExtension(self) -> str:  # noqa: N802 (QGIS API)
        return "tif"
