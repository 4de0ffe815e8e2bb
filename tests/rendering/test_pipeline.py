"""pipeline: an error in any stage (read, model, write) ends the render promptly, the error
reaches the caller, no thread is left behind and no output or temp file remains."""

from __future__ import annotations

import threading
import time

import pytest
import torch
from geotiffs import noise_rgb, write_geotiff

from geomap_gan.model.modelfile import MapModel, ModelCard
from geomap_gan.rendering import output, reader
from geomap_gan.rendering.engine import RenderOptions, render
from geomap_gan.rendering.options import EngineSettings


class Broken(RuntimeError):
    pass


class FailingNet(torch.nn.Module):
    """Identity for ``good`` batches, then raises (the model stage fails mid-render)."""

    def __init__(self, good: int) -> None:
        super().__init__()
        self.calls, self.good = 0, good

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        if self.calls > self.good:
            raise Broken("model stage")
        return x


def _fail_after(cls: type, name: str, good: int, monkeypatch: pytest.MonkeyPatch) -> None:
    real = getattr(cls, name)
    count = {"n": 0}

    def failing(self, *args, **kwargs):
        count["n"] += 1
        if count["n"] > good:
            raise Broken(f"{cls.__name__}.{name}")
        return real(self, *args, **kwargs)

    monkeypatch.setattr(cls, name, failing)


@pytest.mark.parametrize("stage", ["read", "model", "write"])
def test_an_error_in_any_stage_ends_the_render_promptly(tmp_path, monkeypatch, stage):
    src = write_geotiff(tmp_path / "in.tif", noise_rgb(700, 300))
    net: torch.nn.Module = torch.nn.Identity()
    if stage == "read":
        _fail_after(reader.RegionReader, "read", 3, monkeypatch)
    elif stage == "model":
        net = FailingNet(good=2)
    else:
        _fail_after(output.BlockRowWriter, "add", 1, monkeypatch)
    model = MapModel(net, ModelCard(name="identity", tile_size=32, gsd=2.0))
    options = RenderOptions(overlap=8, batch_size=2, device="cpu", compile=False)
    before = set(threading.enumerate())
    t0 = time.monotonic()
    with pytest.raises(Broken):
        render(src, tmp_path / "out.tif", model, options, engine=EngineSettings(prefetch=1))
    assert time.monotonic() - t0 < 5  # not a benchmark: a hang would take the 10 s join or more
    assert set(threading.enumerate()) - before == set()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.tif"]


@pytest.mark.parametrize("which", [1, 2])
def test_an_interrupt_while_the_workers_start_leaves_no_thread_running(
    tmp_path, monkeypatch, which
):
    """Ctrl-C or SIGTERM (raised in the main thread) inside the reader's or the writer's start():
    the render must still stop and wait for the reader, or the interpreter exits with a reader in
    GDAL and crashes (SIGSEGV, seen on SIGTERM in the test of the CLI)."""
    from geomap_gan.rendering import pipeline

    src = write_geotiff(tmp_path / "in.tif", noise_rgb(700, 300))
    model = MapModel(torch.nn.Identity(), ModelCard(name="identity", tile_size=32, gsd=2.0))
    real_start = pipeline._Worker.start
    starts = {"n": 0}

    def start_then_interrupt(self: threading.Thread) -> None:
        real_start(self)
        starts["n"] += 1
        if starts["n"] == which:  # as a signal handled while start() waits for the thread
            raise KeyboardInterrupt

    monkeypatch.setattr(pipeline._Worker, "start", start_then_interrupt)
    before = set(threading.enumerate())
    options = RenderOptions(overlap=8, batch_size=2, device="cpu", compile=False)
    with pytest.raises(KeyboardInterrupt):
        render(src, tmp_path / "out.tif", model, options, engine=EngineSettings(prefetch=1))
    assert set(threading.enumerate()) - before == set()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.tif"]
