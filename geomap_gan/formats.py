"""Output-format registry: what each file the tool writes is, in one place (as rio-cogeo's
profiles). Render options and output, the Dask strip assembly, the mosaic, the sample grids and
the CLI's ``--format`` choices all read it, so a new format is one entry here.

Each entry says which writer makes the file (a GDAL driver, or Pillow for PNG grids), the
suffixes a file of that kind must carry (the suffix-driver rule of :func:`check_suffix`: a
``map.png`` holding TIFF bytes is refused), the default creation options (``--co`` wins), the
numeric creation options and the range they must stay in (refused before anything is allocated:
``BLOCKXSIZE=65536`` would ask GDAL for gigabytes), and whether the driver has no Create and so
is written as a plain GTiff first and then copied (``copy``: COG).

Light: no rasterio, no torch.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType

from geomap_gan.errors import InputError, OutputError

OUTPUT_BLOCK = 256  # pixels, the GTiff tile side
MAX_BLOCK = 4096  # pixels: a block side GDAL holds in memory per band and thread
# The compression levels, qualities and counts GDAL reads as numbers; name -> (low, high).
_GTIFF_NUMBERS = {
    "BLOCKXSIZE": (16, MAX_BLOCK),
    "BLOCKYSIZE": (1, MAX_BLOCK),
    "ZLEVEL": (1, 12),
    "ZSTD_LEVEL": (1, 22),
    "JPEG_QUALITY": (1, 100),
    "WEBP_LEVEL": (1, 100),
    "JXL_EFFORT": (1, 9),
    "NUM_THREADS": (1, 1024),
}
_COG_NUMBERS = {
    "BLOCKSIZE": (128, MAX_BLOCK),  # GDAL's COG driver refuses smaller tiles
    "LEVEL": (1, 22),
    "QUALITY": (1, 100),
    "OVERVIEW_COUNT": (0, 30),
    "NUM_THREADS": (1, 1024),
}


@dataclass(frozen=True)
class OutputFormat:
    """One kind of output file.

    ``name``: what the user picks (``--format``) and the GDAL driver that writes the final file
    (``driver``; "Pillow" for images drawn by Pillow). ``suffixes``: lower-case, the first is
    the one to suggest. ``creation_options``: defaults, user values win. ``numbers``: creation
    options read as whole numbers and their allowed range. ``copy``: the driver has no Create:
    the file is rendered as :data:`GTIFF` and then copied into this format. ``render``: offered
    by ``render --format``. ``alpha_option``: creation option that marks band 4 as alpha.
    """

    name: str
    driver: str
    suffixes: tuple[str, ...]
    description: str
    creation_options: Mapping[str, str] = field(default_factory=dict)
    numbers: Mapping[str, tuple[int, int]] = field(default_factory=dict)
    copy: bool = False
    render: bool = False
    alpha_option: tuple[str, str] | None = None

    def options(self, user: Mapping[str, str] | None = None, alpha: bool = False) -> dict[str, str]:
        """The creation options of a file: the defaults, alpha's, then ``user`` (upper-cased)."""
        opts = dict(self.creation_options)
        if alpha and self.alpha_option is not None:
            opts[self.alpha_option[0]] = self.alpha_option[1]
        opts.update(upper_options(user or {}))
        return opts

    def check_numbers(self, user: Mapping[str, str]) -> None:
        """InputError for a numeric creation option that is not a whole number in its range:
        checked before GDAL sees it (GDAL's COG driver aborts the process on ``BLOCKSIZE=abc``,
        and a 65536 px block asks for gigabytes before it fails)."""
        for name, value in upper_options(user).items():
            if name not in self.numbers:
                continue
            lo, hi = self.numbers[name]
            text = value.strip()
            if name == "NUM_THREADS" and text.upper() == "ALL_CPUS":
                continue
            if not (text.isdigit() and lo <= int(text) <= hi):
                raise InputError(
                    f"--co {name}={value}: {name} must be a whole number from {lo} to {hi} "
                    f"for {self.name}"
                )
        if self.driver == "GTiff":
            opts = self.options(user)
            for name in ("BLOCKXSIZE", "BLOCKYSIZE"):
                if opts.get("TILED", "NO").upper() in ("YES", "TRUE", "ON", "1") and (
                    int(opts.get(name, OUTPUT_BLOCK)) % 16
                ):
                    raise InputError(
                        f"--co {name}={opts[name]}: tiles must be a multiple of 16 pixels"
                    )


def upper_options(options: Mapping[str, str]) -> dict[str, str]:
    """Creation options with upper-case names and string values."""
    return {str(k).strip().upper(): str(v) for k, v in options.items()}


GTIFF = OutputFormat(
    name="GTiff",
    driver="GTiff",
    suffixes=(".tif", ".tiff"),
    description="GeoTIFF, tiled and DEFLATE-compressed",
    creation_options=MappingProxyType(
        {
            "TILED": "YES",
            "BLOCKXSIZE": str(OUTPUT_BLOCK),
            "BLOCKYSIZE": str(OUTPUT_BLOCK),
            "COMPRESS": "DEFLATE",
            "PREDICTOR": "2",
            "ZLEVEL": "1",  # libdeflate level 1: 4-5x faster than 6, files about 5% larger
            "PHOTOMETRIC": "RGB",
            "INTERLEAVE": "PIXEL",
            "BIGTIFF": "IF_SAFER",
        }
    ),
    numbers=MappingProxyType(_GTIFF_NUMBERS),
    render=True,
    alpha_option=("ALPHA", "YES"),
)
COG = OutputFormat(
    name="COG",
    driver="COG",
    suffixes=(".tif", ".tiff"),
    description="Cloud Optimized GeoTIFF with overviews",
    creation_options=MappingProxyType(
        {
            "BLOCKSIZE": "512",
            "COMPRESS": "DEFLATE",
            "PREDICTOR": "YES",
            "LEVEL": "6",
            "OVERVIEWS": "AUTO",
            "OVERVIEW_RESAMPLING": "AVERAGE",
            "BIGTIFF": "IF_SAFER",
        }
    ),
    numbers=MappingProxyType(_COG_NUMBERS),
    copy=True,
    render=True,
)
VRT = OutputFormat(
    name="VRT",
    driver="VRT",
    suffixes=(".vrt",),
    description="GDAL virtual mosaic over GeoTIFFs (render-many's mosaic, render --strips)",
)
PNG = OutputFormat(
    name="PNG",
    driver="Pillow",
    suffixes=(".png",),
    description="PNG image (evaluate --grid, training samples)",
)

FORMATS: Mapping[str, OutputFormat] = MappingProxyType({f.name: f for f in (GTIFF, COG, VRT, PNG)})
RENDER_FORMATS: tuple[str, ...] = tuple(n for n, f in FORMATS.items() if f.render)
"""The ``render --format`` choices (and the QGIS plugin's, which lists them as literals)."""
INTERMEDIATE = GTIFF
"""What a render writes before a ``copy`` step, and what Dask strips are."""


def get(name: str) -> OutputFormat:
    """The format called ``name`` (case-insensitive); InputError naming the choices."""
    for fmt in FORMATS.values():
        if fmt.name.lower() == str(name).lower():
            return fmt
    raise InputError(f"--format must be one of {', '.join(RENDER_FORMATS)}, got {name!r}")


def render_format(name: str) -> OutputFormat:
    """A format ``render`` can write; InputError otherwise."""
    fmt = get(name)
    if not fmt.render:
        raise InputError(f"--format must be one of {', '.join(RENDER_FORMATS)}, got {name!r}")
    return fmt


def check_suffix(path: str | Path, fmt: OutputFormat) -> None:
    """OutputError unless ``path`` carries a suffix of ``fmt`` (``map.png`` would hold TIFF
    bytes that image viewers and GIS software then misread); the message names the fix."""
    p = Path(path)
    if p.name.lower().endswith(fmt.suffixes):
        return
    stem = p.name[: -len(p.suffix)] if p.suffix else p.name
    allowed = " or ".join(fmt.suffixes)
    others = [f.name for f in FORMATS.values() if p.suffix and p.suffix.lower() in f.suffixes]
    hint = f" ({p.suffix} is {' / '.join(others)})" if others else ""
    raise OutputError(
        f"output {p.name} must end in {allowed}: geomap-gan writes {fmt.description} there"
        f"{hint}; for example {stem}{fmt.suffixes[0]}"
    )
