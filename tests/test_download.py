"""Tests for geomap_gan.download and `geomap-gan download maps`, entirely offline.

A local HTTP server on 127.0.0.1 (in a thread, with Range support) serves a small tar.gz built
from real pairs of ../shared/data/maps286; the real URL is never contacted.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import tarfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from click.testing import CliRunner

from geomap_gan.cli import cli
from geomap_gan.download import (
    MAPS_URL,
    DownloadOptions,
    download_maps,
    extract_tar,
    load_manifest,
    parse_manifest,
)
from geomap_gan.errors import DownloadError

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"


# ---- a tiny HTTP server with Range support ------------------------------------------------------
@dataclass
class ServerState:
    payload: bytes = b""
    etag: str = '"v1"'
    truncate_next: int = 0  # the next N answers stop halfway through the body
    ignore_range: bool = False  # answer 200 with the whole file even to a Range request
    hang: bool = False  # accept the request, then never answer
    stall_next: int = 0  # the next N answers send half the body, then go silent
    requests: list[dict[str, str]] = field(default_factory=list)
    release: threading.Event = field(default_factory=threading.Event)


class _Handler(BaseHTTPRequestHandler):
    def log_message(self, *args: object) -> None:  # keep pytest output clean
        pass

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        st: ServerState = self.server.state  # type: ignore[attr-defined]
        st.requests.append(dict(self.headers.items()))
        if st.hang:
            st.release.wait(10)
            return
        if self.path != "/maps.tar.gz":
            self.send_error(404, "Not Found")
            return
        data, start = st.payload, 0
        m = re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range", ""))
        if m and not st.ignore_range and self.headers.get("If-Range") in (None, st.etag):
            start = int(m.group(1))
            if start >= len(data):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(data)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        body = data[start:]
        self.send_header("Content-Type", "application/gzip")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("ETag", st.etag)
        self.send_header("Accept-Ranges", "bytes")
        self.end_headers()
        if st.truncate_next:
            st.truncate_next -= 1
            body = body[: len(body) // 2]
        if st.stall_next:
            st.stall_next -= 1
            self.wfile.write(body[: len(body) // 2])
            self.wfile.flush()
            st.release.wait(10)
            return
        self.wfile.write(body)


@pytest.fixture
def server() -> Iterator[tuple[ServerState, str]]:
    """(state, base URL) of a server on an ephemeral 127.0.0.1 port."""
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    httpd.daemon_threads = True
    httpd.state = ServerState()  # type: ignore[attr-defined]
    thread = threading.Thread(target=httpd.serve_forever, args=(0.02,), daemon=True)
    thread.start()
    try:
        yield httpd.state, f"http://127.0.0.1:{httpd.server_address[1]}"  # type: ignore[attr-defined]
    finally:
        httpd.state.release.set()  # type: ignore[attr-defined]
        httpd.shutdown()
        httpd.server_close()


# ---- archives ------------------------------------------------------------------------------------
def make_targz(files: dict[str, bytes], top: str | None = "maps", extra=()) -> bytes:
    """A tar.gz with ``files`` under ``top/`` (folders included, as the original has them)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        prefix = f"{top}/" if top else ""
        folders = ([top] if top else []) + sorted({prefix + n.split("/")[0] for n in files})
        for d in folders:
            info = tarfile.TarInfo(d)
            info.type, info.mode = tarfile.DIRTYPE, 0o755
            tf.addfile(info)
        for name, data in files.items():
            info = tarfile.TarInfo(prefix + name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
        for info in extra:
            tf.addfile(info, io.BytesIO(b"x" * info.size) if info.size else None)
    return buf.getvalue()


def manifest_of(files: dict[str, bytes]) -> dict[str, str]:
    return {name: hashlib.sha256(data).hexdigest() for name, data in files.items()}


@pytest.fixture(scope="module")
def real_pairs(maps286: Path) -> dict[str, bytes]:
    """Four real A|B pairs (two train, two val) from the shared maps286 copy (conftest skips
    when ../shared/data is absent, and fails under CI)."""
    raw = [(maps286 / "train" / f"{i}.jpg").read_bytes() for i in (1, 2, 3, 4)]
    return {"train/1.jpg": raw[0], "train/2.jpg": raw[1], "val/1.jpg": raw[2], "val/2.jpg": raw[3]}


def opts(url: str, **kw: object) -> DownloadOptions:
    base = {"timeout": 5.0, "retries": 0, "retry_wait": 0.0, "chunk_size": 16 * 1024}
    base.update(kw)
    return DownloadOptions(url=url, **base)  # type: ignore[arg-type]


def scratch_left(parent: Path) -> list[str]:
    return sorted(p.name for p in parent.iterdir() if p.name.startswith("."))


# ---- manifest ------------------------------------------------------------------------------------
def test_shipped_manifest_lists_the_original_2194_files() -> None:
    m = load_manifest()
    assert len(m) == 2194
    assert sum(k.startswith("train/") for k in m) == 1096
    assert sum(k.startswith("val/") for k in m) == 1098
    assert m["train/1.jpg"].startswith("fd0a9101")
    if (SHARED / "maps_original.sha256").is_file():
        assert m == load_manifest(SHARED / "maps_original.sha256")


@pytest.mark.parametrize(
    "text", ["nothex  train/1.jpg", f"{'a' * 64}  ../x.jpg", f"{'a' * 64}  /abs.jpg", ""]
)
def test_malformed_manifest_is_refused(text: str) -> None:
    with pytest.raises(DownloadError):
        parse_manifest(text)


# ---- download ------------------------------------------------------------------------------------
def test_good_download_extracts_verifies_and_is_then_left_alone(server, real_pairs, tmp_path):
    st, base = server
    st.payload = make_targz(real_pairs)
    dest = tmp_path / "maps"
    calls: list[tuple[int, int | None]] = []
    res = download_maps(
        dest,
        opts(f"{base}/maps.tar.gz"),
        lambda d, t: calls.append((d, t)),
        manifest_of(real_pairs),
    )

    assert res.files == 4 and not res.skipped and res.downloaded_bytes == len(st.payload)
    assert sorted(p.relative_to(dest).as_posix() for p in dest.rglob("*.jpg")) == sorted(real_pairs)
    for name, data in real_pairs.items():
        assert (dest / name).read_bytes() == data
    assert calls[-1] == (len(st.payload), len(st.payload))
    assert [c[0] for c in calls] == sorted(c[0] for c in calls)
    assert scratch_left(tmp_path) == []  # no partial archive or extraction folder left

    again = download_maps(dest, opts(f"{base}/maps.tar.gz"), None, manifest_of(real_pairs))
    assert again.skipped and len(st.requests) == 1  # verified DIR: no request at all

    forced = download_maps(
        dest, opts(f"{base}/maps.tar.gz", force=True), None, manifest_of(real_pairs)
    )
    assert not forced.skipped and len(st.requests) == 2
    assert (dest / "val/2.jpg").read_bytes() == real_pairs["val/2.jpg"]
    assert scratch_left(tmp_path) == []


def test_corrupt_byte_fails_verification_names_file_and_leaves_no_dir(server, real_pairs, tmp_path):
    st, base = server
    bad = dict(real_pairs)
    data = bytearray(bad["train/2.jpg"])
    data[len(data) // 2] ^= 0xFF
    bad["train/2.jpg"] = bytes(data)
    st.payload = make_targz(bad)
    dest = tmp_path / "maps"
    with pytest.raises(DownloadError, match=r"1 of 4 files missing or corrupt \(train/2\.jpg\)"):
        download_maps(dest, opts(f"{base}/maps.tar.gz"), None, manifest_of(real_pairs))
    assert not dest.exists()
    assert scratch_left(tmp_path) == []  # the bad archive is not kept for resuming


@pytest.mark.parametrize("damage", ["flipped-byte", "not-an-archive"])
def test_damaged_archive_is_a_clear_error(server, real_pairs, tmp_path, damage):
    st, base = server
    payload = bytearray(make_targz(real_pairs))
    if damage == "flipped-byte":  # may still inflate, to wrong bytes: then verification says so
        payload[len(payload) // 2] ^= 0xFF
        expected = "damaged|cannot extract|did not verify"
    else:
        payload = bytearray(b"<html>mirror error page</html>" * 100)
        expected = r"^the downloaded file \.maps\.tar\.gz\.part is not a tar archive [^\n]*$"
    st.payload = bytes(payload)
    dest = tmp_path / "maps"
    with pytest.raises(DownloadError, match=expected):
        download_maps(dest, opts(f"{base}/maps.tar.gz"), None, manifest_of(real_pairs))
    assert not dest.exists() and scratch_left(tmp_path) == []


def test_truncated_stream_is_resumed_with_range(server, real_pairs, tmp_path):
    st, base = server
    st.payload = make_targz(real_pairs)
    st.truncate_next = 1
    dest = tmp_path / "maps"
    res = download_maps(dest, opts(f"{base}/maps.tar.gz", retries=2), None, manifest_of(real_pairs))
    assert res.files == 4
    assert len(st.requests) == 2
    assert "Range" not in st.requests[0]
    offset = len(st.payload) // 2
    assert st.requests[1]["Range"] == f"bytes={offset}-"
    assert st.requests[1]["If-Range"] == st.etag
    assert (dest / "train/1.jpg").read_bytes() == real_pairs["train/1.jpg"]


def test_truncated_stream_without_retries_keeps_partial_for_next_run(server, real_pairs, tmp_path):
    st, base = server
    st.payload = make_targz(real_pairs)
    st.truncate_next = 1
    dest = tmp_path / "maps"
    with pytest.raises(DownloadError, match="stream ended at byte .*run again to resume"):
        download_maps(dest, opts(f"{base}/maps.tar.gz"), None, manifest_of(real_pairs))
    assert not dest.exists()
    part = tmp_path / ".maps.tar.gz.part"
    assert part.stat().st_size == len(st.payload) // 2

    download_maps(dest, opts(f"{base}/maps.tar.gz"), None, manifest_of(real_pairs))
    assert st.requests[-1]["Range"] == f"bytes={len(st.payload) // 2}-"
    assert (dest / "val/1.jpg").read_bytes() == real_pairs["val/1.jpg"]
    assert scratch_left(tmp_path) == []


def test_interrupted_run_resumes_on_the_next_run(server, real_pairs, tmp_path):
    st, base = server
    st.payload = make_targz(real_pairs)
    dest = tmp_path / "maps"

    def interrupt(done: int, total: int | None) -> None:
        if done >= 32 * 1024:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        download_maps(dest, opts(f"{base}/maps.tar.gz"), interrupt, manifest_of(real_pairs))
    size = (tmp_path / ".maps.tar.gz.part").stat().st_size
    assert 0 < size < len(st.payload) and not dest.exists()

    calls: list[tuple[int, int | None]] = []
    download_maps(
        dest,
        opts(f"{base}/maps.tar.gz"),
        lambda d, t: calls.append((d, t)),
        manifest_of(real_pairs),
    )
    assert st.requests[-1]["Range"] == f"bytes={size}-"
    assert calls[0] == (size, len(st.payload))  # progress starts where the last run stopped
    assert (dest / "train/2.jpg").read_bytes() == real_pairs["train/2.jpg"]


def test_stream_stalling_midway_times_out_and_resumes(server, real_pairs, tmp_path):
    st, base = server
    st.payload = make_targz(real_pairs)
    st.stall_next = 1
    dest = tmp_path / "maps"
    o = opts(f"{base}/maps.tar.gz", timeout=1.0, retries=1)
    download_maps(dest, o, None, manifest_of(real_pairs))
    assert st.requests[1]["Range"] == f"bytes={len(st.payload) // 2}-"
    assert (dest / "train/1.jpg").read_bytes() == real_pairs["train/1.jpg"]


def test_complete_partial_archive_is_not_fetched_again(server, real_pairs, tmp_path):
    # A run killed after the download but before the rename: the server answers 416.
    st, base = server
    st.payload = make_targz(real_pairs)
    url = f"{base}/maps.tar.gz"
    (tmp_path / ".maps.tar.gz.part").write_bytes(st.payload)
    (tmp_path / ".maps.tar.gz.part.json").write_text(json.dumps({"url": url, "ETag": st.etag}))
    res = download_maps(tmp_path / "maps", opts(url), None, manifest_of(real_pairs))
    assert res.files == 4 and st.requests[0]["Range"] == f"bytes={len(st.payload)}-"
    assert scratch_left(tmp_path) == []


def test_partial_longer_than_the_file_starts_over(server, real_pairs, tmp_path):
    st, base = server
    st.payload = make_targz(real_pairs)
    url = f"{base}/maps.tar.gz"
    (tmp_path / ".maps.tar.gz.part").write_bytes(b"x" * (len(st.payload) + 10))
    (tmp_path / ".maps.tar.gz.part.json").write_text(json.dumps({"url": url, "ETag": st.etag}))
    download_maps(tmp_path / "maps", opts(url, retries=1), None, manifest_of(real_pairs))
    assert "Range" in st.requests[0] and "Range" not in st.requests[1]  # 416, then from byte 0
    assert (tmp_path / "maps/val/1.jpg").read_bytes() == real_pairs["val/1.jpg"]


def test_partial_archive_from_another_url_is_discarded(server, real_pairs, tmp_path):
    st, base = server
    st.payload = make_targz(real_pairs)
    (tmp_path / ".maps.tar.gz.part").write_bytes(b"x" * 1000)
    (tmp_path / ".maps.tar.gz.part.json").write_text(json.dumps({"url": "http://elsewhere/"}))
    download_maps(tmp_path / "maps", opts(f"{base}/maps.tar.gz"), None, manifest_of(real_pairs))
    assert "Range" not in st.requests[0]


def test_server_ignoring_range_restarts_from_zero(server, real_pairs, tmp_path):
    st, base = server
    st.payload = make_targz(real_pairs)
    st.truncate_next, st.ignore_range = 1, True
    dest = tmp_path / "maps"
    download_maps(dest, opts(f"{base}/maps.tar.gz", retries=1), None, manifest_of(real_pairs))
    assert "Range" in st.requests[1]  # asked to resume, got the whole file: must not splice
    assert (dest / "val/2.jpg").read_bytes() == real_pairs["val/2.jpg"]


def test_changed_file_on_server_is_not_spliced(server, real_pairs, tmp_path):
    st, base = server
    st.payload = make_targz({"train/1.jpg": b"old" * 20000})
    st.truncate_next = 1
    dest = tmp_path / "maps"
    with pytest.raises(DownloadError):
        download_maps(dest, opts(f"{base}/maps.tar.gz"), None, manifest_of(real_pairs))
    st.payload, st.etag = make_targz(real_pairs), '"v2"'  # If-Range no longer matches: 200
    download_maps(dest, opts(f"{base}/maps.tar.gz"), None, manifest_of(real_pairs))
    assert (dest / "train/1.jpg").read_bytes() == real_pairs["train/1.jpg"]


def test_404_is_a_clear_error_without_retries(server, tmp_path):
    _, base = server
    with pytest.raises(DownloadError, match=r"HTTP 404 Not Found; check the URL"):
        download_maps(
            tmp_path / "maps", opts(f"{base}/nope.tar.gz", retries=3), None, {"a": "0" * 64}
        )
    assert not (tmp_path / "maps").exists()


def test_hanging_server_times_out(server, tmp_path):
    st, base = server
    st.hang = True
    t0 = time.monotonic()
    with pytest.raises(DownloadError, match=r"timed out"):
        download_maps(
            tmp_path / "maps", opts(f"{base}/maps.tar.gz", timeout=1.0), None, {"a": "0" * 64}
        )
    assert time.monotonic() - t0 < 5
    assert not (tmp_path / "maps").exists()


def test_non_http_url_is_refused(tmp_path):
    with pytest.raises(DownloadError, match="unsupported URL"):
        download_maps(tmp_path / "maps", opts("file:///etc/passwd"), None, {"a": "0" * 64})


def test_existing_dir_that_does_not_verify_needs_force(server, real_pairs, tmp_path):
    st, base = server
    st.payload = make_targz(real_pairs)
    dest = tmp_path / "maps"
    (dest / "train").mkdir(parents=True)
    (dest / "train" / "1.jpg").write_bytes(b"not the file")
    with pytest.raises(DownloadError, match="4 of 4 files missing or corrupt.*--force"):
        download_maps(dest, opts(f"{base}/maps.tar.gz"), None, manifest_of(real_pairs))
    assert (dest / "train" / "1.jpg").read_bytes() == b"not the file" and not st.requests

    download_maps(dest, opts(f"{base}/maps.tar.gz", force=True), None, manifest_of(real_pairs))
    assert (dest / "train" / "1.jpg").read_bytes() == real_pairs["train/1.jpg"]


# ---- unsafe archives -----------------------------------------------------------------------------
def _member(name: str, kind: bytes = tarfile.REGTYPE, link: str = "", size: int = 0):
    info = tarfile.TarInfo(name)
    info.type, info.linkname, info.size = kind, link, size
    return info


UNSAFE = {
    "dotdot": _member("maps/../evil.txt", size=4),
    "nested-dotdot": _member("maps/train/../../evil.txt", size=4),
    "absolute": _member("/tmp/geomap-gan-evil.txt", size=4),
    "symlink-out": _member("maps/train/evil", tarfile.SYMTYPE, "../../../evil.txt"),
    "symlink-abs": _member("maps/train/evil", tarfile.SYMTYPE, "/etc/passwd"),
    "hardlink-out": _member("maps/train/evil", tarfile.LNKTYPE, "../evil.txt"),
    "device": _member("maps/train/evil", tarfile.CHRTYPE),
    "fifo": _member("maps/train/evil", tarfile.FIFOTYPE),
}


@pytest.mark.parametrize("kind", sorted(UNSAFE))
def test_unsafe_member_refuses_the_archive(server, tmp_path, kind):
    st, base = server
    files = {"train/1.jpg": b"one", "val/1.jpg": b"two"}
    st.payload = make_targz(files, extra=[UNSAFE[kind]])
    dest = tmp_path / "sub" / "maps"
    with pytest.raises(DownloadError, match="refus"):
        download_maps(dest, opts(f"{base}/maps.tar.gz"), None, manifest_of(files))
    assert not dest.exists()
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["sub"]  # nothing written anywhere
    assert not Path("/tmp/geomap-gan-evil.txt").exists()


def test_symlink_chain_escaping_at_extraction_is_refused(tmp_path):
    # "a" -> "." and "b" -> "a/.." look inside lexically, but b really is root's parent.
    archive = tmp_path / "x.tar"
    with tarfile.open(archive, "w") as tf:
        tf.addfile(_member("a", tarfile.SYMTYPE, "."))
        tf.addfile(_member("b", tarfile.SYMTYPE, "a/.."))
    root = tmp_path / "root"
    root.mkdir()
    with pytest.raises(DownloadError, match="out of the folder"):
        extract_tar(archive, root)


def test_archive_without_top_folder_is_extracted_as_is(tmp_path):
    archive = tmp_path / "x.tar.gz"
    archive.write_bytes(make_targz({"train/1.jpg": b"a", "val/1.jpg": b"b"}, top=None))
    root = tmp_path / "root"
    root.mkdir()
    assert extract_tar(archive, root) == 2
    assert (root / "train/1.jpg").read_bytes() == b"a" and (root / "val/1.jpg").read_bytes() == b"b"


# ---- CLI -----------------------------------------------------------------------------------------
def test_cli_download_maps(server, real_pairs, tmp_path):
    st, base = server
    st.payload = make_targz(real_pairs)
    manifest = tmp_path / "test.sha256"
    manifest.write_text("".join(f"{h}  {n}\n" for n, h in manifest_of(real_pairs).items()))
    dest = tmp_path / "maps"
    args = ["download", "maps", str(dest), "--url", f"{base}/maps.tar.gz", "--manifest",
            str(manifest), "--timeout", "5"]  # fmt: skip
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    assert f"4 files downloaded and verified in {dest}" in result.output
    assert (dest / "train/1.jpg").read_bytes() == real_pairs["train/1.jpg"]

    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0 and "already holds all 4 verified files" in result.output
    assert len(st.requests) == 1


def test_cli_download_404_is_one_line_exit_2(server, tmp_path):
    _, base = server
    args = ["download", "maps", str(tmp_path / "maps"), "--url", f"{base}/gone.tar.gz"]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 2
    assert "Error:" in result.output and "HTTP 404" in result.output
    assert "Traceback" not in result.output
    assert not (tmp_path / "maps").exists()


def test_cli_default_url_is_the_pix2pix_one() -> None:
    assert MAPS_URL == "http://efrosgans.eecs.berkeley.edu/pix2pix/datasets/maps.tar.gz"
    result = CliRunner().invoke(cli, ["download", "maps", "--help"])
    assert result.exit_code == 0 and MAPS_URL in re.sub(r"\s+", "", result.output)


def test_train_on_missing_folder_says_to_download(tmp_path):
    missing = tmp_path / "nothere"
    args = ["train", str(missing), "--out", str(tmp_path / "run"), "--device", "cpu",
            "--threads", "1"]  # fmt: skip
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 2, result.output
    assert f"run `geomap-gan download maps {missing}` first" in result.output
    assert "Traceback" not in result.output
    assert not (tmp_path / "run").exists()
