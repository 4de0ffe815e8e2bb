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


def test_render_and_train_stay_functions_after_their_modules_load() -> None:
    """The engine and the trainer live in subpackages, so importing them never replaces the
    public functions ``geomap_gan.render`` and ``geomap_gan.train`` with modules."""
    import geomap_gan.rendering.engine
    import geomap_gan.training.loop  # noqa: F401

    assert callable(geomap_gan.render) and callable(geomap_gan.train)
    assert geomap_gan.render is geomap_gan.rendering.engine.render


def test_old_flat_module_paths_resolve_to_the_moved_modules() -> None:
    code = (
        "import warnings, sys\n"
        "with warnings.catch_warnings(record=True) as w:\n"
        "    warnings.simplefilter('always')\n"
        "    import geomap_gan.nets as old\n"
        "    from geomap_gan.scene import open_raster\n"
        "import geomap_gan.model.nets as new, geomap_gan.rendering.scene as scene\n"
        "print(old is new, open_raster is scene.open_raster, "
        "sum(issubclass(x.category, DeprecationWarning) for x in w))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["True", "True", "2"]


def test_old_module_paths_of_the_public_functions_fail_with_their_new_home() -> None:
    code = "import geomap_gan.render"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 1
    assert "its module is now geomap_gan.rendering.engine" in out.stderr
