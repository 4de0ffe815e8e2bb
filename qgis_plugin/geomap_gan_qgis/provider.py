"""The Processing provider "geomap-gan" (id ``geomap_gan``) and its one setting, the engine path."""

from __future__ import annotations

from pathlib import Path

from qgis.core import QgsProcessingProvider
from qgis.PyQt.QtGui import QIcon

from .engine import SETTING
from .finetune_algorithm import FinetuneAlgorithm
from .pairs_algorithm import PairsAlgorithm
from .render_algorithm import RenderAlgorithm
from .setup_algorithm import SetupAlgorithm
from .vectorize_algorithm import VectorizeAlgorithm

ICON = Path(__file__).resolve().parent / "icon.png"


class GeomapGanProvider(QgsProcessingProvider):
    """Holds the render, vectorize, training-pairs, fine-tune and set-up algorithms; rasters
    out are GeoTIFF only."""

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

    def load(self) -> bool:
        """Adds the setting "geomap-gan executable" under Settings > Options > Processing >
        Providers > geomap-gan (empty: $GEOMAP_GAN_EXECUTABLE, PATH, then the set-up venv)."""
        from processing.core.ProcessingConfig import ProcessingConfig, Setting

        ProcessingConfig.settingIcons[self.name()] = self.icon()
        ProcessingConfig.addSetting(
            Setting(self.name(), SETTING, "geomap-gan executable", "", valuetype=Setting.FILE)
        )
        ProcessingConfig.readSettings()
        self.refreshAlgorithms()
        return True

    def unload(self) -> None:
        from processing.core.ProcessingConfig import ProcessingConfig

        if SETTING in ProcessingConfig.settings:
            ProcessingConfig.removeSetting(SETTING)

    def loadAlgorithms(self) -> None:  # noqa: N802 (QGIS API)
        self.addAlgorithm(RenderAlgorithm())
        self.addAlgorithm(VectorizeAlgorithm())
        self.addAlgorithm(PairsAlgorithm())
        self.addAlgorithm(FinetuneAlgorithm())
        self.addAlgorithm(SetupAlgorithm())

    def supportedOutputRasterLayerExtensions(self) -> list[str]:  # noqa: N802 (QGIS API)
        return ["tif"]

    def defaultRasterFileExtension(self) -> str:  # noqa: N802 (QGIS API)
        return "tif"
