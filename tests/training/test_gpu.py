"""The CUDA code paths: render and train on a GPU. They skip where torch sees no CUDA GPU, CI
included (CI has none); run them on a GPU machine with ``pytest tests/test_gpu.py``."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
from geotiffs import identity_model, noise_rgb, write_geotiff
from test_train import tiny_cfg, tiny_maps  # noqa: F401 (tiny_maps is a fixture)

from geomap_gan.model.modelfile import load_model
from geomap_gan.rendering.engine import RenderOptions, render
from geomap_gan.training.loop import Trainer


@pytest.fixture(autouse=True)
def _cuda() -> None:
    if not torch.cuda.is_available():
        pytest.skip("no CUDA GPU here")


def rendered(src: Path, dst: Path, model: object, **kw: object) -> np.ndarray:
    render(src, dst, model, RenderOptions(overlap=8, batch_size=5, **kw))  # type: ignore[arg-type]
    with rasterio.open(dst) as o:
        return o.read().astype(int)


def test_identity_model_on_cuda_reproduces_input(tmp_path: Path) -> None:
    data = noise_rgb(75, 97)
    src = write_geotiff(tmp_path / "in.tif", data)
    out = rendered(src, tmp_path / "out.tif", identity_model(), device="cuda")
    np.testing.assert_array_equal(out, data)


def test_cuda_render_matches_cpu(tmp_path: Path, tiny_model_file: Path) -> None:
    """fp32 on the GPU equals fp32 on the CPU (TF32 convolutions allowed: 1 grey level); bf16
    autocast on the GPU stays close to fp32."""
    src = write_geotiff(tmp_path / "in.tif", noise_rgb(150, 170, seed=4))
    model = load_model(tiny_model_file)
    cpu = rendered(src, tmp_path / "cpu.tif", model, device="cpu", amp=False)
    fp32 = rendered(src, tmp_path / "fp32.tif", model, device="cuda", amp=False)
    bf16 = rendered(src, tmp_path / "bf16.tif", model, device="cuda", amp=True)
    assert np.abs(fp32 - cpu).max() <= 1
    assert np.abs(bf16 - cpu).mean() < 1.0
    assert np.percentile(np.abs(bf16 - cpu), 99) <= 4
    assert not np.array_equal(bf16, fp32)  # autocast really ran in bf16


def test_train_on_cuda_then_resume_on_cpu(tiny_maps: Path, tmp_path: Path) -> None:  # noqa: F811
    """A run started on a GPU (bf16) continues on a CPU from its checkpoint, and its model loads."""
    out = tmp_path / "run"
    first = Trainer(tiny_cfg(tiny_maps, out, device="cuda", amp=True, max_steps=2, val_every=0))
    first.fit()
    assert first.epoch == 1 and first.device.type == "cuda"
    resumed = Trainer(tiny_cfg(tiny_maps, out, device="cpu"))
    metrics = resumed.fit(resume=True)
    assert resumed.epoch == 2 and resumed.step == 4 and 0 <= metrics["miou"] <= 1
    for name, tensor in resumed.G.state_dict().items():
        assert torch.isfinite(tensor.float()).all(), name
    assert load_model(out / "model.safetensors").card.epochs == 2
