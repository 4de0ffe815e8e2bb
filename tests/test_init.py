"""The public API resolves lazily: importing the package does not import torch."""

from __future__ import annotations

import subprocess
import sys

import geomap_gan


def test_every_public_name_resolves() -> None:
    for name in geomap_gan.__all__:
        assert getattr(geomap_gan, name) is not None, name


def test_import_and_help_stay_light() -> None:
    code = "import sys, geomap_gan.cli; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
