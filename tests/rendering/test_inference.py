"""The tile runner: what it computes, its eager fallback, and the batch-size rule."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from geomap_gan.model.modelfile import load_model
from geomap_gan.model.nets import from_model_range, to_model_range
from geomap_gan.rendering.inference import (
    ACTIVATION_BYTES_PER_PIXEL,
    AUTO_BATCH,
    TileRunner,
    batch_size_for,
)
from geomap_gan.rendering.options import RenderOptions


def tiles(n: int, size: int = 32, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, 3, size, size), dtype=np.uint8)


def test_runner_is_the_generator_in_grey_levels_times_the_weights(tiny_model_file: Path) -> None:
    """fp32 eager: the generator's map of the tiles in grey levels, times the blend weights (up
    to the float rounding of the BatchNorm folded into the convolutions)."""
    model = load_model(tiny_model_file)
    weights = np.random.default_rng(1).random((32, 32)).astype(np.float32)
    runner = TileRunner(model, torch.device("cpu"), amp=False, weights=weights, batch_size=3)
    x = tiles(3)
    with torch.no_grad():
        expected = from_model_range(model.generator.eval()(to_model_range(torch.from_numpy(x))))
    got = runner(x)
    assert got.shape == (3, 3, 32, 32) and got.dtype == np.float32
    np.testing.assert_allclose(got, expected.numpy() * weights, atol=1e-3)
    assert not runner.compiled


def test_a_failing_compiled_network_falls_back_to_eager_for_good(tiny_model_file: Path) -> None:
    weights = np.ones((32, 32), np.float32)
    runner = TileRunner(load_model(tiny_model_file), torch.device("cpu"), False, weights, 2)
    x = tiles(2, seed=2)
    eager = runner(x)
    calls: list[int] = []

    def broken(t: torch.Tensor) -> torch.Tensor:
        calls.append(len(t))
        raise RuntimeError("a kernel the compiler could not build")

    runner.net, runner.compiled = broken, True
    np.testing.assert_array_equal(runner(x), eager)
    assert calls == [2] and not runner.compiled and runner.net is runner.eager
    np.testing.assert_array_equal(runner(x), eager)
    assert calls == [2]  # not tried again


def test_a_compiled_runner_pads_a_short_batch_to_its_static_shape(tiny_model_file: Path) -> None:
    weights = np.ones((32, 32), np.float32)
    runner = TileRunner(load_model(tiny_model_file), torch.device("cpu"), False, weights, 4)
    x = tiles(3, seed=3)
    padded = np.concatenate([x, np.zeros((1, 3, 32, 32), np.uint8)])
    eager = runner(padded)[:3]  # the same batch shape: the same kernels, the same rounding
    shapes: list[tuple[int, ...]] = []

    def static(t: torch.Tensor) -> torch.Tensor:
        shapes.append(tuple(t.shape))
        return runner.eager(t)

    runner.net, runner.compiled = static, True
    np.testing.assert_array_equal(runner(x), eager)
    assert shapes == [(4, 3, 32, 32)]


def test_auto_batch_is_the_device_default_in_256_px_windows_worth_of_pixels() -> None:
    cpu, auto = torch.device("cpu"), RenderOptions()
    assert batch_size_for(auto, cpu, tile=256) == AUTO_BATCH["cpu"]
    assert batch_size_for(auto, cpu, tile=512) == max(1, AUTO_BATCH["cpu"] // 4)
    assert batch_size_for(auto, cpu, tile=1024) == 1
    assert batch_size_for(auto, torch.device("cuda"), tile=512) == AUTO_BATCH["cuda"] // 4


def test_a_given_batch_is_capped_by_the_windows_and_by_memory() -> None:
    cpu = torch.device("cpu")
    assert batch_size_for(RenderOptions(batch_size=100_000), cpu, tile=256, windows=1) == 1
    assert batch_size_for(RenderOptions(batch_size=6), cpu, tile=256, windows=40) == 6
    cap = 4 * 2**30 // (1024 * 1024 * ACTIVATION_BYTES_PER_PIXEL)
    assert batch_size_for(RenderOptions(batch_size=100_000), cpu, tile=1024) == cap
