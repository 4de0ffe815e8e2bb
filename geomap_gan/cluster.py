"""The Dask side of scale-out rendering: connecting to a cluster (or starting a local one), what
each worker process keeps (its model, its device, its thread count), the tasks the workers run
(a scene, a strip) and the reports they add up to (:mod:`geomap_gan.distributed` submits them).

Dask is imported only inside functions, so importing this module stays cheap and the rest of
geomap_gan works without the ``distributed`` extra.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from geomap_gan import files
from geomap_gan.errors import GeomapGanError, InputError

if TYPE_CHECKING:
    from distributed import Client

    from geomap_gan.model.modelfile import MapModel
    from geomap_gan.rendering.options import RenderOptions
    from geomap_gan.vector.options import VectorizeOptions

SceneStatus = Literal["rendered", "skipped", "failed"]

log = logging.getLogger(__name__)

MAX_WORKERS = 1024  # workers of a local cluster: more would exhaust the host's processes


# ---- connecting ----------------------------------------------------------------------------------
def require_dask() -> None:
    """A one-line GeomapGanError, not an ImportError traceback, when Dask is not installed."""
    import importlib.util

    if importlib.util.find_spec("distributed") is None:
        raise GeomapGanError(
            "scale-out rendering needs Dask distributed; pip install 'geomap-gan[distributed]'"
        )


def default_workers() -> int:
    """Workers of a local cluster: one per GPU when torch sees GPUs, else one per CPU core (each
    with a single thread: on CPU, processes scale better than threads fighting over the GIL)."""
    import torch

    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    return gpus or os.cpu_count() or 1


@contextlib.contextmanager
def connect(
    scheduler: str | Client | None = None, n_workers: int | None = None
) -> Iterator[Client]:
    """A Dask client: ``scheduler`` itself when it is a Client (left open), a connection to the
    scheduler at that address (``tcp://host:8786``), or a new local cluster of ``n_workers``
    single-threaded worker processes (default :func:`default_workers`), closed on exit."""
    require_dask()
    from distributed import Client, LocalCluster

    if isinstance(scheduler, Client):
        yield scheduler
        return
    if scheduler:
        try:
            client = Client(scheduler, timeout="20s")
        except ValueError as exc:  # not an address at all ("missing port number", ...)
            raise InputError(
                f"--scheduler {scheduler!r} is not a Dask scheduler address ({exc}); give one "
                "such as tcp://10.0.0.5:8786, or leave out --scheduler for a local cluster"
            ) from None
        except (OSError, TimeoutError) as exc:
            raise InputError(
                f"cannot reach the Dask scheduler at {scheduler} ({exc}); start one with "
                "`dask scheduler` or leave out --scheduler for a local cluster"
            ) from exc
        try:
            yield client
        finally:
            client.close()
        return
    if n_workers is not None and not 1 <= n_workers <= MAX_WORKERS:
        raise InputError(f"--workers must be 1 to {MAX_WORKERS}, got {n_workers}")
    cluster = LocalCluster(
        n_workers=n_workers or default_workers(),
        threads_per_worker=1,
        processes=True,
        dashboard_address=":0",  # a free port: two clusters on one machine do not clash
    )
    client = Client(cluster)
    try:
        yield client
    finally:
        client.close()
        cluster.close()


def has_bokeh() -> bool:
    """Whether this process can draw Dask's dashboard (it needs bokeh>=3.1; without it the
    dashboard URL answers with an install hint)."""
    import importlib.util

    return importlib.util.find_spec("bokeh") is not None


def dashboard_link(client: Client) -> str | None:
    """The scheduler's dashboard URL, or None when it serves none."""
    try:
        link = client.dashboard_link
    except (KeyError, AttributeError):
        return None
    return link or None


def workers_per_host(client: Client) -> dict[str, int]:
    """How many workers share each host, so each can size torch's thread pool to its share."""
    counts: dict[str, int] = {}
    for info in client.scheduler_info(n_workers=-1)["workers"].values():
        host = str(info.get("host", ""))
        counts[host] = counts.get(host, 0) + 1
    return counts


# ---- worker side ---------------------------------------------------------------------------------
_MODELS: dict[tuple[str, int, int, str], MapModel] = {}  # per worker process
_THREADS_SET = False


def worker_device(requested: str) -> str:
    """The device this worker should use: with ``auto`` and several GPUs, worker ``i`` of a local
    cluster (named 0, 1, ...) takes GPU ``i mod count``; otherwise what was requested."""
    import torch

    if requested != "auto" or not torch.cuda.is_available() or torch.cuda.device_count() < 2:
        return requested
    try:
        from distributed import get_worker

        index = int(get_worker().name)
    except (ValueError, TypeError):
        return requested
    return f"cuda:{index % torch.cuda.device_count()}"


def configure_threads(hosts: dict[str, int], device: str, threads: int) -> None:
    """The worker set-up owns its process: give torch this worker's share of the host's cores
    (Dask's nanny sets OMP_NUM_THREADS=1, which would leave a lone worker on a many-core host
    with one thread), or ``threads``, and the allocator setting (device.configure_process)."""
    global _THREADS_SET
    if _THREADS_SET:
        return

    try:
        from distributed import get_worker

        host = get_worker().address.split("://")[-1].rsplit(":", 1)[0]
    except ValueError:
        host = ""
    from geomap_gan.device import configure_process, resolve_device

    configure_process(resolve_device(device), threads, share=max(1, hosts.get(host, 1)))
    _THREADS_SET = True


def worker_model(model_path: str | None, device: str) -> tuple[MapModel, bool]:
    """The model for ``model_path`` (None: the bundled default) on ``device``, loaded once per
    worker process and kept; returns it and whether it came from the cache."""
    from geomap_gan.device import resolve_device
    from geomap_gan.model.modelfile import default_model_path, load_model

    path = Path(model_path) if model_path else default_model_path()
    try:
        st = path.stat()
        key = (str(path.resolve()), st.st_size, st.st_mtime_ns, device)
    except OSError:
        key = (str(path), -1, -1, device)  # load_model raises the proper error below
    if key in _MODELS:
        return _MODELS[key], True
    model = load_model(path, device=resolve_device(device))
    _MODELS.clear()  # one model per worker: a new file replaces the old one in memory
    _MODELS[key] = model
    return model, False


# ---- results -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SceneResult:
    """What happened to one scene. ``seconds`` is the worker's wall time for the render (0 when
    skipped); ``model_cached`` says the worker reused a model it had already loaded."""

    src: str
    dst: str
    status: SceneStatus
    error: str | None = None
    seconds: float = 0.0
    worker: str | None = None
    width: int = 0
    height: int = 0
    megapixels: float = 0.0
    model_cached: bool = False
    vectors: str | None = None  # the scene's vector file (render-many --vectors), once written
    vector_features: dict[str, int] | None = None  # features per layer, when vectorized now
    vector_seconds: float = 0.0


@dataclass(frozen=True)
class ManyReport:
    """The outcome of :func:`render_many`. ``mosaic`` is None when no output could go in one;
    ``mosaic_excluded`` lists outputs left out of it because their CRS differs from the first's."""

    out_dir: Path
    scenes: tuple[SceneResult, ...]
    mosaic: Path | None
    mosaic_excluded: tuple[str, ...]
    seconds: float
    workers: int

    def _with(self, status: SceneStatus) -> tuple[SceneResult, ...]:
        return tuple(s for s in self.scenes if s.status == status)

    @property
    def rendered(self) -> tuple[SceneResult, ...]:
        return self._with("rendered")

    @property
    def skipped(self) -> tuple[SceneResult, ...]:
        return self._with("skipped")

    @property
    def failed(self) -> tuple[SceneResult, ...]:
        return self._with("failed")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary (paths as strings)."""
        return {
            "out_dir": str(self.out_dir),
            "mosaic": str(self.mosaic) if self.mosaic else None,
            "mosaic_excluded": list(self.mosaic_excluded),
            "seconds": round(self.seconds, 3),
            "workers": self.workers,
            "rendered": len(self.rendered),
            "skipped": len(self.skipped),
            "failed": len(self.failed),
            "scenes": [dataclasses.asdict(s) for s in self.scenes],
        }


@dataclass(frozen=True)
class StripsReport:
    """The outcome of :func:`render_strips`: the assembled output and per-strip worker times."""

    path: Path
    width: int
    height: int
    strips: tuple[tuple[int, int], ...]  # output rows [r0, r1) of each strip
    strip_seconds: tuple[float, ...]  # worker wall time per strip
    assemble_seconds: float  # client time to copy the strips into the output (or write the VRT)
    seconds: float  # all of it, cluster start included
    workers: int

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["path"] = str(self.path)
        return d


# ---- worker side ---------------------------------------------------------------------------------
def is_complete(path: Path) -> bool:
    """Whether an output exists and is complete. Outputs only get their final name by an atomic
    rename after a successful render, so existing is nearly enough; opening it and reading its
    last pixel also catches a file truncated by something else (a full disk, a copy)."""
    import rasterio
    from rasterio.errors import RasterioError
    from rasterio.windows import Window

    if not path.is_file():
        return False
    try:
        with rasterio.open(path) as ds:
            ds.read(1, window=Window(ds.width - 1, ds.height - 1, 1, 1))
    except (RasterioError, OSError):
        return False
    return True


VECTOR_SUFFIX = ".gpkg"


def vector_path(dst: Path) -> Path:
    """The vector file of a scene's map in ``render-many --vectors``: ``<scene>.gpkg`` beside
    ``<scene>.tif``."""
    return dst.with_suffix(VECTOR_SUFFIX)


def existing_output(
    src: str, dst: Path, overwrite: bool, vectors: bool = False
) -> SceneResult | None:
    """What to report for a scene whose output is already there without ``overwrite``: skipped
    when it is a complete raster (an earlier attempt finished it) and, with ``vectors``, its
    vector file is there too (written atomically, after the map); failed and left untouched
    when the map is anything else (the user's file, a truncated copy); None when there is
    nothing, or a complete map still lacks its vectors (the task then vectorizes it only)."""
    if overwrite or not (dst.exists() or dst.is_symlink()):
        return None
    if is_complete(dst):
        if not vectors:
            return SceneResult(src, str(dst), "skipped")
        vdst = vector_path(dst)
        if vdst.exists():
            return SceneResult(src, str(dst), "skipped", vectors=str(vdst))
        return None
    error = f"{dst} exists and is not a complete raster; pass --overwrite to replace it"
    return SceneResult(src, str(dst), "failed", error=error)


def render_scene_task(
    src: str,
    dst: str,
    stage: str,
    model_path: str | None,
    options: RenderOptions,
    hosts: dict[str, int],
    vectors: VectorizeOptions | None = None,
) -> SceneResult:
    """Render one scene on a worker (the Dask task of :func:`render_many`); with ``vectors``,
    vectorize the map in the same task into ``<scene>.gpkg`` beside it (:func:`vector_path`).

    The engine writes into a folder for this scene inside the run's staging folder ``stage``
    (the vector file too, from the map there: it is not rendered twice); the finished files are
    then renamed to ``dst`` (first) and its vector file, so each exists only when complete. A
    complete map whose vector file is missing (a task stopped between the two renames) is
    vectorized only. What a killed attempt of this run left is cleared before starting. User
    errors (GeomapGanError: unreadable input, bad options) are returned as a failed result,
    since retrying cannot fix them; anything else propagates so that Dask retries the task.
    """
    from distributed import get_worker

    worker = get_worker().address
    out = Path(dst)
    # a previous attempt got this far?
    existing = existing_output(src, out, options.overwrite, vectors is not None)
    if existing is not None:
        return dataclasses.replace(existing, worker=worker)
    folder = Path(stage) / files.short_name(out.name)
    files.remove_made_dir(folder)  # an earlier attempt of this run, on a worker that died
    try:
        files.make_dir(folder, "render-many scene")
        if vectors is not None and not options.overwrite and is_complete(out):
            return _vectorize_only(src, out, folder, vectors, worker)
        return _render_scene(src, out, folder, model_path, options, hosts, vectors, worker)
    except GeomapGanError as exc:
        return SceneResult(src, dst, "failed", error=str(exc), worker=worker)
    finally:
        files.remove_made_dir(folder)


def _render_scene(
    src: str,
    out: Path,
    folder: Path,
    model_path: str | None,
    options: RenderOptions,
    hosts: dict[str, int],
    vectors: VectorizeOptions | None,
    worker: str,
) -> SceneResult:
    """Render (and vectorize) one scene in ``folder``, then publish the map and its vectors."""
    from geomap_gan.rendering.engine import render

    t0 = time.perf_counter()
    device = worker_device(options.device)
    configure_threads(hosts, device, options.threads)
    model, cached = worker_model(model_path, device)
    opts = dataclasses.replace(options, device=device, overwrite=True)
    result = render(src, folder / out.name, model, opts)
    seconds = time.perf_counter() - t0
    vector = _vectorize(folder / out.name, out, folder, vectors) if vectors else None
    files.publish(folder / out.name, out, options.overwrite)
    if vector is not None:
        files.publish(folder / vector_path(out).name, vector_path(out), options.overwrite)
    return SceneResult(
        src,
        str(out),
        "rendered",
        seconds=seconds,
        worker=worker,
        width=result.width,
        height=result.height,
        megapixels=result.megapixels,
        model_cached=cached,
        **(vector or {}),
    )


def _vectorize(src: Path, out: Path, folder: Path, vectors: VectorizeOptions) -> dict[str, Any]:
    """Vectorize the map ``src`` into ``folder`` under its final name's (``vector_path(out)``);
    the SceneResult fields of what was written."""
    from geomap_gan.vector import vectorize

    result = vectorize(src, folder / vector_path(out).name,
                       dataclasses.replace(vectors, overwrite=True))  # fmt: skip
    return {
        "vectors": str(vector_path(out)),
        "vector_features": dict(result.features),
        "vector_seconds": result.seconds,
    }


def _vectorize_only(
    src: str, out: Path, folder: Path, vectors: VectorizeOptions, worker: str
) -> SceneResult:
    """A scene whose map was finished by an earlier run but whose vector file was not: the map
    vectorized (not rendered again) and its vector file published."""
    fields = _vectorize(out, out, folder, vectors)
    files.publish(folder / vector_path(out).name, vector_path(out), False)
    return SceneResult(src, str(out), "rendered", worker=worker, **fields)


def render_strip_task(
    src: str,
    dst: str,
    model_path: str | None,
    options: RenderOptions,
    hosts: dict[str, int],
    rows: tuple[int, int],
) -> tuple[str, float]:
    """Render render-grid rows ``rows`` of a scene into ``dst`` on a worker (a task of
    :func:`render_strips`); returns the path and the worker's seconds. The engine writes
    atomically, so ``dst`` is complete whenever it exists."""
    from geomap_gan.rendering.engine import render
    from geomap_gan.rendering.options import EngineSettings

    t0 = time.perf_counter()
    device = worker_device(options.device)
    configure_threads(hosts, device, options.threads)
    model, _ = worker_model(model_path, device)
    engine = EngineSettings(row_range=rows)
    render(src, dst, model, dataclasses.replace(options, device=device), engine=engine)
    return dst, time.perf_counter() - t0
