"""Installing the engine for "Set up geomap-gan": a venv of its own, torch, then geomap-gan.

Plain Python (no QGIS import) so the commands and the failure diagnosis are tested without QGIS.
The venv is isolated (no ``--system-site-packages``): the engine runs as a child process, so it
needs nothing of QGIS's Python and must not see QGIS's numpy or GDAL bindings.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable, Mapping
from pathlib import Path

from .engine import EngineError, child_env, spawn, stop, venv_executable

PACKAGE = "geomap-gan"
CPU_TORCH_INDEX = "https://download.pytorch.org/whl/cpu"
# pip's words for a failure, and the one line that tells the user what to do about it.
PIP_FAILURES = (
    (("ProxyError", "407 Proxy Authentication"),
     "the proxy refused the connection; set HTTPS_PROXY (and the proxy's credentials) for QGIS"),
    (("No space left on device", "Errno 28"),
     "the disk is full; free some space (torch needs about 1 GB, 5 GB with CUDA)"),
    (("Failed to establish a new connection", "Temporary failure in name resolution",
      "Name or service not known", "Network is unreachable", "No route to host",
      "Read timed out", "ConnectTimeoutError"),
     "no connection to the package index; check the network (or a proxy) and run it again"),
    (("SSLError", "CERTIFICATE_VERIFY_FAILED"),
     "the package index's TLS certificate was not trusted; set PIP_CERT to your CA bundle"),
    (("Could not find a version that satisfies", "No matching distribution found",
      "ResolutionImpossible", "conflicting dependencies"),
     "pip found no installable version (none matches, or the versions conflict); check the "
     "package spec, the pip constraints in use and that the index is reachable"),
)  # fmt: skip


def python_for_venv(environ: Mapping[str, str]) -> str | None:
    """A Python 3 on PATH to make the venv with (QGIS's own executable is not one on Windows or
    macOS, so it is never used)."""
    names = ("python.exe", "py.exe") if os.name == "nt" else ("python3",)
    for name in names:
        found = shutil.which(name, path=environ.get("PATH"))
        if found:
            return found
    return None


def install_commands(
    python: str, venv: Path, package: str = PACKAGE, torch: str = "cpu"
) -> list[list[str]]:
    """The commands that set the engine up: make the venv, install torch, then the package.

    ``torch``: ``cpu`` (PyTorch's CPU wheels, a few hundred MB instead of gigabytes of CUDA),
    ``cuda`` (PyPI's default build) or a pip requirement such as ``torch==2.13.0`` (taken as is,
    from whatever index pip is configured with).
    """
    vpy = str(venv_python(venv))
    pip = [vpy, "-m", "pip", "install", "--progress-bar", "off"]
    if torch == "cpu":
        torch_cmd = [*pip, "torch", "--index-url", CPU_TORCH_INDEX]
    elif torch == "cuda":
        torch_cmd = [*pip, "torch"]
    else:
        torch_cmd = [*pip, torch]
    return [
        [python, "-m", "venv", str(venv)],
        torch_cmd,
        [*pip, package],
    ]


def venv_python(venv: Path) -> Path:
    return venv / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


def pip_failure(lines: list[str]) -> str:
    """One line naming why pip failed, from its output, with what to do."""
    text = "\n".join(lines)
    for needles, message in PIP_FAILURES:
        if any(n in text for n in needles):
            return message
    last = [s.strip() for s in lines if s.strip()]
    errors = [s for s in last if s.startswith("ERROR:")]
    return (errors or last or ["no output"])[-1]


def run_install(
    commands: list[list[str]],
    log: Callable[[str], None],
    is_canceled: Callable[[], bool],
    environ: Mapping[str, str] | None = None,
) -> Path:
    """Run the install commands one by one, each output line to ``log``; the engine's path.

    Raises EngineError with one line (which step, why, what to do) when a step fails.
    """
    env = child_env(os.environ if environ is None else environ)
    env["PYTHONUNBUFFERED"] = "1"  # pip's lines as they come, not at the end
    for step in commands:
        log("$ " + " ".join(step))
        lines = _run_step(step, log, is_canceled, env)
        if lines is not None:
            what = "making the venv" if "venv" in step[:3] else f"pip install {step[-1]}"
            raise EngineError(f"setting up geomap-gan failed while {what}: {pip_failure(lines)}")
    venv = Path(commands[0][-1])
    return venv_executable(venv)


def _run_step(
    step: list[str],
    log: Callable[[str], None],
    is_canceled: Callable[[], bool],
    env: dict[str, str],
) -> list[str] | None:
    """Run one command, streaming its lines; None on success, else its output lines."""
    try:
        child = spawn(step, env, subprocess.STDOUT)
    except OSError as exc:
        return [f"cannot start {step[0]}: {exc.strerror}"]
    lines: list[str] = []
    assert child.stdout is not None
    for line in child.stdout:
        lines.append(line.rstrip())
        log(line.rstrip())
        if is_canceled():
            stop(child)
            raise EngineError("set-up cancelled; run it again to finish")
    return None if child.wait() == 0 else lines
