"""Scale-out rendering on Dask distributed: many scenes, or one huge scene in strips.

Both entry points are thin layers over :func:`geomap_gan.rendering.engine.render`; Dask does the scheduling,
retrying and worker bookkeeping (no home-made scheduler):

- :func:`render_many` submits one task per scene. Outputs land side by side in one folder, plus a
  ``mosaic.vrt`` over them. Re-running skips outputs that exist and are complete, so a crashed
  job resumes where it stopped.
- :func:`render_strips` splits one huge scene into horizontal strips of whole window rows
  (``EngineSettings.row_range``), renders each strip on a worker into its own file and assembles
  them on the client into one output equal to a single-machine render.

Where things run: the inputs, the model file and the output folder must be reachable under the same
paths from the client and from every worker (one machine, or a shared file system such as NFS).
Each worker process loads the model once and keeps it (a module-level cache keyed by the model
file's path, size, modification time and the device), and uses its GPU when it has one
(``device="auto"``; with several GPUs in one machine, worker ``i`` of a local cluster takes GPU
``i mod count``).

Dask is imported only inside functions, so importing this module stays cheap and the rest of
geomap_gan works without the ``distributed`` extra.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import shutil
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal
from xml.sax.saxutils import escape

from geomap_gan import files
from geomap_gan.errors import GeomapGanError, InputError, OutputError, OutputExistsError
from geomap_gan.rendering.grid import Grid

if TYPE_CHECKING:
    from distributed import Client, Future

    from geomap_gan.model.modelfile import MapModel
    from geomap_gan.rendering.engine import RenderOptions

log = logging.getLogger(__name__)

MOSAIC_NAME = "mosaic.vrt"
STAGING_DIR = ".geomap-gan-partial"  # in the output folder; one sub-folder per scene in flight
RETRIES = 2  # further attempts of a task that raised an unexpected error (not a user error)
RASTER_SUFFIXES = (".tif", ".tiff")  # what a folder given as input contributes

SceneStatus = Literal["rendered", "skipped", "failed"]
Progress = Callable[[int, int], None]
Watch = Callable[[list["Future"]], None]
OnClient = Callable[["Client"], None]


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
    if n_workers is not None and n_workers < 1:
        raise InputError(f"--workers must be at least 1, got {n_workers}")
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


def _workers_per_host(client: Client) -> dict[str, int]:
    """How many workers share each host, so each can size torch's thread pool to its share."""
    counts: dict[str, int] = {}
    for info in client.scheduler_info(n_workers=-1)["workers"].values():
        host = str(info.get("host", ""))
        counts[host] = counts.get(host, 0) + 1
    return counts


# ---- worker side ---------------------------------------------------------------------------------
_MODELS: dict[tuple[str, int, int, str], MapModel] = {}  # per worker process
_THREADS_SET = False


def _worker_device(requested: str) -> str:
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


def _configure_threads(hosts: dict[str, int], device: str, threads: int) -> None:
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


def existing_output(src: str, dst: Path, overwrite: bool) -> SceneResult | None:
    """What to report for a scene whose output is already there without ``overwrite``: skipped
    when it is a complete raster (an earlier attempt finished it), failed and left untouched
    when it is anything else (the user's file, a truncated copy); None when there is nothing."""
    if overwrite or not (dst.exists() or dst.is_symlink()):
        return None
    if is_complete(dst):
        return SceneResult(src, str(dst), "skipped")
    error = f"{dst} exists and is not a complete raster; pass --overwrite to replace it"
    return SceneResult(src, str(dst), "failed", error=error)


def _staging(dst: Path) -> Path:
    return dst.parent / STAGING_DIR / dst.name


def render_scene_task(
    src: str,
    dst: str,
    model_path: str | None,
    options: RenderOptions,
    hosts: dict[str, int],
) -> SceneResult:
    """Render one scene on a worker (the Dask task of :func:`render_many`).

    The engine writes into a per-scene staging folder inside the output folder; the finished file
    is then renamed to ``dst``, so ``dst`` exists only when complete. A leftover staging folder from
    a killed worker is cleared before starting. User errors (GeomapGanError: unreadable input,
    bad options) are returned as a failed result, since retrying cannot fix them; anything else
    propagates so that Dask retries the task.
    """
    from distributed import get_worker

    from geomap_gan.rendering.engine import render

    worker = get_worker().address
    out = Path(dst)
    existing = existing_output(src, out, options.overwrite)  # a previous attempt got this far?
    if existing is not None:
        return dataclasses.replace(existing, worker=worker)
    stage = _staging(out)
    shutil.rmtree(stage, ignore_errors=True)
    t0 = time.perf_counter()
    try:
        device = _worker_device(options.device)
        _configure_threads(hosts, device, options.threads)
        model, cached = worker_model(model_path, device)
        stage.mkdir(parents=True)
        opts = dataclasses.replace(options, device=device, overwrite=True)
        result = render(src, stage / out.name, model, opts)
        files.publish(stage / out.name, out, options.overwrite)
    except GeomapGanError as exc:
        return SceneResult(src, dst, "failed", error=str(exc), worker=worker)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    return SceneResult(
        src,
        dst,
        "rendered",
        seconds=time.perf_counter() - t0,
        worker=worker,
        width=result.width,
        height=result.height,
        megapixels=result.megapixels,
        model_cached=cached,
    )


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
    device = _worker_device(options.device)
    _configure_threads(hosts, device, options.threads)
    model, _ = worker_model(model_path, device)
    engine = EngineSettings(row_range=rows)
    render(src, dst, model, dataclasses.replace(options, device=device), engine=engine)
    return dst, time.perf_counter() - t0


# ---- many scenes ---------------------------------------------------------------------------------
def expand_inputs(inputs: Iterable[str | Path]) -> list[Path]:
    """Input paths in order, a folder contributing its ``*.tif``/``*.tiff`` files (sorted);
    InputError for a path that does not exist or an empty list."""
    found: list[Path] = []
    for item in inputs:
        p = Path(item).expanduser()
        if p.is_dir():
            found.extend(
                sorted(
                    q for q in p.iterdir() if q.is_file() and q.suffix.lower() in RASTER_SUFFIXES
                )
            )
        elif p.exists():
            found.append(p)
        else:
            raise InputError(f"input {item} does not exist; check the path")
    if not found:
        raise InputError("no input scenes (give GeoTIFF files or folders holding them)")
    return found


def output_paths(inputs: Sequence[Path], out_dir: Path) -> list[Path]:
    """``OUT_DIR/<input stem>.tif`` for each input; InputError when two inputs would share an
    output or an output would replace its input."""
    seen: dict[str, Path] = {}
    outs = []
    for src in inputs:
        dst = out_dir / f"{src.stem}.tif"
        if dst.name in seen:
            raise InputError(
                f"{seen[dst.name]} and {src} would both be written to {dst}; rename one of them"
            )
        if dst.exists() and dst.resolve() == src.resolve():
            raise InputError(
                f"output {dst} would replace the input {src}; choose another --out-dir"
            )
        seen[dst.name] = src
        outs.append(dst)
    return outs


def render_many(
    inputs: Iterable[str | Path],
    out_dir: str | Path,
    model_path: str | Path | None = None,
    options: RenderOptions | None = None,
    scheduler: str | Client | None = None,
    n_workers: int | None = None,
    progress: Progress | None = None,
    watch: Watch | None = None,
    on_client: OnClient | None = None,
) -> ManyReport:
    """Render every scene of ``inputs`` into ``out_dir`` on a Dask cluster, one task per scene.

    Outputs are ``OUT_DIR/<input stem>.tif``, plus ``OUT_DIR/mosaic.vrt`` over the outputs in
    the most common CRS (:func:`build_mosaic`). Outputs that exist and are complete are skipped unless
    ``options.overwrite``. A scene whose task raises an unexpected error is retried
    (:data:`RETRIES` times; a killed worker's tasks are re-run by Dask); a scene that still fails
    is reported in the result, never left as a partial file, and does not stop the others.

    ``scheduler``: a Client, a scheduler address, or None for a local cluster of ``n_workers``.
    ``progress(done, total)`` is called as scenes finish; ``on_client(client)`` once connected
    (after every check that needs no cluster passed; the CLI prints the dashboard link) and
    ``watch(futures)`` once after submission (the CLI passes Dask's progress bar, which blocks
    until all are done).
    """
    require_dask()
    from distributed import as_completed

    from geomap_gan.model.modelfile import load_model
    from geomap_gan.rendering.engine import RenderOptions

    options = options or RenderOptions()
    t0 = time.perf_counter()
    sources = expand_inputs(inputs)
    model = str(Path(model_path).expanduser().absolute()) if model_path else None
    options.validate(load_model(model).card.tile_size)  # a bad model or option fails here, once
    out = Path(out_dir).expanduser().absolute()
    if out.exists() and not out.is_dir():
        raise OutputError(f"--out-dir {out} is a file; give a folder")
    out.mkdir(parents=True, exist_ok=True)
    dsts = output_paths(sources, out)

    results: dict[int, SceneResult] = {}
    todo: list[int] = []
    for i, (src, dst) in enumerate(zip(sources, dsts, strict=True)):
        existing = existing_output(str(src), dst, options.overwrite)
        if existing is not None:
            results[i] = existing
        else:
            todo.append(i)
    log.info("%d scene(s): %d to render, %d already done", len(sources), len(todo), len(results))

    with connect(scheduler, n_workers) as client:
        if on_client is not None:
            on_client(client)
        workers = len(client.scheduler_info(n_workers=-1)["workers"])
        hosts = _workers_per_host(client)
        run = uuid.uuid4().hex[:8]
        futures = {
            client.submit(
                render_scene_task,
                str(sources[i].absolute()),
                str(dsts[i]),
                model,
                options,
                hosts,
                key=f"render-{sources[i].stem}-{run}",
                retries=RETRIES,
                pure=False,
            ): i
            for i in todo
        }
        if watch is not None and futures:
            watch(list(futures))
        done = len(results)
        if progress is not None:
            progress(done, len(sources))
        for fut in as_completed(list(futures)):
            i = futures.pop(fut)  # drop our reference: the scheduler forgets the result
            results[i] = _collect(fut, sources[i], dsts[i])
            del fut
            done += 1
            if progress is not None:
                progress(done, len(sources))
    with contextlib.suppress(OSError):
        (out / STAGING_DIR).rmdir()  # empty unless another run is still going
    scenes = tuple(results[i] for i in range(len(sources)))
    for s in scenes:
        if s.status == "failed":
            log.info("%s failed: %s", s.src, s.error)  # the report carries it to the caller
    mosaic, excluded = build_mosaic(
        [Path(s.dst) for s in scenes if s.status != "failed"], out / MOSAIC_NAME
    )
    return ManyReport(out, scenes, mosaic, excluded, time.perf_counter() - t0, workers)


def _collect(fut: Future, src: Path, dst: Path) -> SceneResult:
    """A finished future's result; an error that survived the retries becomes a failed scene."""
    if fut.status == "error":
        exc = fut.exception()
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        return SceneResult(str(src), str(dst), "failed", error=f"{type(exc).__name__}: {first}")
    return fut.result()


# ---- mosaic --------------------------------------------------------------------------------------
def build_mosaic(paths: Sequence[Path], vrt: Path) -> tuple[Path | None, tuple[str, ...]]:
    """Write ``vrt`` over the outputs in ``paths`` that share the most common CRS (ties: the
    first output's); returns the VRT (None when there is nothing to mosaic) and the outputs left
    out (another CRS: a VRT mosaic cannot mix CRSs without warping, which would change pixels).
    """
    import rasterio

    if not paths:
        return None, ()
    crss = []
    for p in paths:
        with rasterio.open(p) as ds:
            crss.append(ds.crs)
    crs = max(crss, key=lambda c: (sum(c == d for d in crss), -crss.index(c)))
    same = [p for p, c in zip(paths, crss, strict=True) if c == crs]
    other = [p for p, c in zip(paths, crss, strict=True) if c != crs]
    if other:
        log.info(
            "%s covers the %d output(s) in %s; left out (another CRS): %s",
            vrt.name,
            len(same),
            crs,
            ", ".join(p.name for p in other),
        )
    write_vrt(same, vrt)
    return vrt, tuple(str(p) for p in other)


_INTERP = ("Red", "Green", "Blue")


def write_vrt(paths: Sequence[Path], vrt: Path) -> Path:
    """Write a GDAL VRT mosaic over same-CRS RGB(A) rasters: 3 colour bands plus an alpha band
    built from each source's mask (alpha band, internal mask or nodata), at the finest
    resolution of the sources, file names relative to the VRT. Where sources overlap, a later
    one covers an earlier one only where its mask says it is valid (``UseMaskBand``, GDAL 3.3+;
    the alpha sources treat 0 as nodata), so nodata collars do not punch holes into neighbours.
    Written atomically."""
    import rasterio

    infos = []
    for p in paths:
        with rasterio.open(p) as ds:
            infos.append((p, ds.width, ds.height, ds.transform, ds.crs, ds.block_shapes[0]))
    rx = min(abs(t.a) for *_, t, _c, _b in infos)
    ry = min(abs(t.e) for *_, t, _c, _b in infos)
    left = min(t.c for *_, t, _c, _b in infos)
    top = max(t.f for *_, t, _c, _b in infos)
    right = max(t.c + w * abs(t.a) for _p, w, _h, t, _c, _b in infos)
    bottom = min(t.f - h * abs(t.e) for _p, _w, h, t, _c, _b in infos)
    width, height = round((right - left) / rx), round((top - bottom) / ry)
    crs = infos[0][4]
    lines = [f'<VRTDataset rasterXSize="{width}" rasterYSize="{height}">']
    if crs is not None:
        lines.append(f'  <SRS dataAxisToSRSAxisMapping="1,2">{escape(crs.to_wkt())}</SRS>')
    lines.append(f"  <GeoTransform>{left!r}, {rx!r}, 0.0, {top!r}, 0.0, {-ry!r}</GeoTransform>")
    for band, interp in enumerate((*_INTERP, "Alpha"), start=1):
        lines.append(f'  <VRTRasterBand dataType="Byte" band="{band}">')
        lines.append(f"    <ColorInterp>{interp}</ColorInterp>")
        for p, w, h, t, _c, (by, bx) in infos:
            rel = os.path.relpath(p.absolute(), vrt.absolute().parent)
            source_band = str(band) if band <= 3 else "mask,1"
            x0, y0 = (t.c - left) / rx, (top - t.f) / ry
            xs, ys = w * abs(t.a) / rx, h * abs(t.e) / ry
            lines += [
                "    <ComplexSource>",
                f'      <SourceFilename relativeToVRT="1">{escape(rel)}</SourceFilename>',
                f"      <SourceBand>{source_band}</SourceBand>",
                f'      <SourceProperties RasterXSize="{w}" RasterYSize="{h}" DataType="Byte" '
                f'BlockXSize="{bx}" BlockYSize="{by}"/>',
                f'      <SrcRect xOff="0" yOff="0" xSize="{w}" ySize="{h}"/>',
                f'      <DstRect xOff="{x0!r}" yOff="{y0!r}" xSize="{xs!r}" ySize="{ys!r}"/>',
                # colour: keep earlier sources where this one is masked; alpha: never lower it
                "      <UseMaskBand>true</UseMaskBand>"
                if band <= 3
                else "      <NODATA>0</NODATA>",
                "    </ComplexSource>",
            ]
        lines.append("  </VRTRasterBand>")
    lines.append("</VRTDataset>")
    with files.atomic_output(vrt) as tmp:
        tmp.write_text("\n".join(lines) + "\n")
    return vrt


# ---- one huge scene in strips --------------------------------------------------------------------
def render_strips(
    src: str | Path,
    dst: str | Path,
    model_path: str | Path | None = None,
    options: RenderOptions | None = None,
    scheduler: str | Client | None = None,
    n_strips: int | None = None,
    n_workers: int | None = None,
    progress: Progress | None = None,
    watch: Watch | None = None,
    on_client: OnClient | None = None,
) -> StripsReport:
    """Render one (huge) scene on a Dask cluster as ``n_strips`` horizontal strips (default: one
    per worker) and assemble them into ``dst``, equal to a single-machine render.

    Strips cover whole window rows (:meth:`geomap_gan.rendering.engine.RenderPlan.strips`), each rendered by a worker with
    ``EngineSettings.row_range`` into its own GeoTIFF in a scratch folder beside ``dst``; the client
    then copies them, block row by block row, into ``dst`` (GTiff, or COG through the engine's COG
    copy), which appears only when complete. When ``dst`` ends in ``.vrt`` the strips are kept in
    ``<dst stem>_strips/`` and ``dst`` is a VRT over them (no copy: fastest for huge scenes).
    ``progress``, ``watch`` and ``on_client`` as in :func:`render_many`, counting strips.
    """
    from geomap_gan.model.modelfile import load_model
    from geomap_gan.rendering.engine import RenderOptions, plan_render

    require_dask()
    options = options or RenderOptions()
    t0 = time.perf_counter()
    if options.output_res != "model":
        raise InputError(
            "strip rendering writes at the model's GSD; leave out --output-res native "
            "(or render without --strips)"
        )
    dst_path = files.check_output(dst, options.overwrite, [src])
    as_vrt = dst_path.suffix.lower() == ".vrt"
    model = str(Path(model_path).expanduser().absolute()) if model_path else None
    card = load_model(model).card  # a bad model file fails here, before any worker starts
    plan = plan_render(src, card, options)
    if as_vrt:
        folder = dst_path.with_name(f"{dst_path.stem}_strips")
        if folder.exists() and not options.overwrite:
            raise OutputExistsError(f"{folder} exists; pass --overwrite to replace it")
        shutil.rmtree(folder, ignore_errors=True)
    else:
        folder = dst_path.parent / f".{dst_path.name}.strips-{uuid.uuid4().hex[:8]}"
    folder.mkdir()
    ok = False
    try:
        with connect(scheduler, n_workers) as client:
            if on_client is not None:
                on_client(client)
            workers = len(client.scheduler_info(n_workers=-1)["workers"])
            strips = plan.strips(n_strips or max(1, workers))
            strip_opts = dataclasses.replace(options, overwrite=True)
            if not as_vrt:  # intermediates: the engine's default GeoTIFF; --co applies to dst
                strip_opts = dataclasses.replace(strip_opts, driver="GTiff", creation_options={})
            hosts = _workers_per_host(client)
            src_abs = str(Path(src).expanduser().absolute())
            futures = [
                client.submit(
                    render_strip_task,
                    src_abs,
                    str(folder / f"strip_{k:04d}.tif"),
                    model,
                    strip_opts,
                    hosts,
                    rows,
                    key=f"strip-{k}-{folder.name}",
                    retries=RETRIES,
                    pure=False,
                )
                for k, rows in enumerate(strips)
            ]
            if watch is not None:
                watch(futures)
            seconds = _gather_strips(futures, progress)
        paths = [folder / f"strip_{k:04d}.tif" for k in range(len(strips))]
        t_assemble = time.perf_counter()
        if as_vrt:
            write_vrt(paths, dst_path)
        else:
            assemble_strips(paths, strips, dst_path, options)
        assemble_seconds = time.perf_counter() - t_assemble
        ok = True
    finally:
        if not (ok and as_vrt):
            shutil.rmtree(folder, ignore_errors=True)
    return StripsReport(
        dst_path,
        plan.width,
        plan.height,
        tuple(strips),
        tuple(seconds),
        assemble_seconds,
        time.perf_counter() - t0,
        workers,
    )


def _gather_strips(futures: list[Future], progress: Progress | None) -> list[float]:
    """Worker seconds per strip, in order; the first strip that failed for good raises (a
    GeomapGanError as itself, anything else as an OutputError naming the strip)."""
    from distributed import as_completed

    seconds = [0.0] * len(futures)
    index = {f.key: k for k, f in enumerate(futures)}
    for done, fut in enumerate(as_completed(futures), start=1):
        k = index[fut.key]
        if fut.status == "error":
            exc = fut.exception()
            for other in futures:
                other.cancel()
            if isinstance(exc, GeomapGanError):
                raise exc
            raise OutputError(f"strip {k} failed on its worker after {RETRIES} retries: {exc!r}")
        seconds[k] = fut.result()[1]
        if progress is not None:
            progress(done, len(futures))
    return seconds


def assemble_strips(
    paths: Sequence[Path], strips: Sequence[tuple[int, int]], dst: Path, options: RenderOptions
) -> Path:
    """Copy strip files (rows ``strips[k]`` of the output each) into one output at ``dst``,
    whole block rows at a time (the engine's BlockRowWriter), then into a COG when asked; ``dst``
    appears only when complete."""
    import numpy as np
    import rasterio
    from rasterio.windows import Window

    from geomap_gan.rendering import output

    with rasterio.open(paths[0]) as first:
        alpha = first.count == 4
        grid = Grid(first.width, strips[-1][1], first.transform, first.crs)
    co = options.creation_options if options.driver == "GTiff" else {}
    with files.atomic_output(dst, options.overwrite) as tmp:
        target = tmp if options.driver == "GTiff" else files.temp_path(dst, "strips")
        try:
            out = output.create_output(target, grid, alpha, co)
            try:
                writer = output.BlockRowWriter(out)
                step = writer.block
                for path, (r0, r1) in zip(paths, strips, strict=True):
                    with rasterio.open(path) as s:
                        if (s.width, s.height) != (grid.width, r1 - r0):
                            raise OutputError(
                                f"strip {path.name} is {s.width}x{s.height} px, expected "
                                f"{grid.width}x{r1 - r0}; the engine's row_range is inconsistent"
                            )
                        for y in range(0, s.height, step):
                            win = Window(0, y, s.width, min(step, s.height - y))
                            rgb = s.read([1, 2, 3], window=win)
                            valid = (
                                s.read(4, window=win) > 0
                                if alpha
                                else np.ones(rgb.shape[1:], dtype=bool)
                            )
                            writer.add(r0 + y, rgb, valid)
                writer.close()
            finally:
                out.close()
            if options.driver == "COG":
                tmp.unlink()
                output.to_cog(target, tmp, options.creation_options)
        finally:
            if target != tmp:
                with contextlib.suppress(FileNotFoundError):
                    target.unlink()
    return dst
