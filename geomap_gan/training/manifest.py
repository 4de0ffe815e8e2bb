"""``pairs.json``: where every training pair came from (scene, layers, map raster, coverage, CRS,
GSD, style, each pair's window and bounds), so a pair is traceable to its place; and reading it
back (finetune records the pairs' sources and region in its model card)."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from geomap_gan import __version__
from geomap_gan.errors import InputError
from geomap_gan.legend import BACKGROUND, COLOURS, DRAW_ORDER, LINE_CLASSES

if TYPE_CHECKING:
    from geomap_gan.model.modelfile import ModelCard
    from geomap_gan.rendering.grid import Grid
    from geomap_gan.training.layers import MapRaster
    from geomap_gan.training.pairs import Pair, PairsOptions

FORMAT = "geomap-gan-pairs/1"
PAIRS_FILE = "pairs.json"


def manifest(
    scene_path: str | Path,
    ds: Any,
    plan: Any,
    card: ModelCard,
    model: Any,
    grid: Grid,
    gsd: float,
    widths: Mapping[str, float],
    layers: list[dict[str, Any]],
    base: MapRaster | None,
    coverage: dict[str, Any] | None,
    options: PairsOptions,
    step: int,
    block: int,
    val_tile: int,
    val_blocks: int,
    dropped: int,
    pairs: list[Pair],
    command: str,
) -> dict[str, Any]:
    """pairs.json: enough to trace every pair to its place and to redo the pairs."""
    from geomap_gan.model.modelfile import default_model_path

    assert grid.crs is not None
    model_path = default_model_path() if model is None else getattr(model, "path", model)
    return {
        "format": FORMAT,
        "created": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "geomap_gan": __version__,
        "command": command,
        "scene": _scene_record(scene_path, ds, plan),
        "layers": layers,
        "map": base.record if base is not None else None,
        "coverage": coverage,
        "model": {
            "name": card.name,
            "path": str(model_path) if isinstance(model_path, (str, Path)) else None,
            "gsd": card.gsd,
            "tile_size": card.tile_size,
            "num_downs": card.num_downs,
        },
        "crs": grid.crs.to_string(),
        "crs_wkt": grid.crs.to_wkt(),
        "gsd": gsd,
        "grid": {
            "width": grid.width,
            "height": grid.height,
            "transform": list(tuple(grid.transform)[:6]),
        },
        "style": _style_record(widths, gsd, base is not None),
        "tiles": {"train": options.tile, "val": val_tile, "step": step},
        "split": {
            "val_share": options.val_share,
            "block": block,
            "seed": options.seed,
            "val_blocks": val_blocks,
            "train": sum(p.split == "train" for p in pairs),
            "val": sum(p.split == "val" for p in pairs),
            "dropped_touching_val": dropped,
        },
        "pairs": [dataclasses.asdict(p) for p in pairs],
    }


def _scene_record(scene_path: str | Path, ds: Any, plan: Any) -> dict[str, Any]:
    """The scene as the pairs read it: its file, size, CRS, bands and 8-bit stretch."""
    stretch = None
    if plan.stretch is not None:
        stretch = {"low": list(plan.stretch.low), "high": list(plan.stretch.high)}
    return {
        "path": os.path.abspath(Path(scene_path).expanduser()),
        "size": [ds.width, ds.height],
        "crs": ds.crs.to_string(),
        "bands": list(plan.bands),
        "stretch": stretch,
        "scene_gsd": plan.scene_gsd,
    }


def _style_record(widths: Mapping[str, float], gsd: float, has_map: bool) -> dict[str, Any]:
    """How the map side is drawn: the legend's colours and order, the strokes' widths."""
    return {
        "background": list(BACKGROUND),
        "colours": {c: list(COLOURS[c]) for c in DRAW_ORDER},
        "draw_order": list(DRAW_ORDER),
        "stroke_width_m": {c: widths[c] for c in LINE_CLASSES if c in widths},
        "stroke_width_px": {c: round(widths[c] / gsd, 3) for c in LINE_CLASSES if c in widths},
        "map_raster_below_layers": has_map,
    }


def read_manifest(pairs_dir: str | Path) -> dict[str, Any] | None:
    """``pairs_dir/pairs.json`` as a dict, None when absent (a hand-made pair folder)."""
    path = Path(pairs_dir) / PAIRS_FILE
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise InputError(f"{path} is not readable JSON ({exc}); make the pairs again") from exc
    return data if isinstance(data, dict) and data.get("format") == FORMAT else None
