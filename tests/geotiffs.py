"""Tiny GeoTIFFs for engine tests (a helper module, not a test file)."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
import torch
from affine import Affine
from rasterio.enums import ColorInterp
from rasterio.errors import NotGeoreferencedWarning

from geomap_gan.model.modelfile import MapModel, ModelCard

UTM31 = "EPSG:32631"
ORIGIN = (500_000.0, 5_000_000.0)


def write_geotiff(
    path: Path,
    data: np.ndarray,
    res: float = 2.0,
    crs: str | None = UTM31,
    transform: Affine | None = None,
    colorinterp: list[ColorInterp] | None = None,
    **profile: Any,
) -> Path:
    """Write (bands, rows, cols) ``data`` as a GeoTIFF with square ``res`` pixels."""
    count, height, width = data.shape
    if transform is None and crs is not None:
        transform = Affine(res, 0, ORIGIN[0], 0, -res, ORIGIN[1])
    opts = dict(driver="GTiff", width=width, height=height, count=count, dtype=data.dtype.name)
    if crs is not None:
        opts.update(crs=crs, transform=transform)
    opts.update(profile)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)  # crs=None is on purpose
        dst = rasterio.open(path, "w", **opts)
    with dst:
        dst.write(data)
        if colorinterp is not None:
            dst.colorinterp = colorinterp
    return path


def noise_rgb(height: int, width: int, seed: int = 0, bands: int = 3) -> np.ndarray:
    """Smooth-ish random uint8 imagery (bands, rows, cols)."""
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (bands, height, width), dtype=np.uint8)


def identity_model(tile: int = 32, gsd: float = 2.0) -> MapModel:
    """A 'model' whose output is its input: the engine must reproduce the scene exactly."""
    return MapModel(torch.nn.Identity(), ModelCard(name="identity", tile_size=tile, gsd=gsd))


class BoxBlur(torch.nn.Module):
    """5x5 mean filter with zero padding: like a U-Net it sees darkened (grey) borders at the
    edge of each tile, so tiling without blending shows seams."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 3, 5, padding=2, groups=3, bias=False)
        torch.nn.init.constant_(self.conv.weight, 1 / 25)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


def blur_model(tile: int = 32, gsd: float = 2.0) -> MapModel:
    return MapModel(BoxBlur().eval(), ModelCard(name="blur", tile_size=tile, gsd=gsd))
