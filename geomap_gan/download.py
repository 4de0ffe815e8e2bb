"""Fetch, extract and verify the pix2pix ``maps`` training data.

``download_maps(dest)`` streams ``maps.tar.gz`` next to ``dest`` (resuming an interrupted
download with an HTTP Range request), extracts it into a temporary folder beside ``dest`` while
refusing members that would land outside it, checks every file against the SHA-256 manifest shipped
in the package and only then renames the folder to ``dest``. A failed or corrupt download never
leaves a half-filled ``dest``; a complete, verified ``dest`` is left alone unless ``force``.

Only the standard library is used (``urllib.request``, ``tarfile``, ``hashlib``): no new dependency.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import logging
import os
import posixpath
import re
import shutil
import socket
import stat
import tarfile
import time
import urllib.error
import urllib.parse
import urllib.request
import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from geomap_gan.errors import DownloadError

log = logging.getLogger(__name__)

MAPS_URL = "http://efrosgans.eecs.berkeley.edu/pix2pix/datasets/maps.tar.gz"
"""The ``maps.tar.gz`` the original pix2pix project links (1096 train + 1098 val pairs)."""

MAPS_MANIFEST = "maps_original.sha256"
"""Name of the shipped manifest (``geomap_gan/manifests/``): one ``<sha256>  <relpath>`` a line."""

Progress = Callable[[int, int | None], None]
"""``progress(bytes_done, bytes_total)``; ``bytes_total`` is None when the server does not say."""

_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_USER_AGENT = "geomap-gan-download"


@dataclass(frozen=True)
class DownloadOptions:
    """How to fetch the archive.

    ``timeout`` is in seconds without any data from the server (connect or read) before an
    attempt is abandoned; ``retries`` is how many more attempts (each resuming where the
    previous one stopped) follow a broken, truncated or silent stream; ``retry_wait`` is the pause
    in seconds before the first retry, doubled on each further one (capped at 30 s);
    ``chunk_size`` is in bytes.
    """

    url: str = MAPS_URL
    force: bool = False
    timeout: float = 60.0
    retries: int = 5
    retry_wait: float = 2.0
    chunk_size: int = 1 << 20


@dataclass(frozen=True)
class DownloadResult:
    """What :func:`download_maps` did: ``skipped`` means ``path`` was already complete."""

    path: Path
    files: int
    downloaded_bytes: int
    skipped: bool


# ---- manifest ------------------------------------------------------------------------------------
def parse_manifest(text: str, source: str = "manifest") -> dict[str, str]:
    """``{relpath: sha256}`` from ``sha256sum`` output (``<hex>  <path>`` or ``<hex> *<path>``)."""
    entries: dict[str, str] = {}
    for lineno, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split(None, 1)
        digest = parts[0].lower()
        path = parts[1].lstrip("*") if len(parts) == 2 else ""
        if not _HEX64.match(digest) or not path or _unsafe_name(path):
            raise DownloadError(
                f"{source} line {lineno} is not '<sha256>  <relative path>': {raw!r}"
            )
        entries[path] = digest
    if not entries:
        raise DownloadError(f"{source} lists no files")
    return entries


def load_manifest(path: str | Path | None = None) -> dict[str, str]:
    """The manifest at ``path``, or the shipped manifest of the original maps download."""
    if path is None:
        ref = resources.files("geomap_gan").joinpath(f"manifests/{MAPS_MANIFEST}")
        return parse_manifest(ref.read_text(encoding="utf-8"), MAPS_MANIFEST)
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise DownloadError(f"cannot read manifest {path}: {exc.strerror or exc}") from exc
    return parse_manifest(text, str(path))


def sha256_file(path: Path, chunk_size: int = 1 << 20) -> str:
    """Hex SHA-256 of a file, read in ``chunk_size`` byte blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk_size):
            h.update(block)
    return h.hexdigest()


def verify_tree(root: str | Path, manifest: Mapping[str, str]) -> list[str]:
    """Manifest paths under ``root`` that are missing, not regular files or whose hash differs."""
    root = Path(root)
    failed = []
    for rel, digest in manifest.items():
        p = root / rel
        if p.is_symlink() or not p.is_file() or sha256_file(p) != digest:
            failed.append(rel)
    return failed


def _describe_failures(failed: list[str], total: int, shown: int = 5) -> str:
    names = ", ".join(failed[:shown]) + (
        f" and {len(failed) - shown} more" if len(failed) > shown else ""
    )
    return f"{len(failed)} of {total} files missing or corrupt ({names})"


# ---- fetch ---------------------------------------------------------------------------------------
class _Retryable(Exception):
    """A transient failure: the next attempt resumes from the bytes already on disk."""


class _StartOver(_Retryable):
    """The partial file cannot be resumed: the next attempt starts from byte 0."""


def _sidecar(part: Path) -> Path:
    return part.with_name(part.name + ".json")


def _read_sidecar(part: Path, url: str) -> dict[str, str]:
    """Validators of the partial download at ``part``, or {} (and no partial file) if unusable."""
    side = _sidecar(part)
    try:
        meta = json.loads(side.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        meta = None
    if not isinstance(meta, dict) or meta.get("url") != url:
        part.unlink(missing_ok=True)  # from another URL, or unknown origin: cannot resume it
        side.unlink(missing_ok=True)
        return {}
    return {k: str(v) for k, v in meta.items() if isinstance(v, str | int)}


def _write_sidecar(part: Path, url: str, headers: http.client.HTTPMessage) -> None:
    meta = {"url": url}
    for key in ("ETag", "Last-Modified"):
        if headers.get(key):
            meta[key] = headers[key]
    _sidecar(part).write_text(json.dumps(meta), encoding="utf-8")


def _content_range(value: str | None) -> tuple[int | None, int | None]:
    """(first byte, total size) from ``Content-Range: bytes a-b/total`` (None where absent)."""
    m = re.match(r"^\s*bytes\s+(?:(\d+)-\d+|\*)/(\d+)\s*$", value or "")
    if not m:
        return None, None
    return (int(m.group(1)) if m.group(1) else None), int(m.group(2))


def _open(url: str, offset: int, meta: Mapping[str, str], timeout: float):
    headers = {"User-Agent": _USER_AGENT, "Accept-Encoding": "identity"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
        validator = meta.get("ETag") or meta.get("Last-Modified")
        if validator:
            headers["If-Range"] = validator  # a changed file comes back whole (200), not spliced
    req = urllib.request.Request(url, headers=headers)
    try:
        return urllib.request.urlopen(req, timeout=timeout)  # noqa: S310 (scheme checked)
    except urllib.error.HTTPError as exc:
        exc.close()
        if exc.code == 416 and offset:
            _, total = _content_range(exc.headers.get("Content-Range"))
            if total == offset:
                return None  # the partial file is already the whole file
            raise _StartOver("server refused to resume; starting over") from exc
        if exc.code in (408, 429) or exc.code >= 500:
            raise _Retryable(f"HTTP {exc.code} {exc.reason}") from exc
        raise DownloadError(
            f"{url} answered HTTP {exc.code} {exc.reason}; check the URL or use a mirror"
        ) from exc
    except urllib.error.URLError as exc:
        reason = exc.reason
        if isinstance(reason, socket.gaierror):
            raise DownloadError(
                f"cannot resolve the host of {url}: {reason}; check the URL"
            ) from exc
        if isinstance(reason, TimeoutError):
            raise _Retryable(f"no answer for {timeout:g} s (timed out)") from exc
        raise _Retryable(str(reason)) from exc
    except TimeoutError as exc:
        raise _Retryable(f"no answer for {timeout:g} s (timed out)") from exc
    except (ConnectionError, http.client.HTTPException) as exc:
        raise _Retryable(str(exc) or type(exc).__name__) from exc


def _attempt(
    url: str, part: Path, opts: DownloadOptions, progress: Progress | None
) -> tuple[int, int | None]:
    """One request: append to ``part`` from its current size. Returns (bytes on disk, total)."""
    meta = _read_sidecar(part, url) if part.exists() else {}
    offset = part.stat().st_size if part.exists() else 0
    resp = _open(url, offset, meta, opts.timeout)
    if resp is None:
        return offset, offset
    with resp:
        if offset and resp.status == 206:
            first, total = _content_range(resp.headers.get("Content-Range"))
            if first != offset:
                raise _StartOver(f"server resumed at byte {first}, not {offset}; starting over")
            log.info("resuming %s at byte %d", url, offset)
        else:
            if offset:
                log.info("server sent the whole file again; restarting from byte 0")
            offset = 0
            length = resp.headers.get("Content-Length")
            total = int(length) if length and length.isdigit() else None
            _write_sidecar(part, url, resp.headers)
        done = offset
        with open(part, "r+b" if offset else "wb") as f:
            f.seek(offset)
            f.truncate()
            if progress:
                progress(done, total)
            while True:
                try:
                    block = resp.read1(opts.chunk_size)  # what has arrived: a stall loses nothing
                except TimeoutError as exc:
                    raise _Retryable(f"no data for {opts.timeout:g} s (timed out)") from exc
                except (ConnectionError, http.client.HTTPException) as exc:
                    raise _Retryable(str(exc) or type(exc).__name__) from exc
                if not block:
                    break
                f.write(block)
                done += len(block)
                if progress:
                    progress(done, total)
            f.flush()
            os.fsync(f.fileno())
    if total is not None and done != total:
        raise _Retryable(f"stream ended at byte {done} of {total}")
    return done, total


def fetch(url: str, part: Path, opts: DownloadOptions, progress: Progress | None = None) -> int:
    """Download ``url`` into ``part``, resuming what is there; returns the file size in bytes.

    ``part`` (and ``part.json``, which remembers the URL and the server's ETag/Last-Modified) stay
    on disk when every attempt fails, so the next call resumes with an HTTP Range request.
    """
    if urllib.parse.urlsplit(url).scheme not in ("http", "https"):
        raise DownloadError(f"unsupported URL {url!r}; give an http:// or https:// URL")
    last = ""
    for attempt in range(opts.retries + 1):
        if attempt:
            wait = min(opts.retry_wait * 2 ** (attempt - 1), 30.0)
            log.warning("download interrupted (%s); retry %d in %.0f s", last, attempt, wait)
            time.sleep(wait)
        try:
            size, _ = _attempt(url, part, opts, progress)
            return size
        except _Retryable as exc:
            last = str(exc)
            if isinstance(exc, _StartOver):
                _discard(part)
    tries = opts.retries + 1
    raise DownloadError(
        f"download of {url} failed after {tries} attempt(s): {last}; run again to resume"
    )


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
    except (tarfile.TarError, EOFError, zlib.error) as exc:
        raise DownloadError(
            f"archive {archive} is damaged ({exc}); run again to fetch it anew"
        ) from exc
    except OSError as exc:  # includes gzip.BadGzipFile
        if isinstance(exc, DownloadError):
            raise
        raise DownloadError(f"cannot extract {archive}: {exc}; run again to fetch it anew") from exc
    return files


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


# ---- the whole job -------------------------------------------------------------------------------
def _scratch_paths(dest: Path) -> tuple[Path, Path, Path]:
    """Partial archive, extraction folder and replaced-folder names, all hidden beside ``dest``."""
    parent, name = dest.parent, dest.name
    return parent / f".{name}.tar.gz.part", parent / f".{name}.extracting", parent / f".{name}.old"


def _prune_unlisted(root: Path, manifest: Mapping[str, str]) -> None:
    """Remove files the manifest does not list, so every file left in ``root`` is verified."""
    for p in sorted(root.rglob("*"), reverse=True):
        rel = p.relative_to(root).as_posix()
        if p.is_dir() and not p.is_symlink():
            if not any(p.iterdir()):
                p.rmdir()
        elif rel not in manifest:
            log.warning("archive file %s is not in the manifest; dropped", rel)
            p.unlink()


def download_maps(
    dest: str | Path,
    options: DownloadOptions = DownloadOptions(),
    progress: Progress | None = None,
    manifest: Mapping[str, str] | str | Path | None = None,
) -> DownloadResult:
    """Make ``dest`` hold the verified pix2pix maps dataset (``dest/train``, ``dest/val``).

    ``manifest`` is ``{relpath: sha256}`` or a manifest file (default: the shipped one for the
    original ``maps.tar.gz``). ``progress(bytes_done, bytes_total)`` follows the download.
    A ``dest`` that already verifies is left alone unless ``options.force``; a non-empty ``dest``
    that does not verify is only replaced with ``force``.
    """
    dest = Path(dest).expanduser().absolute()
    entries = dict(manifest) if isinstance(manifest, Mapping) else load_manifest(manifest)
    if dest.exists() and not dest.is_dir():
        raise DownloadError(f"{dest} exists and is not a folder; choose another destination")
    if dest.is_dir() and any(dest.iterdir()):
        failed = verify_tree(dest, entries)
        if not failed and not options.force:
            log.info("%s already holds all %d verified files", dest, len(entries))
            return DownloadResult(dest, len(entries), 0, True)
        if failed and not options.force:
            raise DownloadError(
                f"{dest} exists but {_describe_failures(failed, len(entries))}; "
                "pass --force to replace it"
            )
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DownloadError(f"cannot create {dest.parent}: {exc.strerror or exc}") from exc
    part, work, old = _scratch_paths(dest)
    size = fetch(options.url, part, options, progress)
    log.info("downloaded %d bytes; extracting", size)
    try:
        for stale in (work, old):
            if stale.exists():
                shutil.rmtree(stale)
        work.mkdir()
        extract_tar(part, work)
        _prune_unlisted(work, entries)
        failed = verify_tree(work, entries)
        if failed:
            raise DownloadError(
                f"download did not verify: {_describe_failures(failed, len(entries))}; "
                "run again to fetch it anew, or try a mirror"
            )
        _swap_into_place(work, dest, old)
    except DownloadError:
        _discard(part)  # complete but bad: the next run must fetch it anew, not resume it
        raise
    finally:
        shutil.rmtree(work, ignore_errors=True)  # gone after the rename unless something failed
    _discard(part)
    log.info("%s: %d files verified", dest, len(entries))
    return DownloadResult(dest, len(entries), size, False)


def _discard(part: Path) -> None:
    part.unlink(missing_ok=True)
    _sidecar(part).unlink(missing_ok=True)


def _swap_into_place(work: Path, dest: Path, old: Path) -> None:
    """Rename ``work`` to ``dest``; an existing ``dest`` is moved aside first and then deleted."""
    if dest.exists() or dest.is_symlink():
        dest.rename(old)
        try:
            work.rename(dest)
        except OSError:
            old.rename(dest)
            raise
        if old.is_symlink():
            old.unlink()  # a link to the old data: drop the link, never the data behind it
        else:
            shutil.rmtree(old, ignore_errors=True)
    else:
        work.rename(dest)
