"""Robustness to scene-wide sensor shifts, through the render path, and real water on NAIP.

1. A mosaic of ``--tiles`` maps val aerials (10 x 10 of 256 px by default, evenly spaced over
   the split) is rendered with ``render`` as one scene, clean and under each fixed shift of
   ``geomap_gan.training.augment.SHIFTS`` (haze, colour casts, exposure, contrast, saturation, optics,
   JPEG, noise: seeded, applied to the whole mosaic), with harmonisation off and on. Printed:
   miou and per-class IoU against the real map mosaic, per shift, and the mean over shifts.
2. For every 4-band NAIP scene in ../shared/data/geotiff (R, G, B, NIR), water told by the
   near-infrared band, independently of the model: NDWI = (G - NIR) / (G + NIR) above its Otsu
   threshold, against the rendered map's water (legend.class_masks). Printed: IoU, precision,
   recall.

    python benchmarks/robustness.py [--model FILE] [--tiles 100]
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
import warnings
from pathlib import Path

import numpy as np
import rasterio
import torch
from rasterio.errors import NotGeoreferencedWarning

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine import describe  # noqa: E402

from geomap_gan.legend import CLASSES, class_masks  # noqa: E402
from geomap_gan.model.modelfile import load_model  # noqa: E402
from geomap_gan.rendering.engine import RenderOptions, render  # noqa: E402
from geomap_gan.training.augment import SHIFTS  # noqa: E402
from geomap_gan.training.data import load_split  # noqa: E402

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def mosaic(pairs: np.ndarray, side: int) -> tuple[np.ndarray, np.ndarray]:
    """(3, H, W) aerial and map mosaics of ``side`` x ``side`` pairs."""
    n, _, t, _, _ = pairs.shape
    a = pairs[: side * side, 0].reshape(side, side, t, t, 3).transpose(4, 0, 2, 1, 3)
    b = pairs[: side * side, 1].reshape(side, side, t, t, 3).transpose(4, 0, 2, 1, 3)
    return a.reshape(3, side * t, side * t), b.reshape(3, side * t, side * t)


def shifted(aerial: np.ndarray, shift) -> np.ndarray:
    x = torch.from_numpy(aerial).float() / 255
    y = shift.apply(x) if shift is not None else x
    return (y.clamp(0, 1) * 255).round().to(torch.uint8).numpy()


def render_array(data: np.ndarray, model, tmp: Path, harmonize: bool) -> np.ndarray:
    src, dst = tmp / "mosaic.tif", tmp / "mosaic_map.tif"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        profile = dict(driver="GTiff", width=data.shape[2], height=data.shape[1], count=3,
                       dtype="uint8", tiled=True)  # fmt: skip
        with rasterio.open(src, "w", **profile) as ds:
            ds.write(data)
    options = RenderOptions(allow_ungeoreferenced=True, overwrite=True, harmonize=harmonize)
    render(src, dst, model, options)
    with rasterio.open(dst) as ds:
        return ds.read([1, 2, 3])


def ious(fake: np.ndarray, real: np.ndarray) -> dict[str, float]:
    fm = class_masks(fake.transpose(1, 2, 0))
    rm = class_masks(real.transpose(1, 2, 0))
    out = {c: float((fm[c] & rm[c]).sum() / max(1, (fm[c] | rm[c]).sum())) for c in CLASSES}
    out["miou"] = float(np.mean([out[c] for c in CLASSES]))
    return out


def otsu(values: np.ndarray) -> float:
    """Otsu's threshold of 1-D values (256 bins between their min and max)."""
    hist, edges = np.histogram(values, 256)
    centres = (edges[:-1] + edges[1:]) / 2
    w0 = np.cumsum(hist)
    w1 = w0[-1] - w0
    m0 = np.cumsum(hist * centres) / np.maximum(w0, 1)
    m1 = (np.sum(hist * centres) - np.cumsum(hist * centres)) / np.maximum(w1, 1)
    return float(centres[np.argmax(w0 * w1 * (m0 - m1) ** 2)])


def ndwi_check(model, tmp: Path, harmonize: bool) -> None:
    for src in sorted((DATA / "geotiff").glob("naip*.tif")):
        with rasterio.open(src) as ds:
            if ds.count < 4:
                continue
            g, nir = ds.read(2).astype(float), ds.read(4).astype(float)
            valid = ds.dataset_mask() > 0
        ndwi = (g - nir) / np.maximum(g + nir, 1)
        truth = ndwi > otsu(ndwi[valid])
        dst = tmp / "naip_map.tif"
        options = RenderOptions(output_res="native", overwrite=True, harmonize=harmonize)
        render(src, dst, model, options)
        with rasterio.open(dst) as ds:
            water = class_masks(ds.read([1, 2, 3]).transpose(1, 2, 0))["water"]
        t, w = truth & valid, water & valid
        inter = (t & w).sum()
        print(f"NDWI water {src.name} (harmonize {'on' if harmonize else 'off'}): "
              f"IoU {inter / max(1, (t | w).sum()):.3f}, precision {inter / max(1, w.sum()):.3f}, "
              f"recall {inter / max(1, t.sum()):.3f} ({t.mean():.1%} of pixels are water)")  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--model", default=None, help="model file (default: the bundled model)")
    ap.add_argument("--tiles", type=int, default=100, help="val pairs in the mosaic (a square)")
    args = ap.parse_args()
    print(describe())
    model = load_model(args.model)
    print(f"model: {model.card.name}")
    side = int(math.isqrt(args.tiles))
    pairs, _ = load_split(DATA / "maps256", "val", 256)
    pick = np.linspace(0, len(pairs) - 1, side * side).round().astype(int)
    aerial, real = mosaic(pairs[pick], side)
    print(f"mosaic: {side}x{side} val pairs, {aerial.shape[2]}x{aerial.shape[1]} px")
    with tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        for harmonize in (False, True):
            print(f"harmonize {'on' if harmonize else 'off'}:")
            print(f"  {'shift':14s} {'miou':>6s} " + " ".join(f"{c:>8s}" for c in CLASSES))
            scores = {}
            for shift in (None, *SHIFTS):
                name = "clean" if shift is None else shift.name
                fake = render_array(shifted(aerial, shift), model, tmp, harmonize)
                scores[name] = ious(fake, real)
                s = scores[name]
                print(f"  {name:14s} {s['miou']:6.3f} " + " ".join(f"{s[c]:8.3f}" for c in CLASSES))
            mean = float(np.mean([v["miou"] for k, v in scores.items() if k != "clean"]))
            clean = scores["clean"]["miou"]
            print(f"  mean over shifts: miou {mean:.3f} = {mean / max(clean, 1e-9):.2f} x clean")
            ndwi_check(model, tmp, harmonize)


if __name__ == "__main__":
    main()
