"""Shared fixtures: paths to the real data in ../shared/data and tiny models for fast tests."""

from __future__ import annotations

import os
from pathlib import Path
from typing import NoReturn

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"
IN_CI = os.environ.get("CI") == "true"


def unavailable(reason: str, in_ci: str) -> NoReturn:
    """Skip a test whose prerequisite is missing here; under CI=true, where everything must be
    installed, fail with ``in_ci`` instead."""
    if IN_CI:
        pytest.fail(f"{reason}: {in_ci}")
    pytest.skip(reason)


def require(path: Path) -> Path:
    """The path, or skip the test when the shared data is absent (a failure under CI)."""
    if not path.exists():
        unavailable(f"{path} is missing", "CI must run with ../shared beside the checkout")
    return path


@pytest.fixture(autouse=True)
def _private_compile_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Compiled generators (geomap_gan.model.aot) go to a folder of the test, never ~/.cache."""
    folder = tmp_path / "compile-cache"
    monkeypatch.setenv("GEOMAP_GAN_CACHE_DIR", str(folder))
    return folder / "aot"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    return require(SHARED_DATA)


@pytest.fixture(scope="session")
def maps286(shared_data: Path) -> Path:
    return require(shared_data / "maps286")


@pytest.fixture(scope="session")
def maps256(shared_data: Path) -> Path:
    return require(shared_data / "maps256")


@pytest.fixture(scope="session")
def geotiff_dir(shared_data: Path) -> Path:
    return require(shared_data / "geotiff")


@pytest.fixture
def tiny_model_file(tmp_path: Path) -> Path:
    """A randomly initialised 32 px, ngf=8 model file (fast to run, real file format)."""
    import torch

    from geomap_gan.model.modelfile import MapModel, ModelCard, build_generator, save_model
    from geomap_gan.model.nets import init_weights

    torch.manual_seed(0)
    card = ModelCard(name="tiny", ngf=8, num_downs=5, tile_size=32, gsd=2.0)
    return save_model(
        MapModel(init_weights(build_generator(card)), card), tmp_path / "tiny.safetensors"
    )


@pytest.fixture
def outputs(tmp_path: Path) -> Path:
    """A folder for outputs only (so a test can check that nothing was left in it)."""
    folder = tmp_path / "out"
    folder.mkdir()
    return folder
