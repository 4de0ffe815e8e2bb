"""The map depends on the content alone: bounded-receptive-field generators through render().

A random-weight (not identity) 5-level U-Net whose card states its receptive field is rendered
with different window sizes and with the scene cut at different places; away from nothing at all
(the reflection at the scene edges is the scene's, not the window's) the fp32 outputs agree bit
for bit.
"""

from __future__ import annotations

import numpy as np
import pytest
import rasterio
import torch
from affine import Affine
from geotiffs import ORIGIN, UTM31, write_geotiff

from geomap_gan.model.modelfile import MapModel, ModelCard
from geomap_gan.model.nets import (
    UnetGenerator,
    generator_receptive_field,
    init_weights,
    receptive_radius,
)
from geomap_gan.rendering.engine import RenderOptions, plan_render, render, tile_grid
from geomap_gan.rendering.windows import TileGrid, core_offsets, fitting_window, lattice_phase

RES = 2.0


def bounded_model(antialias: bool = True, seed: int = 0) -> MapModel:
    """ngf=4, 5 levels (stride 32), random weights, BatchNorm with non-trivial statistics."""
    torch.manual_seed(seed)
    g = init_weights(UnetGenerator(ngf=4, num_downs=5, antialias=antialias), gain=0.1)
    for m in g.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 2.0)
    card = ModelCard(name="bounded", ngf=4, num_downs=5, antialias=antialias, tile_size=64,
                     gsd=RES, receptive_field=receptive_radius(5, antialias))  # fmt: skip
    return MapModel(g.eval(), card)


def smooth_scene(height: int, width: int, seed: int = 0) -> np.ndarray:
    """Random imagery with structure at several scales (uint8, 3 bands)."""
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 256, (3, height // 8 + 2, width // 8 + 2)).astype(np.float32)
    up = np.kron(coarse, np.ones((8, 8), np.float32))[:, :height, :width]
    fine = rng.normal(0, 25, (3, height, width))
    return np.clip(up + fine, 0, 255).astype(np.uint8)


def render_array(tmp_path, name, data, model, transform=None, **kw) -> np.ndarray:
    src = write_geotiff(tmp_path / f"{name}.tif", data, RES, transform=transform)
    options = RenderOptions(device="cpu", amp=False, batch_size=2, **kw)
    render(src, tmp_path / f"{name}_map.tif", model, options)
    with rasterio.open(tmp_path / f"{name}_map.tif") as ds:
        return ds.read()


def test_receptive_field_is_measured_exactly_from_the_architecture():
    # A hand count for the plain 5-level U-Net: the encoder's 4x4 stride-2 convolutions reach
    # 1 + 3 * (2^5 - 1) = 94 px; each transposed convolution adds one input pixel at its stride.
    assert generator_receptive_field(5, False) == (63, 63)
    assert generator_receptive_field(5, True)[0] > 63  # the blur widens it
    # Outputs at every stride phase (a block of 32 rows) must not change when the input changes
    # just outside the field, and some must change just inside it (random weights, eval mode).
    model = bounded_model(antialias=True)
    before, after = generator_receptive_field(5, True)
    x = torch.rand(1, 3, 512, 256)
    y0, step = 256, 32
    with torch.no_grad():
        y = model.generator(x)[..., y0 : y0 + step, :]
        for row, changes in ((y0 - before - 1, False), (y0 + step - 1 + after + 1, False),
                             (y0 - before, True), (y0 + step - 1 + after, True)):  # fmt: skip
            moved = x.clone()
            moved[..., row, :] += 2
            out = model.generator(moved)[..., y0 : y0 + step, :]
            assert torch.equal(out, y) != changes, row


@pytest.mark.parametrize("length", [1, 31, 100, 1000])
@pytest.mark.parametrize("phase", [0, 5, 31])
def test_cores_tile_the_axis_exactly_once_on_the_phase(length, phase):
    window, margin, multiple = 192, 64, 32
    starts = core_offsets(length, window, margin, phase, multiple)
    covered = np.zeros(length, int)
    for s in starts:
        assert s % multiple == phase
        lo, hi = max(s + margin, 0), min(s + window - margin, length)
        covered[lo:hi] += 1
    assert (covered == 1).all()
    fit = fitting_window(length, margin, phase, multiple)
    assert fit % multiple == 0 and len(core_offsets(length, fit, margin, phase, multiple)) == 1


def test_small_scene_gets_one_window_that_fits_it():
    model = bounded_model()
    options = RenderOptions(window=1024)

    class G:
        width, height, crs = 70, 40, UTM31
        transform = Affine(RES, 0, ORIGIN[0], 0, -RES, ORIGIN[1])

    tiles = tile_grid(model.card, options, G)
    assert len(tiles) == 1 and tiles.tile < 1024 and tiles.margin == 96
    assert tiles.tile - 2 * tiles.margin >= 70


@pytest.mark.parametrize("windows", [(256, 384), (256, 640)])
def test_map_does_not_depend_on_the_window_grid(tmp_path, windows):
    model = bounded_model()
    data = smooth_scene(300, 420)
    a = render_array(tmp_path, "a", data, model, window=windows[0])
    b = render_array(tmp_path, "b", data, model, window=windows[1])
    assert a.std() > 10  # a real, textured output, not a constant
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("cut", [32, 64, 96])
def test_a_cut_out_of_the_scene_renders_the_same_pixels(tmp_path, cut):
    """The scene and the same scene with its first rows and columns cut off (georeferencing
    kept) agree exactly where both have content, at least a receptive field from the cut."""
    model = bounded_model()
    data = smooth_scene(320, 320, seed=1)
    whole = render_array(tmp_path, "whole", data, model, window=256)
    t = Affine(RES, 0, ORIGIN[0] + cut * RES, 0, -RES, ORIGIN[1] - cut * RES)
    part = render_array(tmp_path, "part", data[:, cut:, cut:], model, transform=t, window=384)
    m = model.card.receptive_field + 1
    a = whole[:, cut + m : -m, cut + m : -m].astype(int)
    b = part[:, m:-m, m:-m].astype(int)
    # The same sums in float32, but the pixel sits elsewhere in its window, so oneDNN may order
    # them differently: values a few 1e-6 apart, which rounding to uint8 turns into a 1-level
    # step in about 1 pixel in 10,000. Anything structural would differ by far more.
    assert np.abs(a - b).max() <= 1 and (a != b).mean() < 5e-4


def test_lattice_phase_counts_from_the_crs_origin():
    t = Affine(2.0, 0, 1000.0 + 2 * 5, 0, -2.0, 4000.0 - 2 * 7)
    assert lattice_phase(t, 32) == ((-(500 + 5)) % 32, (-(-2000 + 7)) % 32)


def test_blended_grids_are_unchanged_for_models_without_a_receptive_field():
    card = ModelCard(tile_size=32)

    class G:
        width, height, crs, transform = 100, 50, None, Affine.identity()

    assert tile_grid(card, RenderOptions(overlap=8), G) == TileGrid.over(100, 50, 32, 8)


def test_column_panels_run_only_the_windows_whose_core_they_hold(tmp_path):
    """A core grid's panels give the whole render's pixels bit for bit, and each panel edge
    runs again only the one window whose core straddles it, not the neighbours whose margins
    reach across (their weight there is 0)."""
    from geomap_gan.rendering.options import EngineSettings

    model = bounded_model()
    src = write_geotiff(tmp_path / "in.tif", smooth_scene(200, 900), RES)
    options = RenderOptions(device="cpu", amp=False, batch_size=2, window=256)
    whole = render(
        src, tmp_path / "whole.tif", model, options, engine=EngineSettings(panel_width=0)
    )
    panels = render(src, tmp_path / "panels.tif", model, options,
                    engine=EngineSettings(panel_width=256))  # fmt: skip
    with rasterio.open(tmp_path / "whole.tif") as a, rasterio.open(tmp_path / "panels.tif") as b:
        np.testing.assert_array_equal(a.read(), b.read())
    plan = plan_render(src, model, options)
    rows, cols = len(plan.window_rows), plan.windows_per_row
    assert cols >= 4 and plan.tile == 256  # core windows, several per panel
    edges = 900 // 256  # panels of 256 px: edges at 256, 512 and 768
    assert whole.windows == rows * cols
    assert whole.windows < panels.windows <= whole.windows + rows * edges
