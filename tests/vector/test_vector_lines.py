"""Road and highway centre lines: junctions as shared end points, spur pruning, widths, rings,
and strips that change nothing (down to the skeleton)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import shapely
from rasterio.features import rasterize
from skimage.morphology import skeletonize
from vector_maps import GSD, TRANSFORM, canvas, iou, paint, read_layer, to_pixels, write_map

from geomap_gan.vector import VectorizeOptions, vectorize
from geomap_gan.vector.lines import HALO, edge_distance, skeleton


def grid_map() -> np.ndarray:
    """Roads 6 px wide: a cross, a T branch, a dead end with a short stub; a highway 8 px wide
    across the bottom."""
    img = canvas(140, 120)
    paint(img, "road", slice(30, 36), slice(5, 115))
    paint(img, "road", slice(5, 110), slice(60, 66))
    paint(img, "road", slice(80, 86), slice(60, 110))
    paint(img, "road", slice(50, 53), slice(66, 69))  # a 3 px bump: a skeleton spur at most
    paint(img, "highway", slice(120, 128), slice(0, 120))
    return img


def lines_of(src: Path, out: Path, **kw: object) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    vectorize(src, out, VectorizeOptions(layers="road", **kw))
    return read_layer(out)


def test_junctions_are_shared_end_points(tmp_path, outputs):
    roads, fields = lines_of(write_map(tmp_path / "m.tif", grid_map()), outputs / "r.gpkg")
    assert set(shapely.get_type_id(roads)) == {1}  # LineStrings
    # Cross (4 arms) + T (the vertical road split again, and the branch): 6 lines, the bump's
    # spur pruned.
    assert len(roads) == 6
    ends = np.concatenate([shapely.get_coordinates(shapely.boundary(roads))])
    pts, counts = np.unique(np.round(ends, 6), axis=0, return_counts=True)
    junctions = to_pixels(shapely.points(pts[counts > 1]))
    assert sorted(counts[counts > 1].tolist()) == [3, 4]
    centres = sorted((p.x, p.y) for p in junctions)  # the roads' centres, within a pixel
    assert np.abs(np.array(centres) - [(63, 33), (63, 83)]).max() <= 1
    assert fields["width_m"] == pytest.approx(np.full(6, 6 * GSD), abs=GSD / 2 + 1e-6)
    # The T branch from the junction to its end: about 110 - 63 px, less half the road's width.
    branch = [k for k, r in enumerate(to_pixels(roads)) if np.ptp(r.xy[1]) < 1 and r.length > 30
              and min(r.xy[0]) < 65 and abs(r.xy[1][0] - 83) < 1]  # fmt: skip
    assert len(branch) == 1
    assert fields["length_m"][branch[0]] == pytest.approx((110 - 63 - 3) * GSD, abs=3 * GSD)


def test_min_length_prunes_spurs(tmp_path, outputs):
    img = canvas(60, 60)
    paint(img, "road", slice(27, 33), slice(0, 60))
    paint(img, "road", slice(10, 27), slice(40, 44))  # a 17+ px side street: kept
    paint(img, "road", slice(33, 36), slice(10, 13))  # a 3 px bump: a spur, pruned
    src = write_map(tmp_path / "m.tif", img)
    kept, _ = lines_of(src, outputs / "a.gpkg")
    assert len(kept) == 3  # the street split at the junction, and the side street
    raw, _ = lines_of(src, outputs / "b.gpkg", min_length=0)
    assert len(raw) > len(kept)


def test_a_ring_road_is_one_closed_line(tmp_path, outputs):
    img = paint(canvas(50, 50), "road", slice(5, 45), slice(5, 45))
    paint(img, "park", slice(10, 40), slice(10, 40))  # the ring's inside
    roads, fields = lines_of(write_map(tmp_path / "m.tif", img), outputs / "r.gpkg", strip_rows=7)
    assert len(roads) == 1 and roads[0].is_closed and roads[0].is_ring
    assert fields["length_m"][0] == pytest.approx(4 * 35 * GSD, rel=0.05)


@pytest.mark.parametrize("rows", [1, 7, 30, 33])
def test_strips_give_the_same_lines_as_the_whole_map(tmp_path, outputs, rows):
    # Cuts at every row, and at rows through the junctions (rows 30-35 and 80-85).
    src = write_map(tmp_path / "m.tif", grid_map())
    vectorize(src, outputs / "whole.gpkg", VectorizeOptions(layers="road,highway"))
    vectorize(src, outputs / "s.gpkg", VectorizeOptions(layers="road,highway", strip_rows=rows))
    for layer in ("road", "highway"):
        whole, fw = read_layer(outputs / "whole.gpkg", layer)
        strips, fs = read_layer(outputs / "s.gpkg", layer)
        a, b = np.argsort([g.wkb for g in whole]), np.argsort([g.wkb for g in strips])
        assert len(whole) == len(strips)
        assert all(x.equals_exact(y, 0) for x, y in zip(whole[a], strips[b], strict=True))
        for f in ("length_m", "width_m"):
            assert fw[f][a].tolist() == fs[f][b].tolist()


def test_a_road_crossing_strip_borders_is_one_feature(tmp_path, outputs):
    img = canvas(100, 40)
    paint(img, "highway", slice(2, 98), slice(15, 23))
    vectorize(write_map(tmp_path / "m.tif", img), outputs / "h.gpkg",
              VectorizeOptions(layers="highway", strip_rows=8, simplify=0))  # fmt: skip
    lines, fields = read_layer(outputs / "h.gpkg")
    assert len(lines) == 1
    assert fields["width_m"][0] == pytest.approx(8 * GSD, abs=GSD / 2 + 1e-6)
    assert fields["length_m"][0] == pytest.approx(96 * GSD, abs=8 * GSD)


def test_skeleton_of_strips_agrees_with_the_whole_map():
    img = grid_map()
    mask = (img == (254, 254, 251)).all(-1)
    whole = skeletonize(mask)
    for row0 in range(0, len(mask), 9):
        row1 = min(row0 + 9, len(mask))
        w0, w1 = max(0, row0 - HALO), min(len(mask), row1 + HALO)
        sk, _ = skeleton(mask[w0:w1], (GSD, GSD))
        assert (sk[row0 - w0 : row1 - w0] == whole[row0:row1]).all()


def test_edge_distance_is_the_euclidean_distance_transform():
    from scipy.ndimage import distance_transform_edt

    rng = np.random.default_rng(0)
    mask = rng.random((60, 70)) > 0.2
    mask[10:40, 10:50] = True
    ys, xs = np.nonzero(mask)
    exact = distance_transform_edt(mask, sampling=(2.0, 1.5))[ys, xs]
    assert edge_distance(mask, ys, xs, (1.5, 2.0)) == pytest.approx(exact)


def test_roads_round_trip(tmp_path, outputs):
    img = grid_map()
    roads, fields = lines_of(write_map(tmp_path / "m.tif", img), outputs / "r.gpkg")
    back = rasterize(shapely.buffer(roads, fields["width_m"] / 2), out_shape=img.shape[:2],
                     transform=TRANSFORM).astype(bool)  # fmt: skip
    # 6 px roads have no centre pixel: their centre line runs half a pixel off, so the buffer
    # covers 5 of 6 pixels across (IoU 0.83); the floor for real maps is 0.7.
    assert iou(back, (img == (254, 254, 251)).all(-1)) >= 0.8
