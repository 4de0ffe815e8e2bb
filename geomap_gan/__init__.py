"""geomap-gan: georeferenced satellite/aerial imagery to map-style rasters with pix2pix.

Public API (imported lazily so ``import geomap_gan`` and ``geomap-gan --help`` stay instant):
``render``, ``RenderOptions``, ``load_model``, ``train``, ``TrainConfig``, ``evaluate``,
``vectorize`` (map raster to GIS layers) with ``VectorizeOptions``, and the scale-out and download
entry points.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import logging
from typing import Any

from geomap_gan import _compat

try:  # the version lives in pyproject.toml only
    __version__ = importlib.metadata.version("geomap-gan")
except importlib.metadata.PackageNotFoundError:  # a source tree that was never installed
    __version__ = "0+unknown"

logging.getLogger(__name__).addHandler(logging.NullHandler())
_compat.install()

_LAZY = {
    "render": "geomap_gan.rendering.engine",
    "RenderOptions": "geomap_gan.rendering.engine",
    "RenderResult": "geomap_gan.rendering.engine",
    "plan_render": "geomap_gan.rendering.engine",
    "render_many": "geomap_gan.distributed",
    "render_strips": "geomap_gan.distributed",
    "download_maps": "geomap_gan.download",
    "load_model": "geomap_gan.model.modelfile",
    "save_model": "geomap_gan.model.modelfile",
    "MapModel": "geomap_gan.model.modelfile",
    "ModelCard": "geomap_gan.model.modelfile",
    "train": "geomap_gan.training.loop",
    "TrainConfig": "geomap_gan.training.loop",
    "evaluate": "geomap_gan.training.metrics",
    "vectorize": "geomap_gan.vector.core",
    "VectorizeOptions": "geomap_gan.vector.options",
    "VectorizeResult": "geomap_gan.vector.core",
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'geomap_gan' has no attribute {name!r}")
