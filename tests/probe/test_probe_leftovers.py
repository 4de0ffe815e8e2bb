"""Probe, leftovers: whatever stops a run (an error, Ctrl-C, SIGTERM, SIGKILL), it leaves
nothing behind that a later run cannot recognise and remove, and no run removes another's
files or the user's. The cases of issue 39 and others of the same promise.

The cluster is replaced by a stand-in (``distributed.connect``): what is probed is the
client's scratch bookkeeping, which runs before, around and after the workers.
"""

from __future__ import annotations

import contextlib
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from geotiffs import noise_rgb, write_geotiff
from probe_util import DEAD_PID, dead_temp_name, snapshot

from geomap_gan import distributed, files
from geomap_gan.rendering.engine import RenderOptions

OPTS = RenderOptions(overlap=8, device="cpu")


class FakeClient:
    """Enough of a Dask client for the client-side code before any task is submitted."""

    def scheduler_info(self, n_workers: int = -1) -> dict:
        return {"workers": {"tcp://127.0.0.1:1": {"host": "127.0.0.1"}}}


def fake_connect(hook=None):  # type: ignore[no-untyped-def]
    @contextlib.contextmanager
    def connect(scheduler=None, n_workers=None):  # type: ignore[no-untyped-def]
        if hook is not None:
            hook()
        yield FakeClient()

    return connect


def interrupt() -> None:
    raise KeyboardInterrupt


@pytest.fixture
def scene(tmp_path: Path) -> Path:
    (tmp_path / "in").mkdir()
    return write_geotiff(tmp_path / "in" / "scene.tif", noise_rgb(40, 50))


def hidden(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


# ---- render-many ------------------------------------------------------------------------------
@pytest.mark.parametrize("stop", [KeyboardInterrupt, distributed.InputError, OSError])
def test_an_interrupted_render_many_removes_its_staging_folder(
    tmp_path, scene, tiny_model_file, monkeypatch, stop
):
    """Issue 39: an interrupted render-many left its staging folder."""
    out = tmp_path / "out"
    seen: list[Path] = []

    def run_scenes(client, job, options, stage, todo, results, hooks):  # type: ignore[no-untyped-def]
        seen.append(stage)
        assert (stage / files.MARKER).is_file()
        (stage / "scene.tif").mkdir()  # a worker's folder, mid-write
        raise stop("stopped")

    monkeypatch.setattr(distributed, "connect", fake_connect())
    monkeypatch.setattr(distributed, "_run_scenes", run_scenes)
    with pytest.raises(stop):
        distributed.render_many([scene], out, tiny_model_file, OPTS)
    assert seen and not seen[0].exists() and hidden(out) == []


def test_two_render_many_runs_into_one_folder_do_not_meet(tmp_path, scene, tiny_model_file,
                                                          monkeypatch):  # fmt: skip
    """Issue 39: two runs shared a staging folder by name and broke each other."""
    out = tmp_path / "out"
    stages: list[Path] = []

    def run_scenes(client, job, options, stage, todo, results, hooks):  # type: ignore[no-untyped-def]
        stages.append(stage)
        if len(stages) == 1:  # the second run starts and ends while the first is going
            distributed.render_many([scene], out, tiny_model_file, OPTS)
            assert stage.is_dir() and (stage / files.MARKER).is_file()  # untouched by it
        for i in todo:
            results[i] = distributed.SceneResult(str(job.sources[i]), str(job.dsts[i]), "failed")

    monkeypatch.setattr(distributed, "connect", fake_connect())
    monkeypatch.setattr(distributed, "_run_scenes", run_scenes)
    distributed.render_many([scene], out, tiny_model_file, OPTS)
    assert len(stages) == 2 and stages[0] != stages[1]
    assert stages[0].parent == stages[1].parent == out and hidden(out) == []


def test_stale_staging_folders_go_only_when_their_run_is_dead_and_they_are_the_tools(
    tmp_path, scene, tiny_model_file, monkeypatch
):
    out = tmp_path / "out"
    out.mkdir()
    base = out / distributed.STAGING_DIR
    dead = files.make_dir(dead_temp_name(base, "run"))
    (dead / "scene.tif").mkdir()
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        alive = files.make_dir(base.parent / dead.name.replace(f"-{DEAD_PID}-", f"-{sleeper.pid}-"))
        unmarked = dead_temp_name(base, "run")
        unmarked.mkdir()  # a dead writer's name, but no marker: not provably the tool's
        monkeypatch.setattr(distributed, "connect", fake_connect(interrupt))
        with pytest.raises(KeyboardInterrupt):
            distributed.render_many([scene], out, tiny_model_file, OPTS)
        assert not dead.exists() and alive.is_dir() and unmarked.is_dir()
    finally:
        sleeper.kill()
        sleeper.wait()


# ---- render --strips -------------------------------------------------------------------------
@pytest.mark.parametrize("suffix", [".tif", ".vrt"])
def test_an_interrupted_strips_render_leaves_nothing_and_keeps_the_earlier_result(
    tmp_path, scene, tiny_model_file, monkeypatch, suffix
):
    dst = tmp_path / f"map{suffix}"
    earlier = tmp_path / "map_strips"
    if suffix == ".vrt":  # an earlier result of the tool: the folder and its VRT
        files.make_dir(earlier)
        write_geotiff(earlier / "strip_0000.tif", noise_rgb(40, 50))
        distributed.write_vrt([earlier / "strip_0000.tif"], dst)
    before = snapshot(tmp_path)
    monkeypatch.setattr(distributed, "connect", fake_connect(interrupt))
    opts = RenderOptions(overlap=8, device="cpu", overwrite=True)
    with pytest.raises(KeyboardInterrupt):
        distributed.render_strips(scene, dst, tiny_model_file, opts)
    assert snapshot(tmp_path) == before


def test_a_failed_vrt_publish_puts_the_earlier_strips_back(tmp_path, monkeypatch):
    from geomap_gan import mosaic

    folder = files.make_dir(tmp_path / "map_strips")
    write_geotiff(folder / "strip_0000.tif", noise_rgb(40, 50))
    vrt = mosaic.write_vrt([folder / "strip_0000.tif"], tmp_path / "map.vrt")
    before = snapshot(tmp_path)
    work = files.scratch_dir(tmp_path / "map.vrt", "strips")
    write_geotiff(work / "strip_0000.tif", noise_rgb(20, 50, seed=1))

    def broken(*args, **kwargs):  # type: ignore[no-untyped-def]
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(mosaic, "write_vrt", broken)
    with pytest.raises(OSError):
        mosaic.publish_strips(work, folder, vrt, True)
    assert work.is_dir()  # the scratch folder again, removed by its owner
    files.remove_made_dir(work)
    assert snapshot(tmp_path) == before


def test_a_killed_strips_render_leaves_a_folder_the_next_run_removes(
    tmp_path, scene, tiny_model_file, monkeypatch
):
    """Issue 39: a killed `render --strips` left a strips folder no later run removed."""
    dst = tmp_path / "map.tif"
    script = textwrap.dedent(f"""
        import contextlib, sys, time
        from geomap_gan import distributed
        from geomap_gan.rendering.engine import RenderOptions

        @contextlib.contextmanager
        def connect(scheduler=None, n_workers=None):
            print("ready", flush=True)
            time.sleep(120)
            yield None

        distributed.connect = connect
        distributed.render_strips({str(scene)!r}, {str(dst)!r}, {str(tiny_model_file)!r},
                                  RenderOptions(overlap=8, device="cpu"))
    """)
    child = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == "ready"
        left = [p for p in tmp_path.iterdir() if p.name.startswith(".map.tif.strips.")]
        assert len(left) == 1 and (left[0] / files.MARKER).is_file()
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    assert left[0].is_dir()  # SIGKILL: nothing could clean up
    mine = tmp_path / ".map.tif.strips.mine.tmp"
    mine.mkdir()  # the user's, of a similar name
    monkeypatch.setattr(distributed, "connect", fake_connect(interrupt))
    with pytest.raises(KeyboardInterrupt):
        distributed.render_strips(scene, dst, tiny_model_file, OPTS)
    assert not left[0].exists() and mine.is_dir() and hidden(tmp_path) == [mine.name]


# ---- download, atomic outputs ----------------------------------------------------------------
def test_a_killed_download_extraction_is_removed_by_the_next_run(tmp_path, monkeypatch):
    from geomap_gan import download
    from geomap_gan.errors import DownloadError

    dest = tmp_path / "maps"
    killed = files.make_dir(dead_temp_name(dest, "extracting"))
    (killed / "train").mkdir()
    replaced = dead_temp_name(dest, "old")  # a run killed mid-swap: the user's data, kept
    replaced.mkdir()
    (replaced / "1.jpg").write_bytes(b"the user's data")

    def fetch(url, part, opts, progress=None):  # type: ignore[no-untyped-def]
        raise DownloadError("offline")

    monkeypatch.setattr(download, "fetch", fetch)
    with pytest.raises(DownloadError):
        download.download_maps(dest, download.DownloadOptions(), None, {"a": "0" * 64})
    assert not killed.exists() and (replaced / "1.jpg").read_bytes() == b"the user's data"


@pytest.mark.parametrize("stop", [KeyboardInterrupt, OSError, SystemExit])
def test_atomic_outputs_leave_no_temp_file_whatever_stops_them(tmp_path, stop):
    dst = tmp_path / ("n" * 240 + ".tif")
    with pytest.raises(stop), files.atomic_output(dst, False) as tmp:
        tmp.write_bytes(b"half")
        raise stop()
    assert list(tmp_path.iterdir()) == []


def test_a_scratch_folder_is_removed_whatever_stops_its_run(tmp_path):
    with pytest.raises(KeyboardInterrupt), files.scratch(tmp_path / "x.tif", "strips") as work:
        (work / "sub").mkdir()
        (work / "sub" / "f").write_bytes(b"x")
        raise KeyboardInterrupt
    assert list(tmp_path.iterdir()) == []
