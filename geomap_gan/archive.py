"""Safe extraction of a downloaded tar archive: every member is checked before anything is
written (no absolute paths, no ``..``, no devices or FIFOs, no links out of the folder), files
are created exclusively with mode 0644, and a damaged or foreign archive is one DownloadError
line (tarfile's own message lists every compression it tried, one line each).

Only the standard library is used.
"""

from __future__ import annotations

import os
import posixpath
import re
import shutil
import stat
import tarfile
import zlib
from pathlib import Path

from geomap_gan.errors import DownloadError


# ---- safe extraction -----------------------------------------------------------------------------
def _unsafe_name(name: str) -> bool:
    """True for names that are absolute, have a drive, or climb with ``..``."""
    if name.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", name):
        return True
    return any(part == ".." for part in re.split(r"[/\\]", name))


def _clean(name: str) -> str:
    """``name`` without ``./`` or empty components (posix separators)."""
    return "/".join(p for p in name.split("/") if p not in ("", "."))


def _common_top(names: list[str]) -> str | None:
    """The single top-level folder every member lives under (``maps/``), if there is one."""
    tops = {n.split("/", 1)[0] for n in names if n}
    if len(tops) != 1:
        return None
    top = tops.pop()
    return top if any("/" in n for n in names) else None


def _inside(path: Path, root: Path) -> bool:
    real, base = os.path.realpath(path), os.path.realpath(root)
    return real == base or real.startswith(base + os.sep)


def _check_member(m: tarfile.TarInfo, name: str, root: Path) -> None:
    """Refuse what could write outside ``root`` or create anything but files, folders, links."""
    if _unsafe_name(m.name) or not name:
        raise DownloadError(f"archive member {m.name!r} has an unsafe path; refusing the archive")
    if not (m.isfile() or m.isdir() or m.issym() or m.islnk()):
        raise DownloadError(f"archive member {m.name!r} is a device or fifo; refusing the archive")
    if m.islnk() and _unsafe_name(m.linkname):
        raise DownloadError(f"archive hard link {m.name!r} points out of the folder; refusing")
    if m.issym():
        if m.linkname.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", m.linkname):
            raise DownloadError(f"archive link {m.name!r} points to an absolute path; refusing")
        target = posixpath.normpath(posixpath.join(posixpath.dirname(name), m.linkname))
        if target == ".." or target.startswith("../"):
            raise DownloadError(f"archive link {m.name!r} points out of the folder; refusing")


def _stdlib_filter(m: tarfile.TarInfo, name: str, root: Path) -> None:
    """Also run tarfile's own "data" filter where this Python has it (3.11.4+, 3.12+)."""
    if not hasattr(tarfile, "data_filter"):
        return
    try:
        tarfile.data_filter(m.replace(name=name, deep=False), str(root))
    except tarfile.FilterError as exc:
        raise DownloadError(f"archive member {m.name!r} is unsafe ({exc}); refusing") from exc


def _strip(name: str, top: str | None) -> str:
    name = _clean(name)
    if top is not None:
        name = name[len(top) + 1 :] if name.startswith(top + "/") else ("" if name == top else name)
    return name


def extract_tar(archive: str | Path, root: str | Path) -> int:
    """Extract ``archive`` (any tar compression) into the existing folder ``root``; count files.

    A single top-level folder shared by every member (``maps/train/1.jpg``) is stripped, so
    ``root`` receives ``train/`` and ``val/``. Members with absolute paths or ``..``, devices,
    fifos and links leading out of ``root`` make the whole archive refused. Files are written
    with mode 0644 (no setuid bits, no owners). Our own checks run on every Python;
    ``tarfile.data_filter`` (Python 3.11.4+, absent from Debian's 3.11.2) is applied on top
    where it exists. Raises DownloadError for damaged or unsafe archives.
    """
    root = Path(root)
    try:
        with tarfile.open(archive, "r:*") as tf:
            members = tf.getmembers()  # reads the whole archive: a damaged stream fails here
            top = _common_top([_clean(m.name) for m in members])
            for m in members:
                name = _strip(m.name, top)
                if m.isdir() and not name:
                    continue  # the stripped top folder itself
                _check_member(m, name, root)
                _stdlib_filter(m, name, root)
            files = 0
            for m in members:
                name = _strip(m.name, top)
                if name:
                    files += _extract_member(tf, m, name, root, top)
    except tarfile.ReadError as exc:  # not a tar at all: tarfile lists each method it tried
        raise DownloadError(
            f"the downloaded file {Path(archive).name} is not a tar archive (gzip, bzip2, xz or "
            "plain); check the URL (a mirror may answer with an error page), or run again"
        ) from exc
    except (tarfile.TarError, EOFError, zlib.error) as exc:
        raise DownloadError(
            f"archive {archive} is damaged ({_first_line(exc)}); run again to fetch it anew"
        ) from exc
    except OSError as exc:  # includes gzip.BadGzipFile
        if isinstance(exc, DownloadError):
            raise
        raise DownloadError(
            f"cannot extract {archive}: {_first_line(exc)}; run again to fetch it anew"
        ) from exc
    return files


def _first_line(exc: BaseException) -> str:
    """The first non-empty line of an error's text."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    return lines[0] if lines else type(exc).__name__


def _extract_member(
    tf: tarfile.TarFile, m: tarfile.TarInfo, name: str, root: Path, top: str | None
) -> int:
    dest = root / name
    if not _inside(dest.parent, root):
        raise DownloadError(f"archive member {m.name!r} would land outside the folder; refusing")
    if m.isdir():
        dest.mkdir(parents=True, exist_ok=True)
        if not _inside(dest, root):
            raise DownloadError(
                f"archive member {m.name!r} would land outside the folder; refusing"
            )
        return 0
    dest.parent.mkdir(parents=True, exist_ok=True)
    if not _inside(dest.parent, root):
        raise DownloadError(f"archive member {m.name!r} would land outside the folder; refusing")
    if m.issym():
        os.symlink(m.linkname, dest)
        if not _inside(dest, root):
            raise DownloadError(f"archive link {m.name!r} points out of the folder; refusing")
        return 0
    if m.islnk():
        src = root / _strip(m.linkname, top)
        if _unsafe_name(m.linkname) or not _inside(src, root) or not src.is_file():
            raise DownloadError(f"archive hard link {m.name!r} points out of the folder; refusing")
        shutil.copyfile(src, dest, follow_symlinks=True)
        return 1
    fileobj = tf.extractfile(m)
    if fileobj is None:
        raise DownloadError(f"archive member {m.name!r} has no data; refusing the archive")
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
    try:
        fd = os.open(dest, flags, stat.S_IRUSR | stat.S_IWUSR | stat.S_IRGRP | stat.S_IROTH)
    except FileExistsError as exc:
        raise DownloadError(
            f"archive member {m.name!r} appears twice; refusing the archive"
        ) from exc
    with fileobj, os.fdopen(fd, "wb") as out:
        shutil.copyfileobj(fileobj, out, 1 << 20)
    return 1
