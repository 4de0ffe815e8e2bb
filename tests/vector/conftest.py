"""Fixtures of the vectorize tests (helpers: vector_maps.py)."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture
def outputs(tmp_path: Path) -> Path:
    """A folder for outputs only (so a test can check that nothing was left in it)."""
    folder = tmp_path / "out"
    folder.mkdir()
    return folder
