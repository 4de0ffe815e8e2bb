"""Scale-out rendering on Dask distributed: many scenes, or one huge scene in strips.

Both entry points are thin layers over :func:`geomap_gan.rendering.engine.render`; Dask does the
scheduling, retrying and worker bookkeeping (no home-made scheduler):

- :func:`render_many` submits one task per scene. Outputs land side by side in one folder, plus a
  ``mosaic.vrt`` over them. Re-running skips outputs that exist and are complete, so a crashed
  job resumes where it stopped.
- :func:`render_strips` splits one huge scene into horizontal strips of whole window rows
  (``EngineSettings.row_range``), renders each strip on a worker into its own file and assembles
  them on the client into one output equal to a single-machine render.

Both check every output before any work with the one output-safety check (``files``): never an
input or a file GDAL reads for one, the suffix of its format, nothing replaced without
``overwrite``. Their scratch folders (a staging folder per ``render-many`` run, a strips folder
per ``render --strips`` run) have names unique to the run and hold the tool's marker, so two
runs into one folder do not meet, an interrupted run removes its own, and a later run removes
what a killed one left, never a folder the user made.

Where things run: the inputs, the model file and the output folder must be reachable under the
same paths from the client and from every worker (one machine, or a shared file system such as
NFS). Each worker process loads the model once and keeps it (:mod:`geomap_gan.cluster`), and
uses its GPU when it has one. The VRT and the strip assembly live in :mod:`geomap_gan.mosaic`.

Dask is imported only inside functions, so importing this module stays cheap and the rest of
geomap_gan works without the ``distributed`` extra.
"""

from __future__ import annotations

import dataclasses
import logging
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from geomap_gan import files, formats
from geomap_gan.cluster import (  # noqa: F401 (the public names of scale-out live here too)
    ManyReport,
    SceneResult,
    SceneStatus,
    StripsReport,
    configure_threads,
    connect,
    dashboard_link,
    default_workers,
    existing_output,
    has_bokeh,
    is_complete,
    render_scene_task,
    render_strip_task,
    require_dask,
    vector_path,
    worker_device,
    worker_model,
    workers_per_host,
)
from geomap_gan.errors import GeomapGanError, InputError, OutputError
from geomap_gan.mosaic import (  # noqa: F401 (re-exported)
    MOSAIC_NAME,
    assemble_strips,
    build_mosaic,
    check_mosaic,
    publish_strips,
    write_vrt,
)

if TYPE_CHECKING:
    from distributed import Client, Future

    from geomap_gan.rendering.engine import RenderPlan
    from geomap_gan.rendering.options import RenderOptions
    from geomap_gan.vector.options import VectorizeOptions

log = logging.getLogger(__name__)

STAGING_DIR = "geomap-gan-partial"  # OUT_DIR/.geomap-gan-partial.<run>.tmp/<scene>/ in flight
RETRIES = 2  # further attempts of a task that raised an unexpected error (not a user error)
RASTER_SUFFIXES = formats.GTIFF.suffixes  # what a folder given as input contributes
MAX_STRIPS = 100_000

Progress = Callable[[int, int], None]
Watch = Callable[[list["Future"]], None]
OnClient = Callable[["Client"], None]


# ---- many scenes ---------------------------------------------------------------------------------
def expand_inputs(inputs: Iterable[str | Path]) -> list[Path]:
    """Input paths in order, a folder contributing its ``*.tif``/``*.tiff`` files (sorted);
    InputError for a path that does not exist, is not a regular file (a FIFO, a device), or an
    empty list."""
    found: list[Path] = []
    for item in inputs:
        p = Path(item).expanduser()
        if p.is_dir():
            found.extend(
                sorted(
                    q
                    for q in p.iterdir()
                    if q.is_file() and q.name.lower().endswith(RASTER_SUFFIXES)
                )
            )
        else:
            files.check_input(p)
            found.append(p)
    if not found:
        raise InputError("no input scenes (give GeoTIFF files or folders holding them)")
    return found


def output_paths(
    inputs: Sequence[Path], out_dir: Path, input_files: files.InputFiles | None = None
) -> list[Path]:
    """``OUT_DIR/<input stem>.tif`` for each input; InputError when two inputs would share an
    output, OutputError when an output would be an input or a file GDAL reads for one
    (``input_files``: a VRT's sources, sidecars)."""
    seen: dict[str, Path] = {}
    outs = []
    for src in inputs:
        dst = out_dir / f"{src.stem}{RASTER_SUFFIXES[0]}"
        if dst.name in seen:
            raise InputError(
                f"{seen[dst.name]} and {src} would both be written to {dst}; rename one of them"
            )
        files.check_not_input(dst, input_files or files.InputFiles([src]))
        seen[dst.name] = src
        outs.append(dst)
    return outs


@dataclass(frozen=True)
class _ManyJob:
    """What :func:`render_many` decided before connecting to the cluster."""

    sources: list[Path]
    dsts: list[Path]
    out: Path
    mosaic: Path
    model: str | None
    vectors: VectorizeOptions | None = None


def check_vector_outputs(
    dsts: Sequence[Path],
    vectors: VectorizeOptions,
    overwrite: bool,
    input_files: files.InputFiles,
) -> None:
    """Before any work: each scene's vector file (:func:`vector_path`) is no input, and, without
    ``overwrite``, is not there unless its map is complete too (the scene is then skipped: an
    earlier run finished both). A vector file without its map is the user's: refused."""
    from geomap_gan.vector import check_outputs

    for dst in dsts:
        vdst = vector_path(dst)
        files.check_not_input(vdst, input_files)
        if not dst.parent.is_dir():
            continue  # a new --out-dir: nothing in it yet
        done = not overwrite and vdst.exists() and is_complete(dst)
        check_outputs(vdst, vectors.classes, overwrite or done, input_files)


def _prepare_many(
    inputs: Iterable[str | Path],
    out_dir: str | Path,
    model_path: str | Path | None,
    options: RenderOptions,
    vectors: VectorizeOptions | None = None,
) -> _ManyJob:
    """Every check that needs no cluster: inputs, model, options, every output (and vector
    file) and the mosaic."""
    from geomap_gan.model.modelfile import load_model
    from geomap_gan.rendering.output import check_creation_options

    sources = expand_inputs(inputs)
    model = str(Path(model_path).expanduser().absolute()) if model_path else None
    options.validate(load_model(model).card.tile_size)  # a bad model or option fails here, once
    check_creation_options(options.driver, options.creation_options)
    out = Path(out_dir).expanduser().absolute()
    if out.exists() and not out.is_dir():
        raise OutputError(f"--out-dir {out} is a file; give a folder")
    input_files = files.InputFiles(f for s in sources for f in files.gdal_files(s))
    dsts = output_paths(sources, out, input_files)
    mosaic = out / MOSAIC_NAME
    if out.is_dir():
        check_mosaic(mosaic, options.overwrite, input_files)
    if vectors is not None:
        check_vector_outputs(dsts, vectors, options.overwrite, input_files)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"cannot create --out-dir {out} ({exc.strerror})") from exc
    return _ManyJob(sources, dsts, out, mosaic, model, vectors)


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
    vectors: VectorizeOptions | None = None,
) -> ManyReport:
    """Render every scene of ``inputs`` into ``out_dir`` on a Dask cluster, one task per scene.

    Outputs are ``OUT_DIR/<input stem>.tif``, plus ``OUT_DIR/mosaic.vrt`` over the outputs in
    the most common CRS (:func:`build_mosaic`; a mosaic.vrt that this tool did not write is
    replaced only with ``overwrite``). Outputs that exist and are complete are skipped unless
    ``options.overwrite``. A scene whose task raises an unexpected error is retried
    (:data:`RETRIES` times; a killed worker's tasks are re-run by Dask); a scene that still fails
    is reported in the result, never left as a partial file, and does not stop the others.

    ``scheduler``: a Client, a scheduler address, or None for a local cluster of ``n_workers``.
    ``progress(done, total)`` is called as scenes finish; ``on_client(client)`` once connected
    (after every check that needs no cluster passed; the CLI prints the dashboard link) and
    ``watch(futures)`` once after submission (the CLI passes Dask's progress bar, which blocks
    until all are done).

    ``vectors``: also vectorize each map, in its scene's task, into ``OUT_DIR/<scene>.gpkg``
    (:func:`geomap_gan.cluster.vector_path`), checked before any work like the maps.
    """
    from geomap_gan.rendering.options import RenderOptions

    require_dask()
    options = options or RenderOptions()
    t0 = time.perf_counter()
    job = _prepare_many(inputs, out_dir, model_path, options, vectors)
    results: dict[int, SceneResult] = {}
    todo: list[int] = []
    for i, (src, dst) in enumerate(zip(job.sources, job.dsts, strict=True)):
        existing = existing_output(str(src), dst, options.overwrite, vectors is not None)
        if existing is not None:
            results[i] = existing
        else:
            todo.append(i)
    log.info("%d scene(s): %d to render, %d already done", len(job.sources), len(todo),
             len(results))  # fmt: skip
    # the staging folder outlives the cluster: a local cluster's workers stop before it goes
    with (
        files.scratch(job.out / STAGING_DIR, "run") as stage,
        connect(scheduler, n_workers) as client,
    ):
        if on_client is not None:
            on_client(client)
        workers = len(client.scheduler_info(n_workers=-1)["workers"])
        _run_scenes(client, job, options, stage, todo, results, (progress, watch))
    scenes = tuple(results[i] for i in range(len(job.sources)))
    for s in scenes:
        if s.status == "failed":
            log.info("%s failed: %s", s.src, s.error)  # the report carries it to the caller
    done = [Path(s.dst) for s in scenes if s.status != "failed"]
    mosaic, excluded = build_mosaic(done, job.mosaic, overwrite=True)  # checked in _prepare_many
    return ManyReport(job.out, scenes, mosaic, excluded, time.perf_counter() - t0, workers)


def _run_scenes(
    client: Client,
    job: _ManyJob,
    options: RenderOptions,
    stage: Path,
    todo: list[int],
    results: dict[int, SceneResult],
    hooks: tuple[Progress | None, Watch | None],
) -> None:
    """Submit the scenes ``todo`` and collect their results into ``results`` as they finish."""
    from distributed import as_completed

    progress, watch = hooks
    hosts = workers_per_host(client)
    run = uuid.uuid4().hex[:8]
    futures = {
        client.submit(
            render_scene_task,
            str(job.sources[i].absolute()),
            str(job.dsts[i]),
            str(stage),
            job.model,
            options,
            hosts,
            job.vectors,
            key=f"render-{job.sources[i].stem}-{run}",
            retries=RETRIES,
            pure=False,
        ): i
        for i in todo
    }
    if watch is not None and futures:
        watch(list(futures))
    done, total = len(results), len(job.sources)
    if progress is not None:
        progress(done, total)
    for fut in as_completed(list(futures)):
        i = futures.pop(fut)  # drop our reference: the scheduler forgets the result
        results[i] = _collect(fut, job.sources[i], job.dsts[i])
        del fut
        done += 1
        if progress is not None:
            progress(done, total)


def _collect(fut: Future, src: Path, dst: Path) -> SceneResult:
    """A finished future's result; an error that survived the retries becomes a failed scene."""
    if fut.status == "error":
        exc = fut.exception()
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        return SceneResult(str(src), str(dst), "failed", error=f"{type(exc).__name__}: {first}")
    return fut.result()


# ---- one huge scene in strips --------------------------------------------------------------------
@dataclass(frozen=True)
class _StripsJob:
    """What :func:`render_strips` decided before connecting to the cluster."""

    src: str
    dst: Path
    folder: Path | None  # the strips folder a VRT output points into, or None
    model: str | None
    plan: RenderPlan


def _prepare_strips(
    src: str | Path, dst: str | Path, model_path: str | Path | None, options: RenderOptions
) -> _StripsJob:
    """The checks of a plain ``render`` (input, output, suffix, creation options) and those of
    the strips folder a ``.vrt`` output points into, before any worker starts."""
    from geomap_gan.model.modelfile import load_model
    from geomap_gan.rendering.engine import plan_render
    from geomap_gan.rendering.output import check_creation_options

    if options.output_res != "model":
        raise InputError(
            "strip rendering writes at the model's GSD; leave out --output-res native "
            "(or render without --strips)"
        )
    inputs = files.gdal_files(src)
    as_vrt = str(dst).lower().endswith(formats.VRT.suffixes)
    fmt = formats.VRT if as_vrt else formats.render_format(options.driver)
    dst_path = files.check_output(dst, options.overwrite, inputs, fmt)
    check_creation_options(options.driver, options.creation_options)
    folder = None
    if as_vrt:
        folder = dst_path.with_name(f"{dst_path.stem}_strips")
        files.check_output_folder(folder, options.overwrite, inputs)
        files.remove_stale(folder)  # what a run killed while swapping folders left
    model = str(Path(model_path).expanduser().absolute()) if model_path else None
    card = load_model(model).card  # a bad model file fails here, before any worker starts
    src_abs = str(src) if files.is_virtual(src) else str(Path(src).expanduser().absolute())
    return _StripsJob(src_abs, dst_path, folder, model, plan_render(src, card, options))


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

    Strips cover whole window rows (:meth:`geomap_gan.rendering.engine.RenderPlan.strips`), each
    rendered by a worker with ``EngineSettings.row_range`` into its own GeoTIFF in a scratch
    folder beside ``dst`` (unique to this run, with the tool's marker); the client then copies
    them, block row by block row, into ``dst`` (or into a format with a copy step, COG), which
    appears only when complete. When ``dst`` ends in ``.vrt`` the strips are kept in
    ``<dst stem>_strips/`` and ``dst`` is a VRT over them (no copy: fastest for huge scenes);
    an existing such folder is replaced only with ``overwrite`` and only if this tool made it.
    ``progress``, ``watch`` and ``on_client`` as in :func:`render_many`, counting strips.
    """
    from geomap_gan.rendering.options import RenderOptions

    require_dask()
    options = options or RenderOptions()
    if n_strips is not None and not 1 <= n_strips <= MAX_STRIPS:
        raise InputError(f"--strips must be 1 to {MAX_STRIPS}, got {n_strips}")
    t0 = time.perf_counter()
    job = _prepare_strips(src, dst, model_path, options)
    with files.scratch(job.dst, "strips") as work:
        with connect(scheduler, n_workers) as client:
            if on_client is not None:
                on_client(client)
            workers = len(client.scheduler_info(n_workers=-1)["workers"])
            strips = job.plan.strips(n_strips or max(1, workers))
            futures = _submit_strips(client, job, options, work, strips)
            if watch is not None:
                watch(futures)
            seconds = _gather_strips(futures, progress)
        t_assemble = time.perf_counter()
        if job.folder is not None:
            publish_strips(work, job.folder, job.dst, options.overwrite)
        else:
            paths = [work / f"strip_{k:04d}.tif" for k in range(len(strips))]
            assemble_strips(paths, strips, job.dst, options)
        assemble_seconds = time.perf_counter() - t_assemble
    return StripsReport(
        job.dst,
        job.plan.width,
        job.plan.height,
        tuple(strips),
        tuple(seconds),
        assemble_seconds,
        time.perf_counter() - t0,
        workers,
    )


def _submit_strips(
    client: Client,
    job: _StripsJob,
    options: RenderOptions,
    work: Path,
    strips: Sequence[tuple[int, int]],
) -> list[Future]:
    """One task per strip, each writing ``work/strip_NNNN.tif``."""
    strip_opts = dataclasses.replace(options, overwrite=True)
    if job.folder is None:  # intermediates: the engine's default GeoTIFF; --co applies to dst
        strip_opts = dataclasses.replace(
            strip_opts, driver=formats.INTERMEDIATE.name, creation_options={}
        )
    hosts = workers_per_host(client)
    return [
        client.submit(
            render_strip_task,
            job.src,
            str(work / f"strip_{k:04d}.tif"),
            job.model,
            strip_opts,
            hosts,
            rows,
            key=f"strip-{k}-{work.name}",
            retries=RETRIES,
            pure=False,
        )
        for k, rows in enumerate(strips)
    ]


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
