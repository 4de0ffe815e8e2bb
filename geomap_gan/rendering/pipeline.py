"""read -> infer -> blend -> write for one panel of a render: a reader thread, the model in the
calling thread, a writer thread, bounded queues between them, so memory is bounded by the window
rows in flight and the device never waits on GDAL."""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from geomap_gan.errors import RenderCancelled
from geomap_gan.rendering.blend import StripAccumulator
from geomap_gan.rendering.inference import TileRunner
from geomap_gan.rendering.options import Cancel, Progress, RenderOptions
from geomap_gan.rendering.windows import AoiFilter, TileGrid, TileWindow, panel_columns

log = logging.getLogger(__name__)


class RegionSource(Protocol):
    """What the reader thread reads from (reader.RegionReader; a benchmark's in-memory scene)."""

    def read(self, x: int, y: int, width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
        """(3, height, width) uint8 RGB and the (height, width) bool validity of a region."""
        ...


class StripSink(Protocol):
    """What the writer thread writes to (output.BlockRowWriter; a benchmark's no-op writer)."""

    def add(self, y: int, rgb: np.ndarray, valid: np.ndarray) -> None: ...

    def close(self) -> None: ...


_END = object()  # end-of-stream marker in the queues


_POLL_S = 0.1  # seconds between checks of the stop flag while a queue is full or empty
_START_S = 1.0  # seconds a started worker thread may take to begin running


@dataclass
class _Item:
    """One window from the reader: its tile and mask, or None when skipped."""

    window: TileWindow
    tile: np.ndarray | None = None  # (3, T, T) uint8
    valid: np.ndarray | None = None  # (T, T) bool


class _Worker(threading.Thread):
    """A daemon thread that keeps the exception that ended it, for the main thread to re-raise."""

    def __init__(self, target: Callable[[], None], name: str) -> None:
        super().__init__(name=name, daemon=True)
        self._fn = target
        self.error: BaseException | None = None
        self.launched = False  # start() was called (the thread may not have run yet)

    def start(self) -> None:
        self.launched = True
        super().start()

    def run(self) -> None:
        try:
            self._fn()
        except BaseException as exc:  # handed to the main thread
            self.error = exc


def _join(worker: _Worker) -> None:
    """Wait for a worker that was started, through a second Ctrl-C or SIGTERM too.

    Why: a worker still reading or writing when the interpreter exits crashes it (SIGSEGV in
    GDAL's or torch's finalisers, seen when SIGTERM arrived while the writer thread started).
    A worker whose start() was interrupted may not have run yet: it gets _START_S to begin.
    """
    deadline = time.monotonic() + _START_S
    while worker.launched and worker.ident is None and time.monotonic() < deadline:
        time.sleep(0.001)
    while worker.ident is not None:
        try:
            worker.join()
            return
        except KeyboardInterrupt:  # the first interrupt is already on its way up
            continue
        except RuntimeError:  # started, but not yet flagged as started
            time.sleep(0.001)


def _put(q: queue.Queue, item: object, stop: threading.Event) -> bool:
    """Put, waiting while the queue is full; False if ``stop`` was set meanwhile."""
    while not stop.is_set():
        try:
            q.put(item, timeout=_POLL_S)
            return True
        except queue.Full:
            continue
    return False


def _put_checked(q: queue.Queue, item: object, consumer: _Worker) -> None:
    """Put, waiting while the queue is full; re-raises the consumer's error if it died."""
    while True:
        try:
            q.put(item, timeout=_POLL_S)
            return
        except queue.Full:
            if consumer.error is not None:
                raise consumer.error from None
            if not consumer.is_alive():
                raise RuntimeError(f"{consumer.name} thread ended without finishing") from None


def _get(q: queue.Queue, worker: _Worker) -> object:
    """Get, waiting while the queue is empty; re-raises the producer's error if it died."""
    while True:
        try:
            return q.get(timeout=_POLL_S)
        except queue.Empty:
            if worker.error is not None:
                raise worker.error from None
            if not worker.is_alive():
                raise RuntimeError(f"{worker.name} thread ended without finishing") from None


def _read_windows(
    reader: RegionSource,
    tiles: TileGrid,
    rows: range,
    cols: range,
    aoi: AoiFilter | None,
    out: queue.Queue,
    stop: threading.Event,
) -> None:
    """Reader thread: the windows of grid rows ``rows`` and columns ``cols`` in row-major order,
    each as a tile or a skip marker. The wanted windows of a row are read as one region (one
    GDAL read per window row; the tiles are views into it)."""
    size = tiles.tile
    busy = 0.0
    for r in rows:
        y = tiles.ys[r]
        row = [TileWindow(tiles.xs[c], y, size, r, c) for c in cols]
        wanted = [aoi is None or aoi.touches(w, tiles.width, tiles.height) for w in row]
        region = None
        if any(wanted):
            first = row[wanted.index(True)]
            last = row[len(wanted) - 1 - wanted[::-1].index(True)]
            t0 = time.thread_time()
            region = (first.x, reader.read(first.x, y, last.x + size - first.x, size))
            busy += time.thread_time() - t0
        for w, want in zip(row, wanted, strict=True):
            item = _Item(w)
            if want and region is not None:
                x0, (rgb, valid) = region
                v = valid[:, w.x - x0 : w.x - x0 + size]
                if v.any():
                    item = _Item(w, rgb[:, :, w.x - x0 : w.x - x0 + size], v)
            if not _put(out, item, stop):
                return
    log.debug("reader thread: reading %.1f s CPU", busy)
    _put(out, _END, stop)


def _write_strips(writer: StripSink, strips: queue.Queue, stop: threading.Event) -> None:
    """Writer thread: strips until the end marker, then the last partial block row (unless the
    render was stopped, when the file is discarded anyway)."""
    busy = 0.0
    while True:
        try:
            strip = strips.get(timeout=_POLL_S)
        except queue.Empty:
            if stop.is_set():  # the render failed or was cancelled: the file is discarded
                return
            continue
        if strip is _END:
            break
        t0 = time.thread_time()
        writer.add(strip.y, strip.rgb, strip.valid)
        busy += time.thread_time() - t0
    if not stop.is_set():
        writer.close()
    log.debug("writer thread: writing %.1f s CPU", busy)


class ProgressCounter:
    """Windows done across panels, reported as ``progress(done, total)``; checks ``cancel``."""

    def __init__(self, total: int, progress: Progress | None, cancel: Cancel | None) -> None:
        """Reports (0, total) at once: a bar then starts its clock when the windows start, and a
        one-window render ends at its real rate, not at thousands of windows a second."""
        self.total, self.done = total, 0
        self.progress, self.cancel = progress, cancel
        if progress is not None:
            progress(0, total)

    def add(self, n: int) -> None:
        self.done += n
        if self.progress is not None:
            self.progress(self.done, self.total)
        if self.cancel is not None and self.cancel():
            raise RenderCancelled("render cancelled; no output was written")


class _Batches:
    """Runs batches of windows through the model, blends them into strips, and hands each
    finished strip to the writer thread; counts windows and the main thread's time per stage."""

    def __init__(
        self,
        model: TileRunner,
        acc: StripAccumulator,
        last_col: int,
        strips: queue.Queue,
        write_thread: _Worker,
        counter: ProgressCounter,
        clock: dict[str, float],
    ) -> None:
        self.model, self.acc, self.last_col = model, acc, last_col
        self.strips, self.write_thread = strips, write_thread
        self.counter, self.clock = counter, clock
        self.done = self.rendered = 0

    def flush(self, pending: list[_Item]) -> None:
        """Run ``pending`` (windows with pixels, and skipped ones that still close a row)."""
        real = [it for it in pending if it.tile is not None]
        t0 = time.perf_counter()
        out = (
            self.model(np.stack([it.tile for it in real if it.tile is not None])) if real else None
        )
        t1 = time.perf_counter()
        if self.done == 0:
            log.debug("first batch (includes any compiling): %.2f s", t1 - t0)
        self.clock["model"] += t1 - t0
        k = 0
        for it in pending:
            if it.tile is not None:
                self.acc.add(it.window, out[k], it.valid)  # type: ignore[index]
                k += 1
            if it.window.col == self.last_col:
                strip = self.acc.finish_row(it.window.row)
                if strip is not None:
                    t2 = time.perf_counter()
                    _put_checked(self.strips, strip, self.write_thread)
                    self.clock["waiting for writes"] += time.perf_counter() - t2
        self.clock["blending"] += time.perf_counter() - t1
        self.rendered += k
        self.done += len(pending)
        self.counter.add(len(pending))


def run_tiles(
    model: TileRunner,
    reader: RegionSource,
    writer: StripSink,
    tiles: TileGrid,
    rows: range,
    panel: tuple[int, int],
    aoi: AoiFilter | None,
    options: RenderOptions,
    counter: ProgressCounter,
    prefetch: int = 3,
) -> tuple[int, int]:
    """Render the windows of grid rows ``rows`` that touch raster columns ``panel`` into
    ``writer``; returns (windows rendered, windows skipped)."""
    cols = panel_columns(tiles, *panel)
    acc = StripAccumulator(tiles, first_row=rows[0], cols=panel)
    stop = threading.Event()
    items: queue.Queue = queue.Queue(maxsize=options.batch_size * max(1, prefetch))
    strips: queue.Queue = queue.Queue(maxsize=2)
    read_thread = _Worker(
        lambda: _read_windows(reader, tiles, rows, cols, aoi, items, stop),
        "reader",
    )
    write_thread = _Worker(lambda: _write_strips(writer, strips, stop), "writer")
    clock = dict.fromkeys(("waiting for reads", "model", "blending", "waiting for writes"), 0.0)
    batches = _Batches(model, acc, cols[-1], strips, write_thread, counter, clock)
    try:
        read_thread.start()  # inside the try: a signal while the writer starts stops the reader
        write_thread.start()
        pending: list[_Item] = []
        n_real = 0
        while True:
            t0 = time.perf_counter()
            item = _get(items, read_thread)
            clock["waiting for reads"] += time.perf_counter() - t0
            if item is _END:
                break
            assert isinstance(item, _Item)
            pending.append(item)
            n_real += item.tile is not None
            if n_real >= options.batch_size or len(pending) >= 8 * options.batch_size:
                batches.flush(pending)
                pending, n_real = [], 0
        if pending:
            batches.flush(pending)
        _put_checked(strips, _END, write_thread)
        t0 = time.perf_counter()
        write_thread.join()
        clock["waiting for writes"] += time.perf_counter() - t0
        if write_thread.error is not None:
            raise write_thread.error
        clock["blending"] -= clock["waiting for writes"]
        log.debug("main thread: %s", ", ".join(f"{k} {v:.1f} s" for k, v in clock.items()))
    finally:
        # Both threads poll ``stop`` whenever a queue is full or empty, so they end within
        # _POLL_S of it whatever state the render failed in: the joins cannot hang.
        stop.set()
        _join(read_thread)
        _join(write_thread)
    return batches.rendered, batches.done - batches.rendered
