"""One render() in a fresh interpreter, so that benchmark runs share no process state (imports,
loaded compiled code, malloc settings); its figures come from the kernel's accounting of the
child (``os.wait4``), so the parent's own memory and CPU do not count."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

CHILD = """
import json, sys
sys.path.insert(0, {bench!r})
from render_throughput import random_model
from geomap_gan.device import configure_process, resolve_device
from geomap_gan.rendering.engine import RenderOptions, render
options = RenderOptions(**{options!r})
configure_process(resolve_device(options.device), options.threads)  # as the CLI does
result = render({scene!r}, {out!r}, random_model({ngf}, {arch!r}), options)
import torch
gpu = torch.cuda.max_memory_allocated() / 2**20 if torch.cuda.is_available() else None
print(json.dumps(dict(seconds=result.seconds, windows=result.windows, mp=result.megapixels,
                      gpu_peak_mb=gpu)))
"""


def render_in_child(scene: Path, out: Path, ngf: int, options: dict, arch: str = "v2") -> dict:
    """Render ``scene`` with a random ngf generator and ``RenderOptions(**options)``; returns
    render()'s seconds, windows and megapixels, the child's CPU seconds and peak RSS (MB), and the
    peak of torch's CUDA allocations (MB; None without a GPU)."""
    code = CHILD.format(bench=str(Path(__file__).resolve().parent), scene=str(scene),
                        out=str(out), ngf=ngf, options=options, arch=arch)  # fmt: skip
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    printed = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"render in a child process failed with exit code {proc.returncode}")
    info = json.loads(printed.strip().splitlines()[-1])
    info.update(cpu=usage.ru_utime + usage.ru_stime, peak_rss_mb=usage.ru_maxrss / 1024)
    return info


def run_command(cmd: list[str], cwd: Path, env: dict | None = None) -> tuple[float, str, dict]:
    """Run ``cmd`` to its end: its wall seconds, its stdout, and the kernel's accounting of it
    (CPU seconds ``cpu``, peak RSS in GB ``rss_gb``); SystemExit when it fails."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, env=env, cwd=cwd, text=True)
    printed = proc.stdout.read() if proc.stdout else ""
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{' '.join(cmd[:6])} ... failed")
    return wall, printed, {"cpu": usage.ru_utime + usage.ru_stime,
                           "rss_gb": usage.ru_maxrss / 2**20}  # fmt: skip
