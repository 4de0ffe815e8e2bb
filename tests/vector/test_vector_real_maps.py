"""Real maps: the right halves of maps256/val pairs (maps in the legend's colours, JPEG-noisy),
given a UTM CRS and 1.9 m pixels. Their layers, rasterized back, reproduce the class masks
(polygons IoU >= 0.98 after the min-area clean-up, roads buffered by half their width >= 0.7),
and strips change nothing. Skips without ../shared/data (fails under CI=true)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import shapely
from PIL import Image
from rasterio.features import rasterize
from skimage.morphology import skeletonize
from vector_maps import GSD, TRANSFORM, read_layer, write_map

from geomap_gan.legend import class_masks
from geomap_gan.vector import VectorizeOptions, vectorize
from geomap_gan.vector.lines import HALO, skeleton
from geomap_gan.vector.masks import exclusive

TILES = 24


def val_maps(maps256: Path, count: int = TILES) -> list[np.ndarray]:
    """The map halves of the first ``count`` val pairs (numeric order), (256, 256, 3) uint8."""
    files = sorted((maps256 / "val").glob("*.jpg"), key=lambda p: int(p.stem))[:count]
    return [np.asarray(Image.open(f).convert("RGB"))[:, 256:] for f in files]


def rasterized(geoms: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    if not len(geoms):
        return np.zeros(shape, dtype=bool)
    return rasterize(geoms, out_shape=shape, transform=TRANSFORM).astype(bool)


def test_layers_round_trip_to_the_class_masks(maps256, tmp_path):
    inter: dict[str, int] = dict.fromkeys(("water", "park", "road", "highway"), 0)
    union = dict(inter)
    for k, img in enumerate(val_maps(maps256)):
        src = write_map(tmp_path / f"{k}.tif", img)
        vectorize(src, tmp_path / f"{k}.gpkg")
        masks = exclusive(class_masks(img), np.ones(img.shape[:2], dtype=bool))
        for name in inter:
            geoms, fields = read_layer(tmp_path / f"{k}.gpkg", name)
            assert shapely.is_valid(geoms).all()
            if name in ("road", "highway"):
                geoms = shapely.buffer(geoms, fields["width_m"] / 2)
            back = rasterized(geoms, img.shape[:2])
            inter[name] += int((back & masks[name]).sum())
            union[name] += int((back | masks[name]).sum())
    iou = {name: inter[name] / union[name] for name in inter}
    assert iou["water"] >= 0.98 and iou["park"] >= 0.98, iou
    assert iou["road"] >= 0.7 and iou["highway"] >= 0.7, iou


def test_strips_change_nothing_on_real_maps(maps256, tmp_path):
    for k, img in enumerate(val_maps(maps256, 4)):
        src = write_map(tmp_path / f"{k}.tif", img)
        vectorize(src, tmp_path / f"{k}w.gpkg")
        vectorize(src, tmp_path / f"{k}s.gpkg", VectorizeOptions(strip_rows=11))
        for name in ("water", "park", "road", "highway"):
            whole, fw = read_layer(tmp_path / f"{k}w.gpkg", name)
            strips, fs = read_layer(tmp_path / f"{k}s.gpkg", name)
            a, b = np.argsort([g.wkb for g in whole]), np.argsort([g.wkb for g in strips])
            assert len(whole) == len(strips), (k, name)
            assert all(x.equals_exact(y, 0) for x, y in zip(whole[a], strips[b], strict=True))
            for field in fw:
                assert fw[field][a].tolist() == fs[field][b].tolist()


def test_skeleton_of_strips_agrees_with_the_whole_real_map(maps256):
    for img in val_maps(maps256, 8):
        masks = exclusive(class_masks(img), np.ones(img.shape[:2], dtype=bool))
        for name in ("road", "highway"):
            whole = skeletonize(masks[name])
            for row0 in range(0, 256, 16):
                w0, w1 = max(0, row0 - HALO), min(256, row0 + 16 + HALO)
                sk, _ = skeleton(masks[name][w0:w1], (GSD, GSD))
                assert (sk[row0 - w0 : row0 - w0 + 16] == whole[row0 : row0 + 16]).all()
