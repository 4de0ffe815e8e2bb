"""QGIS enum spellings that work from QGIS 3.22 to QGIS 4 (Qt6).

QGIS 3.36 moved the unscoped enums (``QgsProcessingAlgorithm.FlagCanCancel``) into scoped ones
on ``Qgis`` (``Qgis.ProcessingAlgorithmFlag.CanCancel``); QGIS 4 with PyQt6 keeps only those.
Each constant here takes the scoped spelling where the running QGIS has it, else the old one.
"""

from __future__ import annotations

from typing import Any

from qgis.core import (
    Qgis,
    QgsCoordinateReferenceSystem,
    QgsProcessing,
    QgsProcessingAlgorithm,
    QgsProcessingParameterDefinition,
    QgsProcessingParameterFile,
    QgsProcessingParameterNumber,
)


def scoped(new: str, old_owner: Any, old_name: str) -> Any:
    """``Qgis.<new>`` (e.g. 'ProcessingAlgorithmFlag.CanCancel') if present, else the old name."""
    scope_name, _, member = new.partition(".")
    scope = getattr(Qgis, scope_name, None)
    if scope is not None and hasattr(scope, member):
        return getattr(scope, member)
    return getattr(old_owner, old_name)


CAN_CANCEL = scoped("ProcessingAlgorithmFlag.CanCancel", QgsProcessingAlgorithm, "FlagCanCancel")
ADVANCED = scoped(
    "ProcessingParameterFlag.Advanced", QgsProcessingParameterDefinition, "FlagAdvanced"
)
INTEGER = scoped("ProcessingNumberParameterType.Integer", QgsProcessingParameterNumber, "Integer")
DOUBLE = scoped("ProcessingNumberParameterType.Double", QgsProcessingParameterNumber, "Double")
FILE = scoped("ProcessingFileParameterBehavior.File", QgsProcessingParameterFile, "File")
FOLDER = scoped("ProcessingFileParameterBehavior.Folder", QgsProcessingParameterFile, "Folder")
POLYGONS = scoped("ProcessingSourceType.VectorPolygon", QgsProcessing, "TypeVectorPolygon")
WKT_GDAL = scoped("CrsWktVariant.PreferredGdal", QgsCoordinateReferenceSystem, "WKT_PREFERRED_GDAL")
