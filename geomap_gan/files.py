"""Output safety for every command that writes: one check, one atomic writer, stale-file cleanup.

The rules, the same for render (plain and ``--strips``), render-many (its outputs and
``mosaic.vrt``), train (``--out``, its samples), evaluate (``--grid``), compile and download:

- an input is a regular file or a GDAL virtual path (``/vsi...``, a URL): a FIFO or a device
  would block or never end (:func:`check_input`);
- an output is never an input, nor a file GDAL reads along with an input (``ds.files``: a VRT's
  sources, ``.ovr``/``.aux.xml``/``.msk``/world-file sidecars; :func:`gdal_files`), even
  through links;
- an output carries the suffix of what is written into it (``formats.check_suffix``);
- nothing that exists is replaced without ``overwrite``, whatever it is (a raster, a text file,
  a truncated copy), and that is checked twice: before the work, and at the final rename, which
  without ``overwrite`` is a hard link that fails if a file appeared at the path meanwhile;
- a file gets its final name only when complete (temp file in the target folder + rename);
- nothing this run did not create is ever deleted: temp files and scratch folders have names
  unique per run (host, pid, a random token; shortened so that they stay under the 255-byte
  name limit whatever the output is called), and every folder the tool makes holds a marker
  file (:data:`MARKER`), so a later run removes what a killed run left
  (:func:`remove_stale`) without touching those of a run still going, or folders the user made;
- a write that fails on a (nearly) full disk says so in one line, whichever layer failed.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import logging
import os
import shutil
import socket
import stat
import uuid
from collections.abc import Iterable, Iterator
from pathlib import Path

from geomap_gan.errors import GeomapGanError, InputError, OutputError, OutputExistsError
from geomap_gan.formats import OutputFormat, check_suffix

log = logging.getLogger(__name__)

# Sidecars GDAL opens along with a raster: overviews, PAM metadata, masks, world files.
SIDECAR_SUFFIXES = (".ovr", ".aux.xml", ".msk")
WORLD_FILE_SUFFIXES = (".wld", ".tfw", ".tifw", ".jgw", ".pgw")
# A write that fails with less than this free beside its output failed for want of space: GDAL
# reports ENOSPC only as "Write failed. See previous exception" (RasterioIOError), and one
# output block or a model file is a few MB.
LOW_SPACE_BYTES = 16 << 20
_HOST = (socket.gethostname().replace(".", "_").replace("-", "_") or "host")[:32]
MARKER = ".geomap-gan-made"
"""A file in every folder the tool makes: what may be removed again is what holds it."""
NAME_MAX = 255  # bytes of one file name on Linux, macOS and Windows file systems
_SHORT_NAME = 64  # bytes of an output's name kept in its temp names, longer ones are hashed
VIRTUAL_PREFIXES = ("/vsi",)


def is_virtual(path: str | Path) -> bool:
    """Whether GDAL reads ``path`` itself rather than a local file: ``/vsi...`` or a URL."""
    text = str(path)
    return text.startswith(VIRTUAL_PREFIXES) or "://" in text


def current_umask() -> int:
    """The process umask (reading it means setting it; restored at once)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _sidecars(path: Path) -> list[Path]:
    """Files GDAL may read along with ``path`` (whether or not they exist)."""
    names = [path.with_name(path.name + s) for s in SIDECAR_SUFFIXES]
    return names + [path.with_suffix(s) for s in WORLD_FILE_SUFFIXES]


def check_input(path: str | Path, what: str = "input") -> str | Path:
    """``path`` if it is a regular file (links followed) or a GDAL virtual path; InputError for
    a path that does not exist, a folder, or a FIFO, device or socket (reading one blocks or
    never ends). Returns ``path`` unchanged."""
    if is_virtual(path):
        return path
    try:
        mode = os.stat(Path(path).expanduser()).st_mode
    except FileNotFoundError:
        raise InputError(f"{what} {path} does not exist; check the path") from None
    except OSError as exc:
        raise InputError(f"cannot read {what} {path} ({exc.strerror}); check the path") from None
    if stat.S_ISDIR(mode):
        raise InputError(f"{what} {path} is a folder; give a file")
    if not stat.S_ISREG(mode):
        kind = "FIFO" if stat.S_ISFIFO(mode) else "socket" if stat.S_ISSOCK(mode) else "device"
        raise InputError(
            f"{what} {path} is a {kind}, not a regular file; save the data to a file first"
        )
    return path


def gdal_files(src: str | Path, ds: object | None = None, depth: int = 8) -> list[str]:
    """``src`` and every file GDAL opens for it (``ds.files``: a VRT's sources, overviews,
    masks, metadata sidecars), following VRTs of VRTs down to ``depth`` levels; just ``src``
    when GDAL cannot open it (the render says why). ``ds``: ``src`` already open."""
    if ds is None and not is_virtual(src):
        check_input(src)
    found = [str(src)]
    seen = {str(src)}
    todo: list[tuple[str, object | None]] = [(str(src), ds)]
    while todo and depth > 0:
        depth -= 1
        nested: list[tuple[str, object | None]] = []
        for path, opened in todo:
            for name in _dataset_files(path, opened):
                if name not in seen:
                    seen.add(name)
                    found.append(name)
                    if name.lower().endswith(".vrt"):
                        nested.append((name, None))
        todo = nested
    return found


def _dataset_files(src: str, ds: object | None) -> list[str]:
    """``ds.files`` of ``src`` (opened here unless given); [] when GDAL cannot open it."""
    import warnings

    import rasterio
    from rasterio.errors import NotGeoreferencedWarning, RasterioError

    if ds is not None:
        return [str(f) for f in getattr(ds, "files", [])]
    if not is_virtual(src) and not Path(src).is_file():  # a FIFO would block GDAL
        return []
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            with rasterio.open(src) as opened:
                return [str(f) for f in opened.files]
    except (RasterioError, OSError):
        return []


def check_output(
    dst: str | Path,
    overwrite: bool,
    inputs: Iterable[str | Path] | InputFiles = (),
    fmt: OutputFormat | None = None,
) -> Path:
    """Validate an output path before any work; returns it absolute.

    OutputError when it is one of ``inputs`` (or a sidecar of one; pass :func:`gdal_files` of a
    raster input), a folder or another non-regular file, in a folder that does not exist, has a
    name too long for the file system, or does not carry a suffix of ``fmt``;
    OutputExistsError when it exists and ``overwrite`` is off.
    """
    dst_path = Path(dst).expanduser().absolute()
    check_not_input(dst_path, inputs)
    if len(dst_path.name.encode()) > NAME_MAX:
        raise OutputError(f"output name {dst_path.name[:40]}... is over {NAME_MAX} bytes long")
    if fmt is not None:
        check_suffix(dst_path, fmt)
    folder = dst_path.parent
    if not folder.is_dir():
        raise OutputError(f"output folder {folder} does not exist; create it first")
    if dst_path.is_dir():
        raise OutputError(f"output {dst} is a folder; give a file name such as map.tif")
    if dst_path.exists() and not dst_path.is_file():
        raise OutputError(f"output {dst} is not a regular file (a FIFO or device); choose a file")
    if (dst_path.exists() or dst_path.is_symlink()) and not overwrite:
        raise OutputExistsError(f"output {dst} exists; pass --overwrite to replace it")
    return dst_path


class InputFiles:
    """The files of a command's inputs (and the sidecars GDAL would read with them), indexed
    once by real path and by (device, inode), so that many outputs are checked against many
    inputs in linear time (render-many: every output against every input's files)."""

    def __init__(self, inputs: Iterable[str | Path]) -> None:
        self.paths: dict[str, tuple[str, bool]] = {}  # real path -> (input name, is a sidecar)
        self.inodes: dict[tuple[int, int], tuple[str, bool]] = {}
        for src in inputs:
            if is_virtual(src):
                continue
            src_path = Path(src).expanduser().absolute()
            for path, sidecar in [(src_path, False), *((s, True) for s in _sidecars(src_path))]:
                self._add(path, (src_path.name, sidecar))

    def _add(self, path: Path, what: tuple[str, bool]) -> None:
        self.paths.setdefault(os.path.realpath(path), what)
        with contextlib.suppress(OSError):
            st = os.stat(path)
            self.inodes.setdefault((st.st_dev, st.st_ino), what)

    def find(self, dst: Path) -> tuple[str, bool] | None:
        """(input name, whether ``dst`` is its sidecar) when ``dst`` is one of the files."""
        found = self.paths.get(os.path.realpath(dst))
        if found is None:
            with contextlib.suppress(OSError):
                st = os.stat(dst)
                found = self.inodes.get((st.st_dev, st.st_ino))
        return found


def check_not_input(dst: Path, inputs: Iterable[str | Path] | InputFiles) -> None:
    """OutputError when ``dst`` is one of ``inputs`` or a sidecar GDAL would read with one
    (through links and hard links too)."""
    index = inputs if isinstance(inputs, InputFiles) else InputFiles(inputs)
    found = index.find(Path(dst).expanduser().absolute())
    if found is None:
        return
    name, sidecar = found
    if sidecar:
        raise OutputError(
            f"output {dst} is a sidecar file of the input {name} (GDAL reads it with the "
            "input); choose another output path"
        )
    raise OutputError(
        f"output {dst} is the input (or one of its files); choose another output path"
    )


def check_output_folder(
    folder: str | Path, overwrite: bool, inputs: Iterable[str | Path] = ()
) -> Path:
    """Validate a folder the tool will fill and, with ``overwrite``, replace (``map_strips/``
    of ``render --strips map.vrt``); returns it absolute. Refused when it exists without
    ``overwrite``, when it is not a folder this tool made (no :data:`MARKER`: the user's),
    or when an input lies inside it."""
    path = Path(folder).expanduser().absolute()
    if not (path.exists() or path.is_symlink()):
        return path
    if path.is_symlink() or not path.is_dir():
        raise OutputError(f"{path} exists and is not a folder; move it away or rename the output")
    for src in inputs:
        if not is_virtual(src) and _inside(Path(src).expanduser().absolute(), path):
            raise OutputError(f"input {src} lies inside {path}, which the output would replace")
    if not made_here(path):
        raise OutputError(
            f"{path} exists and was not made by geomap-gan; move it away or rename the output"
        )
    if not overwrite:
        raise OutputExistsError(f"{path} exists; pass --overwrite to replace it")
    return path


def _inside(path: Path, folder: Path) -> bool:
    real, base = os.path.realpath(path), os.path.realpath(folder)
    return real == base or real.startswith(base.rstrip(os.sep) + os.sep)


def short_name(name: str) -> str:
    """``name``, or for a long one its first characters and a hash of the whole: what temp and
    scratch names carry, so that they stay under :data:`NAME_MAX` bytes."""
    if len(name.encode()) <= _SHORT_NAME:
        return name
    head = name.encode()[: _SHORT_NAME - 14].decode(errors="ignore")
    return f"{head}~{hashlib.sha256(name.encode()).hexdigest()[:12]}"


def temp_path(dst: Path, tag: str = "") -> Path:
    """A unique hidden name beside ``dst`` that says who wrote it (host and pid)."""
    tag = f"{tag}." if tag else ""
    token = uuid.uuid4().hex[:8]
    return dst.parent / f".{short_name(dst.name)}.{tag}{_HOST}-{os.getpid()}-{token}.tmp"


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
    """Remove the temp files and scratch folders of ``dst`` (:func:`temp_path` names) whose
    writer ran on this host and is no longer alive: what a SIGKILL or a power cut left. A folder
    goes only when it holds :data:`MARKER` (this tool made it). Returns how many."""
    removed = 0
    with contextlib.suppress(OSError):
        for p in dst.parent.glob(f".{short_name(dst.name)}.*.tmp"):
            writer = _writer_of(p)
            if writer is None or writer[0] != _HOST or _alive(writer[1]):
                continue
            with contextlib.suppress(OSError):
                if p.is_dir() and not p.is_symlink():
                    if not remove_made_dir(p):
                        continue
                else:
                    p.unlink()
                removed += 1
                log.info("removed %s, left by a run that no longer exists", p)
    return removed


def make_dir(path: Path, what: str = "") -> Path:
    """Create the folder ``path`` (it must not exist) with :data:`MARKER` in it, which says that
    this tool made it and so may remove it again. OutputError when it cannot."""
    try:
        path.mkdir()
        (path / MARKER).write_text(
            json.dumps({"what": what, "host": _HOST, "pid": os.getpid()}) + "\n"
        )
    except FileExistsError:
        raise OutputError(f"{path} exists; move it away or choose another output") from None
    except OSError as exc:
        with contextlib.suppress(OSError):
            path.rmdir()
        raise OutputError(
            f"cannot create the folder {path} ({exc.strerror}); choose a writable output folder"
        ) from exc
    return path


def made_here(folder: Path) -> bool:
    """Whether ``folder`` is a real folder (not a link) holding :data:`MARKER`."""
    return folder.is_dir() and not folder.is_symlink() and (folder / MARKER).is_file()


def remove_made_dir(folder: Path) -> bool:
    """Remove ``folder`` and everything in it only if this tool made it (:func:`made_here`);
    returns whether it did. The marker goes last, so an interrupted removal is retried."""
    if not made_here(folder):
        if folder.exists():
            log.info("left %s alone: geomap-gan did not make it", folder)
        return False
    for child in folder.iterdir():
        if child.name == MARKER:
            continue
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child, ignore_errors=True)
        else:
            with contextlib.suppress(FileNotFoundError):
                child.unlink()
    shutil.rmtree(folder, ignore_errors=True)
    return not folder.exists()


def scratch_dir(dst: Path, tag: str) -> Path:
    """A new hidden folder beside ``dst`` with a name unique to this run (:func:`temp_path`)
    and :data:`MARKER` in it; a later run removes it if this one is killed."""
    return make_dir(temp_path(dst, tag), tag)


@contextlib.contextmanager
def scratch(dst: Path, tag: str) -> Iterator[Path]:
    """:func:`scratch_dir` for the duration, removed on the way out whatever happens."""
    remove_stale(dst)
    folder = scratch_dir(dst, tag)
    try:
        yield folder
    finally:
        remove_made_dir(folder)


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
