"""What ``vectorize`` can be asked for: the layers, the clean-up thresholds (all in ground metres,
so one set of numbers suits any CRS and pixel size) and the output formats by file suffix.

The defaults are sized for the maps the model draws, at about 1.9 m per pixel (MAP_GSD):

- ``min_area`` 15 m²: four map pixels' worth (4 x 1.9² = 14.4 m², rounded up). Regions of one to
  four pixels are GAN speckle or JPEG ringing, not features: a map at this scale draws no pond or
  lawn under 4 m x 4 m. Polygons smaller than this are dropped and holes smaller than it filled.
- ``simplify`` 1 m: about half a map pixel. Centre lines (Douglas-Peucker: the tolerance bounds
  how far a line moves) lose their pixel staircase (at most 0.35 px off a diagonal) but stay
  within half a pixel of the skeleton: map strokes are only 2-6 px wide, and on 60 val tiles the
  road round-trip IoU falls from 0.744 (no simplification) to 0.728 at 1 m but to 0.702 at 1.5 m.
  Polygons (coverage simplification, area-based) keep their exact pixel outlines: any three
  pixel corners span at least half a pixel², so a tolerance below 0.71 px (1.34 m) only drops
  collinear corners. Pass 1.5-2 m for smoothed polygon outlines (0.999 and 0.996 IoU, 40% and
  60% fewer vertices on the val tiles).
- ``min_length`` 8 m: about four map pixels. Thinning grows a spur from every bump on a stroke's
  side; a branch with a free end that reaches less than this beyond the stroke it leaves is such
  a spur and is pruned, and a line free at both ends and shorter than this (a speck) is dropped.
  A real dead end reaches further.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from geomap_gan.errors import InputError
from geomap_gan.legend import AREA_CLASSES, CLASSES, LINE_CLASSES, parse_classes
from geomap_gan.vector import defaults

MAP_GSD = 1.9
"""Ground metres per pixel of the model's maps (0.9 m x 600 / 286 = 1.89 m, rounded): the scale the
defaults are sized for, and the pixel size assumed for a map with no CRS."""

DRIVERS = {".gpkg": "GPKG", ".fgb": "FlatGeobuf", ".geojson": "GeoJSON", ".shp": "ESRI Shapefile"}
"""Output format by file suffix; only GeoPackage holds several layers in one file."""

MULTI_LAYER = frozenset({"GPKG"})

STRIP_PIXELS = 1 << 22
"""Pixels per strip when ``strip_rows`` is 0: strips of about 4 Mpx keep the working memory (the
strip's RGB, masks, skeleton and distance transform) near constant whatever the map's width."""


@dataclass(frozen=True)
class VectorizeOptions:
    """Options of :func:`geomap_gan.vector.vectorize`; lengths in metres, areas in square metres.

    ``layers``: map classes to write, a tuple of legend names or one comma-separated string.
    ``strip_rows``: rows per processing strip (0: about 4 Mpx per strip); the result does not
    depend on it, only memory and speed do.
    """

    layers: tuple[str, ...] | str = CLASSES
    min_area: float = defaults.MIN_AREA
    simplify: float = defaults.SIMPLIFY
    min_length: float = defaults.MIN_LENGTH
    overwrite: bool = False
    allow_ungeoreferenced: bool = False
    strip_rows: int = 0

    def __post_init__(self) -> None:
        """Check every option (InputError naming the option and the fix); layers to a tuple."""
        text = self.layers if isinstance(self.layers, str) else ",".join(self.layers)
        try:
            names = parse_classes(text)
        except ValueError as exc:
            raise InputError(f"{exc}; choose layers from that list") from None
        object.__setattr__(self, "layers", tuple(dict.fromkeys(names)))
        for name in ("min_area", "simplify", "min_length"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
                raise InputError(
                    f"{name} must be a number >= 0 (got {value!r}); pass e.g. 0 to "
                    "turn that clean-up off"
                )
        if not isinstance(self.strip_rows, int) or self.strip_rows < 0:
            raise InputError(
                f"strip_rows must be an integer >= 0 (got {self.strip_rows!r}); "
                "0 picks it from the map's width"
            )

    @property
    def classes(self) -> tuple[str, ...]:
        """The requested classes (``layers`` as checked: a tuple of legend names)."""
        assert isinstance(self.layers, tuple)
        return self.layers

    @property
    def area_layers(self) -> tuple[str, ...]:
        """The requested classes drawn as areas (polygon layers), in legend order."""
        return tuple(c for c in CLASSES if c in self.layers and c in AREA_CLASSES)

    @property
    def line_layers(self) -> tuple[str, ...]:
        """The requested classes drawn as strokes (centre-line layers), in legend order."""
        return tuple(c for c in CLASSES if c in self.layers and c in LINE_CLASSES)


def driver_for(dst: str | Path) -> str:
    """The OGR driver for an output path, from its suffix; InputError for any other suffix."""
    suffix = Path(dst).suffix.lower()
    if suffix not in DRIVERS:
        known = ", ".join(DRIVERS)
        raise InputError(
            f"cannot tell the vector format of {Path(dst).name} from its suffix "
            f"{suffix or '(none)'}; use one of {known}"
        )
    return DRIVERS[suffix]


def layer_paths(dst: str | Path, layers: tuple[str, ...]) -> dict[str, Path]:
    """The file each layer goes to. GeoPackage: all in ``dst``. Single-layer formats: ``dst``
    itself when one layer is asked for, else one file per layer named ``<stem>_<class><suffix>``
    beside it (``roads.shp`` -> ``roads_road.shp``, ``roads_highway.shp``)."""
    dst = Path(dst)
    if driver_for(dst) in MULTI_LAYER or len(layers) == 1:
        return {name: dst for name in layers}
    return {name: dst.with_name(f"{dst.stem}_{name}{dst.suffix}") for name in layers}
