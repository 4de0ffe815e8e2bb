"""Teach the model a region: the NAIP 2015 North Dakota scene, a water layer made from its own
near-infrared band, pairs over the west 60%, a fine-tune, and water IoU on the east 40%.

1. Water "layer", the way a user's hydrography layer would arrive: NDWI = (G - NIR) / (G + NIR)
   of the scene's own bands above its Otsu threshold (skimage.filters.threshold_otsu over the
   valid pixels), polygonised (rasterio.features.shapes) into a GeoPackage; the coverage is the
   west 60% of the scene (a polygon in the scene's CRS).
2. ``geomap-gan pairs SCENE PAIRS --layer water=water.gpkg --coverage west60.gpkg``.
3. ``geomap-gan finetune PAIRS --out RUN`` (the recipe's defaults unless given below).
4. Both the bundled and the fine-tuned model render the whole scene (``--output-res native``:
   the map on the scene's own 5 m grid, where the NDWI truth lives); water IoU, precision and
   recall of the map's water (legend.class_masks) against the NDWI truth on the east 40%, never
   in a pair, and on the west 60% for reference.

Prints the machine, the settings, the times (wall and this process's CPU seconds: the cores may be
shared) and the figures. Floors (issue 37): east-40% IoU at least 0.10 above the bundled
model's, the pairs and fine-tune within 20 minutes on a 2-core CPU.

    python benchmarks/finetune_naip.py [--out DIR] [--freeze encoder] [--epochs N --epochs-decay N]
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import rasterio

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine import describe  # noqa: E402

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
SCENE = DATA / "geotiff" / "naip_nd_2015.tif"
WEST = 0.6  # share of the scene's columns the layers cover


def ndwi_truth(scene: Path) -> tuple[np.ndarray, np.ndarray, float]:
    """(water, valid, threshold): NDWI of the scene's green and NIR bands above Otsu's threshold."""
    from skimage.filters import threshold_otsu

    with rasterio.open(scene) as ds:
        g, nir = ds.read(2).astype(np.float64), ds.read(4).astype(np.float64)
        valid = ds.dataset_mask() > 0
    ndwi = (g - nir) / np.maximum(g + nir, 1e-6)
    threshold = float(threshold_otsu(ndwi[valid]))
    return (ndwi > threshold) & valid, valid, threshold


def write_layers(scene: Path, folder: Path, west: float = WEST) -> tuple[Path, Path, float]:
    """water.gpkg (the NDWI water polygonised) and coverage.gpkg (the west share of the scene,
    a rectangle in the scene's CRS); returns both paths and the Otsu threshold."""
    import pyogrio.raw
    import shapely
    from rasterio.features import shapes

    water, _, threshold = ndwi_truth(scene)
    with rasterio.open(scene) as ds:
        t, crs, w, h = ds.transform, ds.crs.to_wkt(), ds.width, ds.height
    polys = [shapely.geometry.shape(g) for g, _ in shapes(water.view(np.uint8), mask=water,
                                                           transform=t)]  # fmt: skip
    cut = round(w * west)
    cover = shapely.box(t.c, t.f + h * t.e, t.c + cut * t.a, t.f)
    out = []
    for name, geoms in (("water", polys), ("coverage", [cover])):
        path = folder / f"{name}.gpkg"
        wkb = shapely.to_wkb(np.array(geoms, dtype=object))
        pyogrio.raw.write(str(path), wkb, [], [], driver="GPKG", geometry_type="Polygon", crs=crs)
        out.append(path)
    return out[0], out[1], threshold


def water_scores(model: Path | None, scene: Path, folder: Path, west: float = WEST
                 ) -> dict[str, dict[str, float]]:  # fmt: skip
    """Water IoU, precision and recall of ``model``'s map of ``scene`` against the NDWI truth,
    on the east and the west part (scene columns from / before ``west`` of the width)."""
    from geomap_gan.legend import class_masks
    from geomap_gan.rendering.engine import RenderOptions, render

    truth, valid, _ = ndwi_truth(scene)
    dst = folder / f"map_{'bundled' if model is None else model.parent.name}.tif"
    render(scene, dst, model, RenderOptions(output_res="native", overwrite=True))
    with rasterio.open(dst) as ds:
        drawn = class_masks(ds.read([1, 2, 3]).transpose(1, 2, 0))["water"]
    cut = round(truth.shape[1] * west)
    out = {}
    for part, cols in (("east", slice(cut, None)), ("west", slice(0, cut))):
        t, d = truth[:, cols] & valid[:, cols], drawn[:, cols] & valid[:, cols]
        inter = float((t & d).sum())
        out[part] = {
            "iou": inter / max(1.0, float((t | d).sum())),
            "precision": inter / max(1.0, float(d.sum())),
            "recall": inter / max(1.0, float(t.sum())),
            "water_share": float(t.mean()),
        }
    return out


def cpu_seconds() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=None, help="Keep the files here.")
    parser.add_argument("--scene", type=Path, default=SCENE)
    parser.add_argument("--freeze", choices=["none", "encoder"], default=None)
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument("--epochs-decay", type=int, default=None)
    parser.add_argument("--lr", type=float, default=None)
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--step", type=int, default=0, help="pairs --step (0: its default).")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--skip-bundled", action="store_true")
    args = parser.parse_args()

    import torch

    from geomap_gan.device import configure_process
    from geomap_gan.training.finetune import FinetuneOptions, finetune
    from geomap_gan.training.pairs import PairsOptions, make_pairs
    from geomap_gan.training.process import place_process

    configure_process(torch.device("cpu"), 0)
    print(describe())
    with tempfile.TemporaryDirectory() as scratch:
        folder = args.out or Path(scratch)
        folder.mkdir(parents=True, exist_ok=True)
        water, cover, threshold = write_layers(args.scene, folder)
        print(f"scene {args.scene.name}; NDWI Otsu threshold {threshold:.4f}; coverage west "
              f"{WEST:.0%}")  # fmt: skip

        t0, c0 = time.perf_counter(), cpu_seconds()
        pairs = make_pairs(
            args.scene, folder / "pairs", [f"water={water}"], None, str(cover),
            PairsOptions(step=args.step, overwrite=True, seed=args.seed),
        )  # fmt: skip
        t1, c1 = time.perf_counter(), cpu_seconds()
        print(f"pairs: {pairs.train} train, {pairs.val} val, {pairs.dropped} dropped next to val; "
              f"{pairs.tile} px, step {pairs.step}; {t1 - t0:.1f} s wall, {c1 - c0:.1f} s CPU")  # fmt: skip

        options = FinetuneOptions(
            epochs=args.epochs, epochs_decay=args.epochs_decay, lr=args.lr,
            batch_size=args.batch_size, freeze=args.freeze, seed=args.seed, overwrite=True,
        )  # fmt: skip
        result = finetune(folder / "pairs", folder / "run", None, options, place=place_process)
        t2, c2 = time.perf_counter(), cpu_seconds()
        record = json.loads((folder / "run" / "finetune.json").read_text())
        print(f"finetune: {result.updates} updates, {result.epochs} epochs, recipe "
              f"{record['recipe']}; {t2 - t1:.1f} s wall, {c2 - c1:.1f} s CPU "
              f"({(c2 - c1) / max(result.updates, 1):.2f} CPU s an update)")  # fmt: skip
        print(f"pairs + finetune: {(t2 - t0) / 60:.1f} min wall, {(c2 - c0) / 60:.1f} min CPU "
              f"(floor: 20 min on a 2-core CPU)")  # fmt: skip
        val = {k: round(v, 3) for k, v in result.metrics.items() if k.startswith("iou") or k == "n"}
        print(f"val split (the trainer's, legend class IoU): {val}")

        scores = {}
        if not args.skip_bundled:
            scores["bundled"] = water_scores(None, args.scene, folder)
        scores["fine-tuned"] = water_scores(result.model, args.scene, folder)
        for name, s in scores.items():
            for part in ("east", "west"):
                v = s[part]
                print(f"{name:>10} {part}: water IoU {v['iou']:.3f}, precision "
                      f"{v['precision']:.3f}, recall {v['recall']:.3f} "
                      f"(NDWI water {v['water_share']:.1%} of pixels)")  # fmt: skip
        if "bundled" in scores:
            gain = scores["fine-tuned"]["east"]["iou"] - scores["bundled"]["east"]["iou"]
            print(f"east 40% water IoU gain: {gain:+.3f} (floor +0.10)")


if __name__ == "__main__":
    main()
