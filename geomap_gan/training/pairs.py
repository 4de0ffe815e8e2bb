"""Training pairs from a user's imagery and map layers: a georeferenced scene (the aerial, A) and
vector layers drawn in the legend's style and/or a map raster (the map, B), cut into A|B images on
the render grid, in the trainer's layout (``OUT/train``, ``OUT/val``), with ``OUT/pairs.json``
recording where every pair came from.

The same grid as the renderer: the scene's render grid at the model's GSD on the CRS lattice
(:func:`geomap_gan.rendering.grid.model_grid`), read with the renderer's own resampling and 8-bit
scaling (``engine.plan_scene``, ``resample.render_source``, ``reader.RegionReader``), so an aerial tile
holds exactly the pixels that the renderer would feed the model there; tiles start on the
network's stride lattice (``engine.lattice_phase``), so they see the render's stride phase.

The validation share is a spatial split: the grid is divided into square blocks, whole blocks
go to val, grown greedily as a compact region (:func:`geomap_gan.training.split.split_tiles`), and a training tile that
overlaps or touches a val tile is dropped, so no val pixel was ever seen in training, not even
at a tile's edge. Tiles lie wholly inside the coverage
(where the layers are complete) and where the aerial (and the map raster) has valid pixels.

Nothing is written until the pairs are complete: they are made in a hidden scratch folder beside
``OUT`` (named by host and process, so a killed run's folder is removed by the next run) and
renamed into place at the end.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import shapely

from geomap_gan import files
from geomap_gan.errors import InputError, OutputError, OutputExistsError, RenderCancelled
from geomap_gan.training.draw import (
    ClassShapes,
    check_class,
    default_widths,
    draw_tile,
)
from geomap_gan.training.layers import (
    LayerSpec,
    MapRaster,
    merge_classes,
    read_coverage,
    read_layer,
)
from geomap_gan.training.manifest import PAIRS_FILE, manifest
from geomap_gan.training.split import candidate_origins, choose_split

if TYPE_CHECKING:
    from geomap_gan.rendering.grid import Grid
    from geomap_gan.rendering.reader import RegionReader

log = logging.getLogger(__name__)

PAIRS_ENTRIES = {PAIRS_FILE, "train", "val"}  # what --overwrite may replace
DEFAULT_TILE = 286  # the trainer's load size: it random-crops its 256 px crops from these
# layer attributes (metres) that set each line feature's stroke width, the first found: a user's
# "width", or the "width_m" that `geomap-gan vectorize` writes


@dataclass(frozen=True)
class PairsOptions:
    """How to cut pairs. Units: pixels of the render grid; ``widths`` metres per class.

    ``tile``: side of a training pair's halves (the trainer random-crops the model's tile size
    from them); val pairs are the model's tile size, which the trainer evaluates uncropped.
    ``step``: distance between tile origins (0: half the tile, rounded down to the network's
    stride, so every tile starts on the render's stride lattice). ``val_share``: the share of
    tiles that go to val, in whole blocks of ``block`` px (0: the side that keeps the most
    training tiles, :func:`choose_split`). ``bands``, ``scale``:
    as for ``render``, and the fine-tuned model must be rendered with the same.
    """

    tile: int = DEFAULT_TILE
    step: int = 0
    val_share: float = 0.15
    block: int = 0
    seed: int = 0
    widths: Mapping[str, float] = field(default_factory=dict)
    bands: tuple[int, ...] | None = None
    scale: tuple[float, float] | None = None
    overwrite: bool = False

    def validate(self, model_tile: int) -> None:
        if not model_tile <= self.tile <= 4096:
            raise InputError(
                f"--tile must be {model_tile} (the model's tile) to 4096 px, got {self.tile}"
            )
        if self.step < 0 or self.block < 0:
            raise InputError("--step and --block must be 0 (auto) or more pixels")
        if not 0 <= self.val_share < 1:
            raise InputError(f"--val-share must be 0 or more and below 1, got {self.val_share}")
        for name, metres in self.widths.items():
            check_class(name, "--width")
            if not (math.isfinite(metres) and metres > 0):
                raise InputError(f"--width {name} must be above 0 metres, got {metres}")


@dataclass(frozen=True)
class Pair:
    """One written pair: its file (relative to OUT), split, window on the render grid
    (column, row, width, height) and bounds in the scene's CRS (left, bottom, right, top)."""

    file: str
    split: str
    window: tuple[int, int, int, int]
    bounds: tuple[float, float, float, float]


@dataclass(frozen=True)
class PairsResult:
    """What :func:`make_pairs` wrote."""

    out_dir: Path
    train: int
    val: int
    dropped: int  # training tiles dropped for touching a val tile
    tile: int
    val_tile: int
    step: int
    gsd: float
    crs: str
    width: int  # render grid, pixels
    height: int
    seconds: float


# ---- the output folder -------------------------------------------------------------------------
def check_out_dir(out_dir: Path, overwrite: bool, inputs: Sequence[str | Path]) -> Path:
    """``out_dir`` absolute, after checking that it may be written: its parent exists; it is a
    new or empty folder, or (with ``overwrite``) an earlier pairs folder; no input lies inside."""
    out = Path(out_dir).expanduser().absolute()
    if out.exists() and not out.is_dir():
        raise OutputError(f"OUT_DIR {out_dir} is a file; give a folder for the pairs")
    if not out.parent.is_dir():
        raise OutputError(f"the folder {out.parent} does not exist; create it first")
    for src in inputs:
        p = Path(src).expanduser().absolute()
        with contextlib.suppress(OSError):
            p = p.resolve()
        if p == out.resolve() or out.resolve() in p.parents:
            raise OutputError(f"OUT_DIR {out_dir} holds the input {src}; choose another folder")
    if out.is_dir():
        entries = sorted(e.name for e in out.iterdir() if e.name != files.MARKER)
        if entries and not overwrite:
            raise OutputExistsError(
                f"OUT_DIR {out_dir} holds other files ({entries[0]}, ...); pass --overwrite to "
                "replace an earlier pairs folder, or choose a new folder"
            )
        foreign = [e for e in entries if e not in PAIRS_ENTRIES]
        if entries and (foreign or not files.made_here(out)):
            what = foreign[0] if foreign else "files geomap-gan did not make"
            raise OutputError(
                f"OUT_DIR {out_dir} holds {what}, which is not an earlier pairs output; "
                "--overwrite replaces only a folder that `geomap-gan pairs` made: choose "
                "another folder"
            )
    return out


@contextlib.contextmanager
def scratch_folder(out: Path, overwrite: bool) -> Iterator[Path]:
    """A hidden folder beside ``out`` to write into, marked as made by geomap-gan
    (:func:`geomap_gan.files.scratch_dir`, so a later run removes it if this one is killed); on
    success it becomes ``out`` (an earlier pairs folder there is replaced only with
    ``overwrite``, an empty folder always), on any exception it is removed."""
    files.remove_stale(out)
    tmp = files.scratch_dir(out, "pairs")
    try:
        yield tmp
        old = None
        if out.exists():
            filled = any(e.name != files.MARKER for e in out.iterdir())
            if filled and not (overwrite and files.made_here(out)):
                raise OutputExistsError(
                    f"OUT_DIR {out} was filled while the pairs were made; it was left as it is"
                )
            old = files.temp_path(out, "old")
            os.rename(out, old)
        os.rename(tmp, out)
        if old is not None and not files.remove_made_dir(old):
            with contextlib.suppress(OSError):
                old.rmdir()  # the empty folder the user gave
    finally:
        if tmp.exists():
            files.remove_made_dir(tmp)


# ---- the command -------------------------------------------------------------------------------
def make_pairs(
    scene_path: str | Path,
    out_dir: str | Path,
    layers: Sequence[LayerSpec | str] = (),
    map_raster: str | Path | None = None,
    coverage: str | None = None,
    options: PairsOptions | None = None,
    model: Any = None,
    progress: Callable[[int, int], None] | None = None,
    cancel: Callable[[], bool] | None = None,
    command: str = "",
) -> PairsResult:
    """Cut training pairs of ``scene_path`` (A) and its map (B: ``layers`` drawn in the legend's
    style, over ``map_raster`` when given, else over the legend's background) into ``out_dir``.

    ``model``: the model whose grid the pairs are cut on (a model file, a MapModel, or None for
    the bundled one). ``progress(done, total)`` counts pairs; ``cancel()`` returning True stops
    with RenderCancelled and nothing written. Raises a GeomapGanError subclass for every input a
    user can fix, before anything is written.
    """
    import rasterio

    from geomap_gan.model.modelfile import load_model
    from geomap_gan.rendering import scene
    from geomap_gan.rendering.engine import plan_scene, region_reader
    from geomap_gan.rendering.options import RenderOptions
    from geomap_gan.rendering.windows import lattice_phase

    start = time.perf_counter()
    options = options or PairsOptions()
    specs = [s if isinstance(s, LayerSpec) else LayerSpec.parse(s) for s in layers]
    out = _check_out(scene_path, out_dir, specs, map_raster, coverage, options.overwrite)
    card = load_model(model).card
    options.validate(card.tile_size)
    stride = 2**card.num_downs
    step = options.step or max(stride, options.tile // 2 // stride * stride)
    val_tile = card.tile_size
    # the renderer's reading of the scene; window options do not apply to pairs
    render_opts = RenderOptions(bands=options.bands, scale=options.scale, overlap=0)

    with rasterio.Env(), contextlib.ExitStack() as stack:
        ds = stack.enter_context(scene.open_raster(scene_path))
        plan = plan_scene(ds, card, render_opts)
        grid, gsd = plan.grid, float(card.gsd)
        widths = {**default_widths(gsd), **dict(options.widths)}
        classes, layer_records, cover_px, cover_record = _read_map_side(
            specs, coverage, grid, gsd, widths
        )
        base: MapRaster | None = None
        if map_raster is not None:
            base = MapRaster(str(map_raster), grid, ds)
            stack.callback(base.close)
        aerial = region_reader(stack, ds, plan, str(scene_path))

        phase = lattice_phase(grid.transform, stride)
        origins = candidate_origins(grid.width, grid.height, options.tile, step, phase)
        eligible = _eligible(origins, options.tile, cover_px, aerial, base)
        _check_eligible(eligible, options.tile, grid, cover_px is not None, base is not None)
        train, val, dropped, val_blocks, block = _split(eligible, options, val_tile, step, phase)
        log.info(
            "%s: render grid %dx%d px at %.4g m/px, %d tiles (%d px, step %d): %d train, %d val "
            "(%d blocks of %d px), %d dropped next to val",
            scene_path, grid.width, grid.height, gsd, len(eligible), options.tile, step,
            len(train), len(val), val_blocks, block, dropped,
        )  # fmt: skip

        jobs = [("train", o, options.tile) for o in train] + [("val", o, val_tile) for o in val]
        with scratch_folder(out, options.overwrite) as tmp:
            written = _write_pairs(tmp, jobs, aerial, base, classes, grid, progress, cancel)
            record = manifest(
                scene_path, ds, plan, card, model, grid, gsd, widths, layer_records, base,
                cover_record, options, step, block, val_tile, val_blocks, dropped, written,
                command,
            )  # fmt: skip
            (tmp / PAIRS_FILE).write_text(json.dumps(record, indent=1) + "\n")
    crs = grid.crs.to_string() if grid.crs else ""
    return PairsResult(out, len(train), len(val), dropped, options.tile, val_tile, step, gsd, crs,
                       grid.width, grid.height, time.perf_counter() - start)  # fmt: skip


def _check_out(
    scene_path: str | Path,
    out_dir: str | Path,
    specs: Sequence[LayerSpec],
    map_raster: str | Path | None,
    coverage: str | None,
    overwrite: bool,
) -> Path:
    """The output folder, checked against every input (scene, layers, map, coverage) before
    anything is read; InputError when no map side is given at all."""
    if not specs and map_raster is None:
        raise InputError("give the map: --layer CLASS=FILE (repeatable) and/or --map MAP.tif")
    inputs: list[str | Path] = [scene_path, *(s.path.partition("|")[0] for s in specs)]
    inputs += [map_raster] if map_raster is not None else []
    inputs += [coverage] if coverage is not None and Path(coverage).exists() else []
    return check_out_dir(Path(out_dir), overwrite, inputs)


def _split(
    eligible: list[tuple[int, int]],
    options: PairsOptions,
    val_tile: int,
    step: int,
    phase: tuple[int, int],
) -> tuple[list[tuple[int, int]], list[tuple[int, int]], int, int, int]:
    """:func:`~geomap_gan.training.split.choose_split` of the eligible tiles; InputError when
    no training tile is left."""
    split = choose_split(eligible, options.tile, val_tile, options.val_share, options.block,
                         step, phase, options.seed)  # fmt: skip
    if not split[0]:
        raise InputError(
            f"all {len(eligible)} tiles went to val or next to it; lower --val-share, "
            "or give a larger coverage"
        )
    return split


def _check_eligible(
    eligible: Sequence[tuple[int, int]], tile: int, grid: Grid, covered: bool, has_map: bool
) -> None:
    """InputError when no tile can be cut: none whole, inside the coverage, with valid pixels."""
    if eligible:
        return
    where = " inside the coverage" if covered else ""
    raise InputError(
        f"no whole {tile} px tile of the scene's {grid.width}x{grid.height} px render grid "
        f"lies{where} where the aerial{' and the map' if has_map else ''} have valid pixels; "
        "give a larger coverage or a smaller --tile"
    )


def _read_map_side(
    specs: Sequence[LayerSpec],
    coverage: str | None,
    grid: Grid,
    gsd: float,
    widths: dict[str, float],
) -> tuple[list[ClassShapes], list[dict[str, Any]], Any, dict[str, Any] | None]:
    """The layers in grid pixels (one entry per class), their records for pairs.json, and the
    coverage in grid pixels with its record (None: the whole scene, with a warning when layers
    are given, since anything they miss teaches the model to leave it out)."""
    classes: list[ClassShapes] = []
    records = []
    for spec in specs:
        shapes, record = read_layer(spec, grid, gsd, widths)
        classes.append(shapes)
        records.append(record)
    if coverage is not None:
        cover_px, cover_record = read_coverage(coverage, grid)
        return merge_classes(classes), records, cover_px, cover_record
    if specs:
        log.warning(
            "no --coverage: the whole scene is taken as mapped by the layers; anything "
            "missing from them teaches the model to leave it out"
        )
    return merge_classes(classes), records, None, None


def _write_pairs(
    tmp: Path,
    jobs: Sequence[tuple[str, tuple[int, int], int]],
    aerial: RegionReader,
    base: MapRaster | None,
    classes: Sequence[ClassShapes],
    grid: Grid,
    progress: Callable[[int, int], None] | None,
    cancel: Callable[[], bool] | None,
) -> list[Pair]:
    """Write each (split, origin, size) job as an A|B pair into ``tmp``; RenderCancelled when
    ``cancel()`` says so (the caller's scratch folder then goes, and nothing was written)."""
    (tmp / "train").mkdir()
    (tmp / "val").mkdir()
    written: list[Pair] = []
    for i, (split, (x, y), size) in enumerate(jobs):
        if cancel is not None and cancel():
            raise RenderCancelled("cancelled; no pairs were written")
        written.append(_write_pair(tmp, split, x, y, size, aerial, base, classes, grid))
        if progress is not None:
            progress(i + 1, len(jobs))
    return written


def _eligible(
    origins: Sequence[tuple[int, int]],
    tile: int,
    cover: Any,
    aerial: RegionReader,
    base: MapRaster | None,
) -> list[tuple[int, int]]:
    """The origins whose tile lies wholly inside ``cover`` (None: anywhere) with every pixel of
    the aerial and the map raster valid."""
    from rasterio.windows import Window

    if cover is not None:
        shapely.prepare(cover)
        boxes = shapely.box(*np.array([(x, y, x + tile, y + tile) for x, y in origins]).T)
        origins = [o for o, ok in zip(origins, shapely.covers(cover, boxes), strict=True) if ok]
    kept = []
    for x, y in origins:
        if not aerial.valid(Window(x, y, tile, tile)).all():
            continue
        if base is not None and not base.valid(x, y, tile):
            continue
        kept.append((x, y))
    return kept


def _write_pair(
    folder: Path,
    split: str,
    x: int,
    y: int,
    size: int,
    aerial: RegionReader,
    base: MapRaster | None,
    classes: Sequence[ClassShapes],
    grid: Grid,
) -> Pair:
    from PIL import Image

    a, _ = aerial.read(x, y, size, size)
    b = draw_tile(classes, x, y, size, size, base.read(x, y, size) if base else None)
    name = f"{split}/x{x:06d}_y{y:06d}.png"
    image = np.concatenate([a.transpose(1, 2, 0), b], axis=1)
    Image.fromarray(image).save(folder / name, format="PNG", compress_level=3)
    return Pair(name, split, (x, y, size, size), window_bounds(grid, x, y, size))


def window_bounds(grid: Grid, x: int, y: int, size: int) -> tuple[float, float, float, float]:
    """(left, bottom, right, top) in the grid's CRS of the ``size`` px window at column ``x``,
    row ``y`` of the (north-up) render grid."""
    t = grid.transform
    xs, ys = (t.c + t.a * x, t.c + t.a * (x + size)), (t.f + t.e * y, t.f + t.e * (y + size))
    return min(xs), min(ys), max(xs), max(ys)


__all__ = [
    "LayerSpec",
    "PairsOptions",
    "PairsResult",
    "make_pairs",
]
