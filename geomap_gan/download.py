"""Fetch, extract and verify the pix2pix ``maps`` training data.

``download_maps(dest)`` streams ``maps.tar.gz`` next to ``dest`` (resuming an interrupted
download with an HTTP Range request), extracts it into a temporary folder beside ``dest`` while
refusing members that would land outside it (:mod:`geomap_gan.archive`), checks every file against
the SHA-256 manifest shipped in the package and only then renames the folder to ``dest``. A failed
or corrupt download never leaves a half-filled ``dest``; a complete, verified ``dest`` is left
alone unless ``force``.

Nothing it did not create is deleted: the extraction folder and the name the replaced ``dest``
moves to are unique to the run (``files.temp_path``; the folder holds the tool's marker, so a
later run removes what a killed one left); the partial archive keeps one name so that a later
run can resume it, and is resumed or discarded only when its sidecar (written first, atomically)
says this tool wrote it.

Only the standard library is used (``urllib.request``, ``tarfile``, ``hashlib``): no new dependency.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import logging
import os
import re
import shutil
import socket
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from geomap_gan import files
from geomap_gan.archive import _unsafe_name, extract_tar
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

    def validate(self) -> DownloadOptions:
        """DownloadError for a value outside its range (NaN and infinity included)."""
        for name, value, lo, hi in (
            ("--timeout", self.timeout, 0.1, 86_400.0),
            ("--retries", self.retries, 0, 100),
            ("retry_wait", self.retry_wait, 0.0, 3_600.0),
            ("chunk_size", self.chunk_size, 1024, 64 << 20),
        ):
            if isinstance(value, bool) or not lo <= value <= hi:
                raise DownloadError(f"{name} must be {lo:g} to {hi:g}, got {value!r}")
        return self


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
    """Validators of the partial download at ``part``, or {} (and no partial file) when it came
    from another URL. DownloadError when ``part`` has no sidecar of this tool's: someone else's
    file, left as it is."""
    side = _sidecar(part)
    try:
        meta = json.loads(side.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        meta = None
    if not isinstance(meta, dict) or not isinstance(meta.get("url"), str):
        raise DownloadError(
            f"{part} exists and was not written by geomap-gan (no {side.name} beside it); "
            "move it away, then run again"
        )
    if meta["url"] != url:
        _discard(part)  # ours, from another URL: cannot resume it
        return {}
    return {k: str(v) for k, v in meta.items() if isinstance(v, str | int)}


def _write_sidecar(part: Path, url: str, headers: http.client.HTTPMessage) -> None:
    """Written (atomically) before the first byte of ``part``: it says who wrote ``part``."""
    meta = {"url": url, "writer": "geomap-gan"}
    for key in ("ETag", "Last-Modified"):
        if headers.get(key):
            meta[key] = headers[key]
    with files.atomic_output(_sidecar(part)) as tmp:
        tmp.write_text(json.dumps(meta), encoding="utf-8")


def _content_range(value: str | None) -> tuple[int | None, int | None]:
    """(first byte, total size) from ``Content-Range: bytes a-b/total`` (None where absent)."""
    m = re.match(r"^\s*bytes\s+(?:(\d+)-\d+|\*)/(\d+)\s*$", value or "")
    if not m:
        return None, None
    return (int(m.group(1)) if m.group(1) else None), int(m.group(2))


def _open(url: str, offset: int, meta: Mapping[str, str], timeout: float) -> Any:
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


# ---- the whole job -------------------------------------------------------------------------------
def _partial_archive(dest: Path) -> Path:
    """Where the archive is downloaded: one name per ``dest``, so a later run resumes it."""
    return dest.parent / f".{files.short_name(dest.name)}.tar.gz.part"


def _prune_unlisted(root: Path, manifest: Mapping[str, str]) -> None:
    """Remove files the manifest does not list, so every file left in ``root`` is verified
    (the tool's own marker of the extraction folder stays)."""
    for p in sorted(root.rglob("*"), reverse=True):
        rel = p.relative_to(root).as_posix()
        if rel == files.MARKER:
            continue
        if p.is_dir() and not p.is_symlink():
            if not any(p.iterdir()):
                p.rmdir()
        elif rel not in manifest:
            log.warning("archive file %s is not in the manifest; dropped", rel)
            p.unlink()


def _existing_dest(dest: Path, entries: Mapping[str, str], force: bool) -> DownloadResult | None:
    """A result when ``dest`` already verifies (and not ``force``); DownloadError when it holds
    something else and ``force`` is off; None when the download should go ahead."""
    if dest.exists() and not dest.is_dir():
        raise DownloadError(f"{dest} exists and is not a folder; choose another destination")
    if dest.is_dir() and any(dest.iterdir()):
        failed = verify_tree(dest, entries)
        if not failed and not force:
            log.info("%s already holds all %d verified files", dest, len(entries))
            return DownloadResult(dest, len(entries), 0, True)
        if failed and not force:
            raise DownloadError(
                f"{dest} exists but {_describe_failures(failed, len(entries))}; "
                "pass --force to replace it"
            )
    return None


def _writable_parent(dest: Path) -> None:
    """Create ``dest``'s parent if needed; DownloadError unless this process can write in it."""
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DownloadError(f"cannot create {dest.parent}: {exc.strerror or exc}") from exc
    if not os.access(dest.parent, os.W_OK | os.X_OK):
        raise DownloadError(
            f"cannot write in {dest.parent} (permission denied); choose a writable destination"
        )


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
    options.validate()
    dest = Path(dest).expanduser().absolute()
    if manifest is not None and not isinstance(manifest, Mapping):
        files.check_input(manifest, "manifest")  # a FIFO would block the read
    entries = dict(manifest) if isinstance(manifest, Mapping) else load_manifest(manifest)
    done = _existing_dest(dest, entries, options.force)
    if done is not None:
        return done
    _writable_parent(dest)
    files.remove_stale(dest)  # extraction folders of killed runs (they hold the marker)
    part = _partial_archive(dest)
    size = fetch(options.url, part, options, progress)
    log.info("downloaded %d bytes; extracting", size)
    try:
        with files.scratch(dest, "extracting") as work:
            extract_tar(part, work)
            _prune_unlisted(work, entries)
            failed = verify_tree(work, entries)
            if failed:
                raise DownloadError(
                    f"download did not verify: {_describe_failures(failed, len(entries))}; "
                    "run again to fetch it anew, or try a mirror"
                )
            (work / files.MARKER).unlink()  # from here on it is the user's data
            _swap_into_place(work, dest)
    except DownloadError:
        _discard(part)  # complete but bad: the next run must fetch it anew, not resume it
        raise
    _discard(part)
    log.info("%s: %d files verified", dest, len(entries))
    return DownloadResult(dest, len(entries), size, False)


def _discard(part: Path) -> None:
    part.unlink(missing_ok=True)
    _sidecar(part).unlink(missing_ok=True)


def _swap_into_place(work: Path, dest: Path) -> None:
    """Rename ``work`` to ``dest``; an existing ``dest`` (replaced with ``force``) is moved to a
    name unique to this run first and deleted once the new one is in place."""
    if not (dest.exists() or dest.is_symlink()):
        work.rename(dest)
        return
    old = files.temp_path(dest, "old")
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
