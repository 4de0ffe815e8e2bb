"""Exception hierarchy.

Every error a user can cause derives from :class:`GeomapGanError`; the CLI turns it into a one-line
message and exit code 2, the QGIS plugin into a ``QgsProcessingException``. Each subclass also
inherits the matching builtin (as rasterio does) so callers may catch either.
"""

from __future__ import annotations


class GeomapGanError(Exception):
    """Root of all errors that are the user's to fix (bad input, bad options, missing files)."""


class InputError(GeomapGanError, ValueError):
    """An input raster, option or AOI is unusable."""


class OutputExistsError(GeomapGanError, FileExistsError):
    """The output already exists and ``overwrite`` was not requested."""


class OutputError(GeomapGanError, OSError):
    """The output cannot be written (missing or read-only folder, same path as the input)."""


class ModelFileError(GeomapGanError, ValueError):
    """A model file is missing, truncated, foreign or tampered with."""


class DatasetError(GeomapGanError, FileNotFoundError):
    """A training/evaluation dataset folder is missing or malformed."""


class CheckpointError(GeomapGanError, ValueError):
    """A training checkpoint does not match the run it should resume."""


class DownloadError(GeomapGanError, OSError):
    """A dataset download failed, timed out or did not verify."""


class RenderCancelled(GeomapGanError):
    """The caller's cancel check asked to stop; no output was written."""
