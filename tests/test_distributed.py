"""Scale-out on Dask: many real scenes on a 2-process local cluster, a strip render equal to the
single render, a worker killed mid-job, resume after an interrupted run, and the CLI commands.

One module-scoped LocalCluster(n_workers=2, processes=True, threads_per_worker=1) on CPU serves
all tests (the worker-kill test runs last: the nanny restarts the killed worker anyway); a tiny
32 px ngf=8 model keeps each scene well under a second.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import rasterio
from conftest import unavailable
from rasterio.windows import Window, from_bounds

if importlib.util.find_spec("distributed") is None:
    unavailable("dask[distributed] is not installed", "the dev extra installs it")

from distributed import Client, LocalCluster, WorkerPlugin  # noqa: E402

from geomap_gan import files  # noqa: E402
from geomap_gan.distributed import (  # noqa: E402
    MOSAIC_NAME,
    STAGING_DIR,
    is_complete,
    render_many,
    render_strips,
    write_vrt,
)
from geomap_gan.errors import InputError, OutputError  # noqa: E402
from geomap_gan.rendering.engine import RenderOptions, render  # noqa: E402

OPTS = RenderOptions(overlap=8, batch_size=8, device="cpu")
GSD = 20.0  # model GSD of the tiny model: the 5 m NAIP scene renders at 234x181 px


@pytest.fixture(scope="module")
def model_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A randomly initialised 32 px, ngf=8 model at 10 m/px (real file format)."""
    import torch

    from geomap_gan.model.modelfile import MapModel, ModelCard, build_generator, save_model
    from geomap_gan.model.nets import init_weights

    torch.manual_seed(0)
    card = ModelCard(name="tiny", ngf=8, num_downs=5, tile_size=32, gsd=GSD)
    path = tmp_path_factory.mktemp("model") / "tiny.safetensors"
    return save_model(MapModel(init_weights(build_generator(card)), card), path)


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread() -> Iterator[None]:
    """Reference renders in this process use one thread, like each worker: on 2 busy cores,
    2 threads fighting a background job run 3x slower than 1."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def client() -> Iterator[Client]:
    with (
        LocalCluster(
            n_workers=2, processes=True, threads_per_worker=1, dashboard_address=None
        ) as cluster,
        Client(cluster) as c,
    ):
        yield c


@pytest.fixture(scope="module")
def scenes(geotiff_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Real scenes: the NAIP photo cut into four overlapping quarters (one CRS, so they mosaic),
    two scenes in other CRSs, and a truncated copy of the NAIP file (a scene that must fail)."""
    folder = tmp_path_factory.mktemp("scenes")
    naip = geotiff_dir / "naip_nd_2015.tif"
    step = round(GSD / 5.0)  # cuts on multiples of the output pixel keep the outputs' grids aligned
    with rasterio.open(naip) as ds:
        w, h = ds.width, ds.height
        cx, cy = (w // 2 - 20) // step * step, (h // 2 - 20) // step * step  # 40 px overlaps
        for name, (x, y) in {
            "q00": (0, 0),
            "q01": (cx, 0),
            "q10": (0, cy),
            "q11": (cx, cy),
        }.items():
            win = Window(x, y, w - x if x else cx + 40, h - y if y else cy + 40)
            profile = ds.profile | {
                "width": int(win.width),
                "height": int(win.height),
                "transform": ds.window_transform(win),
            }
            with rasterio.open(folder / f"naip_{name}.tif", "w", **profile) as out:
                out.write(ds.read(window=win))
    shutil.copy(geotiff_dir / "rgb_small_4p5m.tif", folder)
    shutil.copy(geotiff_dir / "drone_alpha_irregular.tif", folder)
    data = naip.read_bytes()
    (folder / "zz_truncated.tif").write_bytes(data[: len(data) // 3])
    return folder


def staging(out: Path) -> list[Path]:
    """The staging folders of render-many runs in ``out``."""
    return list(out.glob(f".{STAGING_DIR}.*"))


def read_all(path: Path) -> np.ndarray:
    with rasterio.open(path) as ds:
        return ds.read()


# ---- pure helpers --------------------------------------------------------------------------------
def test_vrt_composites_masked_overlaps(tmp_path: Path) -> None:
    """Where two outputs overlap, the later one wins only where its mask says valid."""
    from rasterio.transform import from_origin

    def make(name: str, x0: float, value: int, masked_cols: int) -> Path:
        valid = np.ones((20, 30), bool)
        valid[:, :masked_cols] = False
        rgb = np.where(valid, value, 0).astype(np.uint8)[None].repeat(3, 0)
        with rasterio.open(tmp_path / name, "w", driver="GTiff", width=30, height=20, count=4,
                           dtype="uint8", crs="EPSG:32614", photometric="RGB", alpha="YES",
                           transform=from_origin(x0, 100.0, 1.0, 1.0)) as ds:  # fmt: skip
            ds.write(np.concatenate([rgb, (valid * 255).astype(np.uint8)[None]]))
        return tmp_path / name

    a, b = make("a.tif", 0.0, 100, 0), make("b.tif", 20.0, 200, 5)  # b's first 5 cols masked
    vrt = write_vrt([a, b], tmp_path / "m.vrt")
    with rasterio.open(vrt) as m:
        assert (m.width, m.height, m.count) == (50, 20, 4) and m.crs == "EPSG:32614"
        row = m.read(1)[7]
        alpha = m.read(4)[7]
    assert (row[:25] == 100).all() and (row[25:] == 200).all() and (alpha == 255).all()


def test_missing_input_and_clashing_names_fail_before_any_work(tmp_path: Path, model_file: Path):
    with pytest.raises(InputError, match="does not exist"):
        render_many([tmp_path / "nope.tif"], tmp_path / "out", model_file, OPTS, scheduler="x")
    for d in ("a", "b"):
        (tmp_path / d).mkdir()
        (tmp_path / d / "s.tif").write_bytes(b"x")
    with pytest.raises(InputError, match="would both be written"):
        render_many([tmp_path / "a/s.tif", tmp_path / "b/s.tif"], tmp_path / "o", model_file, OPTS,
                    scheduler="x")  # fmt: skip
    with pytest.raises(OutputError, match="is the input"):
        render_many([tmp_path / "a/s.tif"], tmp_path / "a", model_file, OPTS, scheduler="x")


# ---- many scenes ---------------------------------------------------------------------------------
def test_many_real_scenes(scenes: Path, model_file: Path, client: Client, tmp_path: Path) -> None:
    out = tmp_path / "out"
    seen: list[tuple[int, int]] = []
    report = render_many([scenes], out, model_file, OPTS, scheduler=client,
                         progress=lambda d, t: seen.append((d, t)))  # fmt: skip
    assert len(report.scenes) == 7 and report.workers == 2
    assert [Path(s.src).name for s in report.failed] == ["zz_truncated.tif"]
    assert "truncated or corrupt" in report.failed[0].error  # the engine's one-line message
    assert len(report.rendered) == 6 and seen[-1] == (7, 7)
    assert not (out / "zz_truncated.tif").exists() and not staging(out)
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [MOSAIC_NAME] + [f"{Path(s.src).stem}.tif" for s in report.rendered]
    )
    # each worker loaded the model once and kept it
    assert sum(not s.model_cached for s in report.rendered) <= 2
    # an output equals a render of the same scene in this process
    ref = render(scenes / "naip_q01.tif", tmp_path / "ref.tif", str(model_file), OPTS)
    got = read_all(out / "naip_q01.tif")
    assert got.shape == read_all(ref.path).shape
    assert np.abs(got.astype(int) - read_all(ref.path)).max() <= 1
    # mosaic over the four NAIP quarters (same CRS); the other CRSs are left out and named
    assert sorted(Path(p).name for p in report.mosaic_excluded) == [
        "drone_alpha_irregular.tif",
        "rgb_small_4p5m.tif",
    ]
    with rasterio.open(report.mosaic) as m, rasterio.open(out / "naip_q11.tif") as q:
        assert m.crs == q.crs and m.count == 4
        win = from_bounds(*q.bounds, transform=m.transform).round_offsets().round_lengths()
        part = m.read(window=win)
        quarter = q.read()
    inside = quarter[3] > 0
    assert np.abs(part[:3, inside].astype(int) - quarter[:3, inside]).max() <= 1


def test_resume_skips_complete_outputs(
    scenes: Path, model_file: Path, client: Client, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    quarters = sorted(scenes.glob("naip_q*.tif"))
    first = render_many(quarters[:2], out, model_file, OPTS, scheduler=client)  # "interrupted"
    assert len(first.rendered) == 2
    stamps = {p.name: p.stat().st_mtime_ns for p in out.glob("naip_*.tif")}
    # what a crash leaves: a killed run's staging folder, and a damaged file under a final name
    dead = files.temp_path(out / STAGING_DIR, "run")
    dead = dead.with_name(dead.name.replace(f"-{os.getpid()}-", "-999999999-"))
    files.make_dir(dead)
    (files.make_dir(dead / "naip_q10.tif") / ".naip_q10.tif.x.tmp").write_bytes(b"partial")
    users = out / f".{STAGING_DIR}.mine.tmp"  # the user's folder of that kind of name: kept
    users.mkdir()
    # a truncated copy under a scene's name is the user's file: reported, never replaced
    damaged = (out / "naip_q00.tif").read_bytes()[:5000]
    (out / "naip_q11.tif").write_bytes(damaged)
    assert not is_complete(out / "naip_q11.tif")
    again = render_many(quarters, out, model_file, OPTS, scheduler=client)
    assert sorted(Path(s.src).name for s in again.skipped) == ["naip_q00.tif", "naip_q01.tif"]
    assert sorted(Path(s.src).name for s in again.rendered) == ["naip_q10.tif"]
    (failed,) = again.failed
    assert Path(failed.src).name == "naip_q11.tif" and "--overwrite" in failed.error
    assert (out / "naip_q11.tif").read_bytes() == damaged
    assert {n: (out / n).stat().st_mtime_ns for n in stamps} == stamps  # skipped: untouched
    assert all(is_complete(out / f"naip_q{k}.tif") for k in ("00", "01", "10"))
    assert staging(out) == [users] and not dead.exists()
    users.rmdir()
    (out / "naip_q11.tif").unlink()
    third = render_many(quarters, out, model_file, OPTS, scheduler=client)
    assert len(third.skipped) == 3 and [Path(s.src).name for s in third.rendered] == [
        "naip_q11.tif"
    ]


class FlakyRender(WorkerPlugin):
    """Makes the engine on every worker fail like a flaky disk: it leaves a partial file beside
    its output and raises OSError, once (``marker`` shared by all workers) or always."""

    def __init__(self, marker: str, always: bool) -> None:
        self.marker, self.always = marker, always

    def setup(self, worker: object) -> None:
        import geomap_gan.rendering.engine as engine

        original, marker, always = engine.render, Path(self.marker), self.always
        self.original = original

        def flaky(src, dst, *args, **kwargs):  # type: ignore[no-untyped-def]
            if always or not marker.exists():
                marker.touch()
                Path(dst).with_name(".partial.tmp").write_bytes(b"half a file")
                raise OSError("simulated I/O failure")
            return original(src, dst, *args, **kwargs)

        engine.render = flaky

    def teardown(self, worker: object) -> None:
        import geomap_gan.rendering.engine as engine

        engine.render = self.original


@pytest.mark.parametrize("always", [False, True])
def test_unexpected_errors_are_retried_then_reported(
    scenes: Path, model_file: Path, client: Client, tmp_path: Path, always: bool
) -> None:
    out = tmp_path / "out"
    client.register_plugin(FlakyRender(str(tmp_path / "failed-once"), always), name="flaky")
    try:
        report = render_many([scenes / "naip_q00.tif"], out, model_file, OPTS, scheduler=client)
    finally:
        client.unregister_worker_plugin("flaky")
    (scene,) = report.scenes
    if always:  # 1 + RETRIES attempts, then reported; nothing partial left
        assert scene.status == "failed" and scene.error == "OSError: simulated I/O failure"
        assert sorted(p.name for p in out.iterdir()) == []
    else:  # the retry succeeded
        assert scene.status == "rendered" and is_complete(out / "naip_q00.tif")
        assert sorted(p.name for p in out.iterdir()) == [MOSAIC_NAME, "naip_q00.tif"]


# ---- one scene in strips -------------------------------------------------------------------------
@pytest.mark.parametrize("suffix", [".tif", ".vrt"])
def test_strips_equal_single_render(
    geotiff_dir: Path, model_file: Path, client: Client, tmp_path: Path, suffix: str
) -> None:
    src = geotiff_dir / "naip_nd_2015.tif"  # nodata 0: the output carries an alpha band
    single = render(src, tmp_path / "single.tif", str(model_file), OPTS)
    report = render_strips(src, tmp_path / f"strips{suffix}", model_file, OPTS, scheduler=client,
                           n_strips=3)  # fmt: skip
    assert len(report.strips) == 3 and report.height == single.height
    assert report.strips[0][0] == 0 and report.strips[-1][1] == single.height
    assert all(report.strips[k][1] == report.strips[k + 1][0] for k in range(2))
    with rasterio.open(single.path) as a, rasterio.open(report.path) as b:
        assert (b.width, b.height, b.crs) == (a.width, a.height, a.crs)
        assert b.transform.almost_equals(a.transform)
        ref, got = a.read(), b.read()
    np.testing.assert_array_equal(got, ref)
    leftovers = [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]
    assert leftovers == []
    if suffix == ".vrt":
        assert len(list((tmp_path / "strips_strips").glob("strip_*.tif"))) == 3


# ---- CLI -----------------------------------------------------------------------------------------
def cli_run(*args: str) -> tuple[int, str, str]:
    from click.testing import CliRunner

    from geomap_gan.cli import cli

    result = CliRunner().invoke(cli, list(args))
    return result.exit_code, result.stdout, result.stderr


def test_cli_render_many_local_cluster(scenes: Path, model_file: Path, tmp_path: Path) -> None:
    """Without --scheduler: a local cluster of --workers; a failed scene means exit code 1."""
    args = ["render-many", str(scenes / "naip_q00.tif"), str(scenes / "zz_truncated.tif"),
            "--out-dir", str(tmp_path / "o"), "--model", str(model_file), "--overlap", "8",
            "--device", "cpu", "--workers", "1"]  # fmt: skip
    code, out, err = cli_run(*args)
    assert code == 1, err
    assert "1 rendered, 0 skipped (already done), 1 failed" in out and "on 1 worker(s)" in out
    assert "Dask: 1 worker(s), dashboard:" in err and "failed: " in err
    assert err.strip().splitlines()[-1].startswith("Error: 1 of 2 scene(s) failed")
    assert is_complete(tmp_path / "o" / "naip_q00.tif") and (tmp_path / "o" / MOSAIC_NAME).exists()


def test_cli_render_strips_on_scheduler(
    geotiff_dir: Path, model_file: Path, client: Client, tmp_path: Path
) -> None:
    import json

    src = str(geotiff_dir / "rgb_small_4p5m.tif")
    common = ["--model", str(model_file), "--overlap", "8", "--device", "cpu", "--gsd", "9"]
    assert cli_run("render", src, str(tmp_path / "one.tif"), *common, "--quiet")[0] == 0
    code, out, err = cli_run("render", src, str(tmp_path / "two.tif"), *common, "--json",
                             "--scheduler", client.scheduler.address, "--strips", "2")  # fmt: skip
    assert code == 0, err
    report = json.loads(out)  # the progress bar went to stderr
    assert len(report["strips"]) == 2 and report["workers"] == 2
    assert (
        np.abs(read_all(tmp_path / "two.tif").astype(int) - read_all(tmp_path / "one.tif")).max()
        <= 1
    )
    code, _, err = cli_run("render", src, str(tmp_path / "two.tif"), *common, "--strips", "2",
                           "--scheduler", client.scheduler.address)  # fmt: skip
    assert code == 2 and err.startswith("Error: ") and "--overwrite" in err


# ---- a worker dies mid-job (last: it disturbs the cluster) ---------------------------------------
def test_worker_killed_mid_job(scenes: Path, model_file: Path, client: Client, tmp_path: Path):
    """SIGKILL the worker process that is writing a scene (its staging folder holds the engine's
    temp file): Dask re-runs the scene elsewhere, the job completes, nothing partial is left, and
    the re-rendered output equals a clean render."""
    out = tmp_path / "out"
    opts = RenderOptions(overlap=8, batch_size=2, device="cpu", gsd=10.0)  # ~1 s per scene
    killed: list[str] = []

    def kill_one(futures: list) -> None:
        def killer() -> None:
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and not killed:
                for stage in out.glob(f".{STAGING_DIR}.*/*/"):
                    if not any(p.suffix == ".tmp" for p in stage.iterdir()):
                        continue  # not writing yet
                    prefix = f"render-{Path(stage.name).stem}-"
                    for worker, keys in client.processing().items():
                        if any(str(k).startswith(prefix) for k in keys):
                            pid = client.run(os.getpid, workers=[worker])[worker]
                            os.kill(pid, signal.SIGKILL)
                            killed.append(stage.name)
                            return
                time.sleep(0.01)

        threading.Thread(target=killer, daemon=True).start()

    quarters = sorted(scenes.glob("naip_q*.tif"))
    report = render_many(quarters, out, model_file, opts, scheduler=client, watch=kill_one)
    assert killed, "no scene was caught mid-write"
    assert not report.failed and len(report.rendered) == 4
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [MOSAIC_NAME] + [q.name for q in quarters]
    )  # no staging folder, no temp file
    for s in report.rendered:
        assert read_all(Path(s.dst)).shape[0] == 4  # every block decodes
    clean = render(scenes / killed[0], tmp_path / "clean.tif", str(model_file), opts)
    assert np.abs(read_all(out / killed[0]).astype(int) - read_all(clean.path)).max() <= 1
