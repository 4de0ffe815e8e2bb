"""Does the map depend on the content alone? For every real scene in ../shared/data/geotiff, the
difference between a render of the scene and a render of

  (a) "cut k":   the same scene with its first k rows and columns cut off (georeferencing kept),
  (b) "moved k": the same pixels with the georeferencing moved by k pixels east and south,

compared pixel for pixel on the input grid (``--output-res native``, so both maps are aligned
with the content exactly) at least ``--edge`` model-grid pixels away from the scene edges and
the cut. Printed per scene and k: mean |difference| in grey levels, its 99th percentile, and the
share of pixels differing by more than 8 levels. Scenes far coarser than the model's GSD (which
render refuses) are rendered at their own GSD (``--gsd``, as the error message advises).

Scenes that are not 8-bit get render's default 2-98 percentile stretch from their own pixels, so a
cut scene is also stretched a little differently: that is the scene's radiometry, not the window
grid. ``--fixed-stretch`` separates the two: every render of such a scene then gets the uncut
scene's stretch as ``--scale`` (one range for the three bands), so only the grid and the
network's stride phase can differ. The last lines give the worst figures per case.

    python benchmarks/render_consistency.py [--model FILE] [--k 1 7 32 61 112] [--fixed-stretch]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np
import rasterio
from affine import Affine

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine import describe  # noqa: E402

from geomap_gan.model.modelfile import load_model  # noqa: E402
from geomap_gan.rendering.engine import RenderOptions, render  # noqa: E402
from geomap_gan.rendering.grid import ground_scale  # noqa: E402
from geomap_gan.rendering.reader import sample_pixels  # noqa: E402
from geomap_gan.rendering.scene import select_bands  # noqa: E402

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "geotiff"
MAX_UPSCALE = 16.0  # render's own limit (RenderOptions.max_upscale)


def write_variant(src: Path, dst: Path, cut: int, move: int) -> Path:
    """``src`` cut by ``cut`` px at the top-left (georeferencing kept) and/or with its
    georeferencing moved by ``move`` px east and south (pixels unchanged)."""
    with rasterio.open(src) as ds:
        profile = ds.profile
        data = ds.read()[:, cut:, cut:]
        t = ds.transform
        mask = ds.read_masks()[:, cut:, cut:] if ds.nodata is None else None
        colorinterp = ds.colorinterp
    shift_x, shift_y = (cut + move) * t.a, (cut + move) * t.e
    profile.update(
        width=data.shape[2],
        height=data.shape[1],
        transform=Affine(t.a, t.b, t.c + shift_x, t.d, t.e, t.f + shift_y),
    )
    profile.pop("blockxsize", None), profile.pop("blockysize", None), profile.pop("tiled", None)
    with rasterio.open(dst, "w", **profile) as out:
        out.write(data)
        out.colorinterp = colorinterp
        if mask is not None and (mask == 0).any():
            out.write_mask(mask.min(axis=0))
    return dst


def scene_gsd_option(src: Path, model_gsd: float) -> float | None:
    """--gsd for scenes render would refuse (coarser than MAX_UPSCALE x the model GSD)."""
    with rasterio.open(src) as ds:
        kx, ky = ground_scale(ds.crs, ds.transform, ds.width, ds.height)
        gsd = (abs(ds.transform.a) * kx + abs(ds.transform.e) * ky) / 2
    return gsd if gsd / model_gsd > MAX_UPSCALE else None


def scene_scale(src: Path) -> tuple[float, float] | None:
    """For a scene that is not 8-bit: one (2nd, 98th percentile) range over its three bands, from
    the sample render's own stretch reads; None for 8-bit scenes (render does not stretch them)."""
    with rasterio.open(src) as ds:
        if ds.dtypes[0] == "uint8":
            return None
        values = sample_pixels(ds, select_bands(ds, None))
    low, high = np.percentile(values, [2.0, 98.0])
    return float(low), float(high)


def render_native(
    src: Path, dst: Path, model, gsd: float | None, scale: tuple[float, float] | None = None
) -> np.ndarray:
    options = RenderOptions(output_res="native", gsd=gsd, overwrite=True, scale=scale)
    render(src, dst, model, options)
    with rasterio.open(dst) as ds:
        return ds.read([1, 2, 3]).astype(np.int16)


def compare(a: np.ndarray, b: np.ndarray) -> tuple[float, float, float]:
    """(mean |diff|, p99 |diff|, share of pixels with any channel > 8 levels apart)."""
    d = np.abs(a - b)
    return float(d.mean()), float(np.percentile(d, 99)), float((d.max(axis=0) > 8).mean())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--model", default=None, help="model file (default: the bundled model)")
    ap.add_argument("--k", type=int, nargs="+", default=[1, 7, 32, 61, 112])
    ap.add_argument("--edge", type=int, default=160, help="model-grid px kept clear of edges")
    ap.add_argument("--scenes", nargs="*", default=None, help="file names in shared/data/geotiff")
    ap.add_argument("--fixed-stretch", action="store_true",
                    help="stretch every render of a non-8-bit scene as its uncut self")  # fmt: skip
    args = ap.parse_args()
    print(describe())
    model = load_model(args.model)
    card = model.card
    print(f"model: {card.name}, num_downs {card.num_downs}, receptive field +-"
          f"{card.receptive_field or 'whole window'} px, GSD {card.gsd} m/px")  # fmt: skip
    scenes = args.scenes or sorted(p.name for p in DATA.glob("*.tif"))
    worst = {"cut": (0.0, 0.0), "moved": (0.0, 0.0)}
    print(f"{'scene':32s} {'case':10s} {'mean':>6s} {'p99':>6s} {'>8':>7s}")
    with tempfile.TemporaryDirectory() as tmp:
        tmpdir = Path(tmp)
        for name in scenes:
            src = DATA / name
            gsd = scene_gsd_option(src, card.gsd)
            with rasterio.open(src) as ds:
                scene_res = abs(ds.transform.a)
                kx, _ = ground_scale(ds.crs, ds.transform, ds.width, ds.height)
            ratio = (gsd or card.gsd) / (scene_res * kx)  # native px per model-grid px
            edge = max(4, int(np.ceil(args.edge * ratio)))
            scale = scene_scale(src) if args.fixed_stretch else None
            base = render_native(src, tmpdir / "base.tif", model, gsd, scale)
            for k in args.k:
                for case, cut, move in (("cut", k, 0), ("moved", 0, k)):
                    variant = write_variant(src, tmpdir / f"{case}{k}.tif", cut, move)
                    other = render_native(variant, tmpdir / f"{case}{k}_map.tif", model, gsd, scale)
                    a = base[:, cut + edge : -edge, cut + edge : -edge]
                    b = other[:, edge:-edge, edge:-edge]
                    if a.size == 0 or a.shape != b.shape:
                        print(f"{name:32s} {case} {k:<4d} (scene too small for edge {edge})")
                        continue
                    mean, p99, over = compare(a, b)
                    worst[case] = (max(worst[case][0], mean), max(worst[case][1], over))
                    print(f"{name:32s} {case + ' ' + str(k):10s} {mean:6.2f} {p99:6.1f} "
                          f"{100 * over:6.2f}%")  # fmt: skip
    for case, (mean, over) in worst.items():
        print(f"worst '{case}' over all scenes and k: mean |diff| {mean:.2f}, "
              f"{100 * over:.2f}% of pixels over 8")  # fmt: skip
    print(f"worst over all scenes and cases: mean |diff| {max(m for m, _ in worst.values()):.2f}, "
          f"{100 * max(o for _, o in worst.values()):.2f}% of pixels over 8")  # fmt: skip


if __name__ == "__main__":
    main()
