"""Output safety for every command that writes: one check, one atomic writer, stale-file cleanup.

The rules, the same for render, render-many, train, evaluate, compile and download:

- an output is never an input, nor a file GDAL reads along with an input (``ds.files``: a VRT's
  sources, ``.ovr``/``.aux.xml``/``.msk``/world-file sidecars), even through links;
- nothing that exists is replaced without ``overwrite``, whatever it is (a raster, a text file,
  a truncated copy), and that is checked twice: before the work, and at the final rename, which
  without ``overwrite`` is a hard link that fails if a file appeared at the path meanwhile;
- a file gets its final name only when complete (temp file in the target folder + rename);
- temp files carry the host and pid of their writer, so a later run can remove the ones that a
  killed run left (:func:`remove_stale`) without touching those of a run still going;
- a write that fails on a (nearly) full disk says so in one line, whichever layer failed.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import socket
import uuid
from collections.abc import Iterable, Iterator
from pathlib import Path

from geomap_gan.errors import GeomapGanError, OutputError, OutputExistsError

log = logging.getLogger(__name__)

# Sidecars GDAL opens along with a raster: overviews, PAM metadata, masks, world files.
SIDECAR_SUFFIXES = (".ovr", ".aux.xml", ".msk")
WORLD_FILE_SUFFIXES = (".wld", ".tfw", ".tifw", ".jgw", ".pgw")
# A write that fails with less than this free beside its output failed for want of space: GDAL
# reports ENOSPC only as "Write failed. See previous exception" (RasterioIOError), and one
# output block or a model file is a few MB.
LOW_SPACE_BYTES = 16 << 20
_HOST = socket.gethostname().replace(".", "_").replace("-", "_") or "host"


def current_umask() -> int:
    """The process umask (reading it means setting it; restored at once)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _same_file(a: Path, b: Path) -> bool:
    if a.resolve() == b.resolve():
        return True
    try:
        return a.exists() and b.exists() and os.path.samefile(a, b)
    except OSError:
        return False


def _sidecars(path: Path) -> list[Path]:
    """Files GDAL may read along with ``path`` (whether or not they exist)."""
    names = [path.with_name(path.name + s) for s in SIDECAR_SUFFIXES]
    return names + [path.with_suffix(s) for s in WORLD_FILE_SUFFIXES]


def check_output(dst: str | Path, overwrite: bool, inputs: Iterable[str | Path] = ()) -> Path:
    """Validate an output path before any work; returns it absolute.

    OutputError when it is one of ``inputs`` (or a sidecar of one), a folder, or in a folder
    that does not exist; OutputExistsError when it exists and ``overwrite`` is off.
    """
    dst_path = Path(dst).expanduser().absolute()
    for src in inputs:
        if str(src).startswith("/vsi"):
            continue
        src_path = Path(src).expanduser().absolute()
        if _same_file(dst_path, src_path):
            raise OutputError(
                f"output {dst} is the input (or one of its files); choose another output path"
            )
        if any(_same_file(dst_path, s) for s in _sidecars(src_path)):
            raise OutputError(
                f"output {dst} is a sidecar file of the input {src_path.name} (GDAL reads it "
                "with the input); choose another output path"
            )
    folder = dst_path.parent
    if not folder.is_dir():
        raise OutputError(f"output folder {folder} does not exist; create it first")
    if dst_path.is_dir():
        raise OutputError(f"output {dst} is a folder; give a file name such as map.tif")
    if (dst_path.exists() or dst_path.is_symlink()) and not overwrite:
        raise OutputExistsError(f"output {dst} exists; pass --overwrite to replace it")
    return dst_path


def temp_path(dst: Path, tag: str = "") -> Path:
    """A unique hidden name beside ``dst`` that says who wrote it (host and pid)."""
    tag = f"{tag}." if tag else ""
    return dst.parent / f".{dst.name}.{tag}{_HOST}-{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp"


def _writer_of(path: Path) -> tuple[str, int] | None:
    """(host, pid) from a name made by :func:`temp_path`, or None."""
    parts = path.name.rsplit(".", 2)
    if len(parts) != 3 or parts[2] != "tmp":
        return None
    fields = parts[1].rsplit("-", 2)
    if len(fields) != 3 or not fields[1].isdigit():
        return None
    return fields[0], int(fields[1])


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale(dst: Path) -> int:
    """Remove the temp files of ``dst`` (:func:`temp_path` names) whose writer ran on this host
    and is no longer alive: what a SIGKILL or a power cut left. Returns how many."""
    removed = 0
    with contextlib.suppress(OSError):
        for p in dst.parent.glob(f".{dst.name}.*.tmp"):
            writer = _writer_of(p)
            if writer is None or writer[0] != _HOST or _alive(writer[1]):
                continue
            with contextlib.suppress(OSError):
                if p.is_dir():
                    import shutil

                    shutil.rmtree(p)
                else:
                    p.unlink()
                removed += 1
                log.info("removed %s, left by a run that no longer exists", p)
    return removed


def publish(tmp: Path, dst: Path, overwrite: bool) -> None:
    """Give ``tmp`` the name ``dst``: replacing it with ``overwrite``, else only if nothing
    appeared there since the check (a hard link cannot replace a file)."""
    if overwrite:
        os.replace(tmp, dst)
        return
    try:
        os.link(tmp, dst)
    except FileExistsError:
        raise OutputExistsError(
            f"output {dst} appeared while this command ran (another program wrote it) and was "
            "left as it is; pass --overwrite to replace it"
        ) from None
    except OSError as exc:
        if exc.errno not in (errno.EPERM, errno.EOPNOTSUPP, errno.EXDEV, errno.EMLINK):
            raise
        if dst.exists():  # a filesystem without hard links: check once more, then rename
            raise OutputExistsError(
                f"output {dst} appeared while this command ran and was left as it is; "
                "pass --overwrite to replace it"
            ) from None
        os.replace(tmp, dst)
        return
    tmp.unlink()


def _nearly_full(folder: Path) -> bool:
    """Whether the filesystem of ``folder`` has under LOW_SPACE_BYTES free (False if unknown)."""
    import shutil

    try:
        return shutil.disk_usage(folder).free < LOW_SPACE_BYTES
    except OSError:
        return False


@contextlib.contextmanager
def atomic_output(dst: Path, overwrite: bool = True) -> Iterator[Path]:
    """Yield a temp path in ``dst``'s folder; on success it becomes ``dst`` (see
    :func:`publish`), on any exception (cancel, Ctrl-C, SIGTERM, a full disk) it is removed,
    so no partial ``dst`` ever exists. The file gets the usual permissions (umask)."""
    dst = Path(dst)
    remove_stale(dst)
    tmp = temp_path(dst)
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666 & ~current_umask())
    except OSError as exc:
        raise OutputError(
            f"cannot write in {dst.parent} ({exc.strerror}); choose a writable output folder"
        ) from exc
    os.close(fd)
    try:
        yield tmp
        publish(tmp, dst, overwrite)
    except Exception as exc:
        if not isinstance(exc, GeomapGanError) and _nearly_full(dst.parent):
            raise OutputError(
                f"the disk is full (writing {dst}); free some space and run again"
            ) from exc
        raise
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
