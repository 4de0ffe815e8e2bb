"""The geomap-gan engine as a child process: where it is, its environment, and one render run.

Why a child process: torch, rasterio and their GDAL, PROJ, OpenMP and numpy builds clash with
QGIS's own when imported into QGIS's Python (rasterio#2291 and the like). The child is the
``geomap-gan`` command of an environment of its own; it reports through
``geomap-gan render --progress json`` (one JSON object per line on stdout) and is stopped with
SIGTERM, on which the engine removes its partial output.

No QGIS import here: this module is plain Python, so its logic is tested without QGIS too.
"""

from __future__ import annotations

import json
import os
import queue
import shutil
import subprocess
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

ENV_VARIABLE = "GEOMAP_GAN_EXECUTABLE"
SETTING = "GEOMAP_GAN_EXECUTABLE"  # the Processing provider setting's name
# Variables that point a Python or GDAL at QGIS's own installation: the child must not inherit them.
STRIPPED = ("PYTHONHOME", "PYTHONPATH", "PYTHONSTARTUP", "GDAL_DATA", "GDAL_DRIVER_PATH",
            "PROJ_LIB", "PROJ_DATA", "VIRTUAL_ENV", "CONDA_PREFIX")  # fmt: skip
STRIPPED_PREFIXES = ("QT_", "QGIS_")
CANCEL_GRACE_S = 10.0  # after SIGTERM, how long the engine has to clean up before it is killed


class EngineError(Exception):
    """The engine could not be found, failed, or was cancelled: one line for the user."""


def venv_executable(venv: Path) -> Path:
    """The ``geomap-gan`` command inside a venv, on this platform."""
    if os.name == "nt":
        return venv / "Scripts" / "geomap-gan.exe"
    return venv / "bin" / "geomap-gan"


def find_engine(setting: str | None, setup_venv: Path, environ: Mapping[str, str]) -> Path | None:
    """The engine to run: $GEOMAP_GAN_EXECUTABLE, else the provider setting, else ``geomap-gan``
    on PATH, else the venv that "Set up geomap-gan" makes. Never ``sys.executable``: on Windows
    and macOS that is QGIS itself."""
    for candidate in (environ.get(ENV_VARIABLE), setting):
        if candidate:
            return Path(candidate).expanduser()
    on_path = shutil.which("geomap-gan", path=environ.get("PATH"))
    if on_path:
        return Path(on_path)
    bundled = venv_executable(setup_venv)
    return bundled if bundled.is_file() else None


def not_found_message() -> str:
    return (
        "the geomap-gan engine is not installed: run 'Set up geomap-gan' (Processing toolbox, "
        "geomap-gan), or set Settings > Options > Processing > Providers > geomap-gan > "
        f"'geomap-gan executable', or the environment variable {ENV_VARIABLE}"
    )


def check_executable(path: Path) -> None:
    """A one-line EngineError unless ``path`` is a file this user can run."""
    if not path.is_file():
        raise EngineError(
            f"the geomap-gan executable {path} does not exist; fix the provider setting or "
            f"{ENV_VARIABLE}, or run 'Set up geomap-gan'"
        )
    if not os.access(path, os.X_OK):
        raise EngineError(f"{path} is not executable; point the setting at the geomap-gan command")


def child_env(environ: Mapping[str, str]) -> dict[str, str]:
    """QGIS's environment without what points at QGIS's Python, GDAL, PROJ or Qt."""
    return {
        k: v
        for k, v in environ.items()
        if k not in STRIPPED and not k.startswith(STRIPPED_PREFIXES)
    }


def _pump(stream: Any, lines: queue.Queue[str | None]) -> None:
    """Reader thread: the child's stdout lines onto a queue, then None at its end."""
    for line in stream:
        lines.put(line)
    lines.put(None)


def run_engine(
    args: list[str],
    on_event: Callable[[dict[str, Any]], None],
    is_canceled: Callable[[], bool],
    environ: Mapping[str, str] | None = None,
    poll_s: float = 0.1,
) -> dict[str, Any]:
    """Run ``args`` (a ``geomap-gan render ... --progress json`` command line) and return its
    result event. Every other event goes to ``on_event`` as it arrives. A cancel terminates the
    child (the engine then deletes its partial output) and raises EngineError("cancelled")."""
    env = child_env(os.environ if environ is None else environ)
    try:
        child = spawn(args, env, subprocess.PIPE)
    except OSError as exc:
        raise EngineError(f"cannot start the geomap-gan engine {args[0]}: {exc.strerror}") from exc
    lines: queue.Queue[str | None] = queue.Queue()
    stderr: list[str] = []
    threads = [
        threading.Thread(target=_pump, args=(child.stdout, lines), daemon=True),
        threading.Thread(target=lambda: stderr.extend(child.stderr), daemon=True),
    ]
    for t in threads:
        t.start()
    result: dict[str, Any] | None = None
    error: str | None = None
    while True:
        if is_canceled():
            stop(child)
            raise EngineError("cancelled; no output was written")
        try:
            line = lines.get(timeout=poll_s)
        except queue.Empty:
            continue
        if line is None:
            break
        event = _parse(line)
        if event is None:
            continue
        if event["event"] == "result":
            result = event
        elif event["event"] == "error":
            error = str(event.get("message", ""))
        else:
            on_event(event)
    code = child.wait()
    for t in threads:
        t.join(timeout=5)
    if error is not None:
        raise EngineError(error)
    if code != 0 or result is None:
        raise EngineError(_failure_line(code, stderr))
    return result


def _parse(line: str) -> dict[str, Any] | None:
    """A JSON event, or None for a line that is not one (a library printing to stdout)."""
    try:
        event = json.loads(line)
    except ValueError:
        return None
    return event if isinstance(event, dict) and "event" in event else None


def spawn(args: list[str], env: dict[str, str], stderr: int) -> subprocess.Popen[str]:
    """A child with no stdin and line-buffered text stdout (``stderr``: PIPE or STDOUT), so that
    its lines arrive as it prints them. OSError when it cannot start."""
    return subprocess.Popen(
        args, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=stderr, text=True,
        encoding="utf-8", errors="replace", env=env, bufsize=1,
    )  # fmt: skip


def stop(child: subprocess.Popen[str]) -> None:
    """SIGTERM, so that the engine cleans up; a kill if it has not exited within the grace."""
    child.terminate()
    try:
        child.wait(timeout=CANCEL_GRACE_S)
    except subprocess.TimeoutExpired:
        child.kill()
        child.wait()


def _failure_line(code: int, stderr: list[str]) -> str:
    """The child's last meaningful stderr line (click's usage errors, a crash) as one line."""
    last = [s.strip() for s in stderr if s.strip()]
    errors = [s for s in last if s.startswith("Error:")]
    detail = (errors or last or ["no message"])[-1]
    detail = detail.removeprefix("Error: ")
    return f"the geomap-gan engine failed (exit code {code}): {detail}"
