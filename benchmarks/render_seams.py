"""Seams: mean absolute step between neighbouring output pixels across window borders, against
steps inside windows, for a real model on the real rasters of ../shared/data/geotiff, with plain
tiling (overlap 0) and with the engine's blending (default overlap 32).

A pix2pix U-Net leaves a periodic texture with the period of its stride-2 layers (8 px for the
outer three), and window borders always fall on the same phase of it; so besides the raw ratio
(border steps / all inside steps) the script prints a phase-matched ratio (border steps / inside
steps at the same position mod 8). 1.0 or less: no seam.

    python benchmarks/render_seams.py [--model runs/x/model.safetensors]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import rasterio

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine import describe  # noqa: E402

from geomap_gan.model.modelfile import load_model  # noqa: E402
from geomap_gan.rendering.blend import seam_ratios  # noqa: E402
from geomap_gan.rendering.engine import RenderOptions, plan_render, render  # noqa: E402
from geomap_gan.rendering.windows import axis_offsets  # noqa: E402

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "geotiff"
SCENES = ("rgb_small_4p5m.tif", "naip_nd_2015.tif")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--model", default=None, help="model file (default: the bundled model)")
    ap.add_argument("--gsd", type=float, default=None, help="override the model's GSD")
    args = ap.parse_args()
    print(describe())
    model = load_model(args.model)
    print(f"model: {model.card.name}, ngf={model.card.ngf}, GSD {model.card.gsd:.3f} m")
    with tempfile.TemporaryDirectory() as tmp:
        for name in SCENES:
            for overlap in (0, 32):
                options = RenderOptions(overlap=overlap, gsd=args.gsd, overwrite=True)
                out = Path(tmp) / f"{overlap}_{name}"
                render(DATA / name, out, model, options)
                plan = plan_render(DATA / name, model, options)
                with rasterio.open(out) as o:
                    image = o.read([1, 2, 3])
                cols = axis_offsets(plan.width, plan.tile, overlap)
                x = seam_ratios(image, cols, plan.tile, 2)
                y = seam_ratios(image, list(plan.window_rows), plan.tile, 1)
                print(f"{name} {plan.width}x{plan.height} px, overlap {overlap:2d}: "
                      f"columns raw {x[0]:.2f} phase-matched {x[1]:.2f}; "
                      f"rows raw {y[0]:.2f} phase-matched {y[1]:.2f}")  # fmt: skip


if __name__ == "__main__":
    main()
