"""The plugin object QGIS keeps: it registers and unregisters the Processing provider."""

from __future__ import annotations

from typing import Any

from qgis.core import QgsApplication

from .provider import GeomapGanProvider


class GeomapGanPlugin:
    """Processing-only plugin: no menus or toolbars, the algorithm lives in the toolbox.

    ``initProcessing`` is what ``qgis_process`` calls (with ``iface`` None); the desktop calls
    ``initGui``, which does the same. The provider is kept on ``self`` because a provider that no
    Python object references is garbage-collected and its algorithms vanish from the registry.
    """

    def __init__(self, iface: Any) -> None:
        self.iface = iface
        self.provider: GeomapGanProvider | None = None

    def initProcessing(self) -> None:  # noqa: N802 (name fixed by QGIS)
        if self.provider is None:
            self.provider = GeomapGanProvider()
            QgsApplication.processingRegistry().addProvider(self.provider)

    def initGui(self) -> None:  # noqa: N802 (name fixed by QGIS)
        self.initProcessing()

    def unload(self) -> None:
        if self.provider is not None:
            QgsApplication.processingRegistry().removeProvider(self.provider)
            self.provider = None
