"""What the assemblers hand the writer: batches of final features of one layer, in the map's
CRS (geometry is built in pixel coordinates, where it is exact, and placed only when final)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import shapely
from affine import Affine


@dataclass(frozen=True)
class Batch:
    """Final features of one layer: geometries in the map's CRS and their attribute columns."""

    layer: str
    geometries: np.ndarray
    fields: dict[str, np.ndarray]


def to_world(geoms: np.ndarray, transform: Affine) -> np.ndarray:
    """Geometries from pixel coordinates (x = column, y = row) to the CRS of ``transform``."""
    t = transform

    def place(xy: np.ndarray) -> np.ndarray:
        x, y = xy[:, 0], xy[:, 1]
        return np.column_stack([t.a * x + t.b * y + t.c, t.d * x + t.e * y + t.f])

    return shapely.transform(geoms, place)
