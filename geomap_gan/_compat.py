"""Old flat import paths (``geomap_gan.nets``, ``geomap_gan.scene``, ...) keep working for this
release: each resolves to the module's new home in a subpackage, with a DeprecationWarning.

``geomap_gan.render`` and ``geomap_gan.train`` are not aliased: those names are the public
functions, and a module of the same name would shadow them once imported. Importing them as
modules fails with a message that names the new home.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys
import warnings
from importlib.machinery import ModuleSpec
from types import ModuleType

MOVED = {
    "tiling": "rendering.windows",
    "scene": "rendering.scene",
    "resample": "rendering.resample",
    "reader": "rendering.reader",
    "radiometry": "rendering.radiometry",
    "blend": "rendering.blend",
    "inference": "rendering.inference",
    "pipeline": "rendering.pipeline",
    "output": "rendering.output",
    "options": "rendering.options",
    "aoi": "rendering.aoi",
    "nets": "model.nets",
    "modelfile": "model.modelfile",
    "aot": "model.aot",
    "data": "training.data",
    "augment": "training.augment",
    "trainconfig": "training.config",
    "refine": "training.refine",
    "metrics": "training.metrics",
}
SHADOWED = {"render": "rendering.engine", "train": "training.loop"}


class _Alias(importlib.abc.Loader):
    """Loads an old module name as the already-imported module at its new path."""

    def __init__(self, new: str) -> None:
        self.new = new

    def create_module(self, spec: ModuleSpec) -> ModuleType:
        warnings.warn(
            f"{spec.name} moved to {self.new}; the old path goes in the next release",
            DeprecationWarning,
            stacklevel=3,
        )
        return importlib.import_module(self.new)

    def exec_module(self, module: ModuleType) -> None:
        """Nothing to run: the module was executed under its new name."""


class MovedModules(importlib.abc.MetaPathFinder):
    """Answers only for ``geomap_gan.<old name>``; every other import passes through."""

    def find_spec(
        self, fullname: str, path: object = None, target: object = None
    ) -> ModuleSpec | None:
        package, _, name = fullname.rpartition(".")
        if package != "geomap_gan":
            return None
        if name in SHADOWED:
            raise ImportError(
                f"geomap_gan.{name} is the function geomap_gan.{name}; its module is now "
                f"geomap_gan.{SHADOWED[name]}"
            )
        if name not in MOVED:
            return None
        return importlib.util.spec_from_loader(fullname, _Alias(f"geomap_gan.{MOVED[name]}"))


def install() -> None:
    """Add the finder once (idempotent across reloads of the package)."""
    if not any(isinstance(f, MovedModules) for f in sys.meta_path):
        sys.meta_path.append(MovedModules())
