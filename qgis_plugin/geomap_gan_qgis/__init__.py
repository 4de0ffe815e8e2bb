"""geomap-gan QGIS plugin: a Processing provider that runs the geomap-gan engine as a child process.

QGIS imports this package at start-up, so nothing heavy happens here, and nothing here ever imports
torch, rasterio or geomap_gan: the engine is the ``geomap-gan`` command of its own environment.
"""

from __future__ import annotations

from typing import Any


def classFactory(iface: Any) -> Any:  # noqa: N802 (name fixed by QGIS)
    """Entry point QGIS calls with its ``QgisInterface`` (None inside ``qgis_process``)."""
    from .plugin import GeomapGanPlugin

    return GeomapGanPlugin(iface)
