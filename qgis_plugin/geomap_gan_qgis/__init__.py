"""geomap-gan QGIS plugin: a Processing provider whose one algorithm calls ``geomap_gan.render``.

QGIS imports this package at start-up, so nothing heavy happens here: torch and geomap_gan are only
imported when the algorithm runs. That keeps QGIS fast to start and lets the plugin load (and say
what to install) in a QGIS whose Python lacks them.
"""

from __future__ import annotations

from typing import Any


def classFactory(iface: Any) -> Any:  # noqa: N802 (name fixed by QGIS)
    """Entry point QGIS calls with its ``QgisInterface`` (None inside ``qgis_process``)."""
    from .plugin import GeomapGanPlugin

    return GeomapGanPlugin(iface)
