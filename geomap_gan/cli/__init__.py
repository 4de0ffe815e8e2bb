"""The ``geomap-gan`` command line: a thin shell over the library, one module per command family.

The only package that imports click and tqdm or configures logging. Heavy imports (torch, rasterio)
happen inside command bodies so ``--help`` and ``--version`` are instant. Every GeomapGanError
becomes a one-line ``Error: ...`` on stderr and exit code 2, never a traceback.
"""

from geomap_gan.cli import (  # noqa: F401 (registers commands)
    download,
    model,
    pairs,
    render,
    scaleout,
    train,
    vectorize,
)
from geomap_gan.cli.app import cli, main

__all__ = ["cli", "main"]
