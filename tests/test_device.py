"""Device-side process settings: what they change, observed from outside."""

from __future__ import annotations

import platform
import subprocess
import sys

import pytest

PROBE = """
import numpy as np, sys
from geomap_gan.device import keep_freed_memory
if sys.argv[1] == "keep":
    assert keep_freed_memory()
def rss_mb():
    return int(open("/proc/self/statm").read().split()[1]) * 4096 / 2**20
block = np.ones(48 * 2**20, dtype=np.uint8)  # 48 MB, every page touched
before = rss_mb()
del block
print(before - rss_mb())
"""


@pytest.mark.skipif(
    platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="glibc only"
)
@pytest.mark.parametrize(("mode", "kept"), [("keep", True), ("default", False)])
def test_keep_freed_memory_stops_malloc_returning_big_blocks(mode, kept):
    """With the setting a freed 48 MB block stays mapped for reuse (no page faults next time);
    with glibc's defaults it is unmapped at once."""
    out = subprocess.run(
        [sys.executable, "-c", PROBE, mode], capture_output=True, text=True, check=True
    )
    released_mb = float(out.stdout.strip())
    assert (released_mb < 8) if kept else (released_mb > 40), released_mb
