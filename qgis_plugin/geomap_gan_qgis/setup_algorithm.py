"""Processing algorithm ``geomap_gan:setup`` ("Set up geomap-gan"): install the engine from QGIS.

Makes a venv in the user's QGIS profile folder and pip-installs torch (CPU wheels unless the user
asks for CUDA) and geomap-gan into it, with pip's lines in the Processing log. The render
algorithm then finds the engine there (``render_algorithm.setup_venv``). The work is
``installer``'s; this module is the parameters and the feedback.
"""

from __future__ import annotations

import os
import shutil
from typing import Any

from qgis.core import (
    QgsProcessingContext,
    QgsProcessingException,
    QgsProcessingFeedback,
    QgsProcessingOutputFile,
    QgsProcessingParameterBoolean,
    QgsProcessingParameterEnum,
    QgsProcessingParameterFile,
    QgsProcessingParameterString,
)

from . import compat
from .engine import EngineError
from .installer import PACKAGE, install_commands, python_for_venv, run_install
from .render_algorithm import CancellableAlgorithm, setup_venv

TORCH_BUILDS = ("cpu", "cuda")


class SetupAlgorithm(CancellableAlgorithm):
    """Set up geomap-gan (``geomap_gan:setup``)."""

    PACKAGE = "PACKAGE"
    TORCH = "TORCH"
    TORCH_REQUIREMENT = "TORCH_REQUIREMENT"
    PYTHON = "PYTHON"
    REINSTALL = "REINSTALL"
    EXECUTABLE = "EXECUTABLE"

    NAME = "setup"
    DISPLAY_NAME = "Set up geomap-gan"
    DESCRIPTION = "Install the geomap-gan engine (PyTorch and geomap-gan) in a venv of its own."

    def shortHelpString(self) -> str:  # noqa: N802 (QGIS API)
        return (
            f"Creates a Python environment in {setup_venv()} and installs PyTorch and geomap-gan "
            "into it with pip (needs the network; about 1 GB with CPU PyTorch, 5 GB with CUDA). "
            "The render algorithm then uses it. QGIS's own Python is not changed.<br><br>"
            "<b>PyTorch build</b>: cpu (smaller, works everywhere) or cuda (NVIDIA GPUs).<br>"
            "<b>Package</b>: what pip installs, geomap-gan by default (a wheel file or a "
            "version such as geomap-gan==0.2.0 also work)."
        )

    def initAlgorithm(self, config: dict[str, Any] | None = None) -> None:  # noqa: N802
        builds = QgsProcessingParameterEnum(
            self.TORCH, "PyTorch build", options=list(TORCH_BUILDS), defaultValue="cpu"
        )
        builds.setUsesStaticStrings(True)
        self.addParameter(builds)
        self.addParameter(
            QgsProcessingParameterString(self.PACKAGE, "Package (pip requirement)", PACKAGE)
        )
        advanced = [
            QgsProcessingParameterString(
                self.TORCH_REQUIREMENT,
                "PyTorch pip requirement (empty: from the build above)",
                optional=True,
            ),
            QgsProcessingParameterFile(
                self.PYTHON,
                "Python 3 to make the environment with (empty: python3 on PATH)",
                behavior=compat.FILE,
                optional=True,
            ),
            QgsProcessingParameterBoolean(
                self.REINSTALL, "Delete an existing environment first", defaultValue=False
            ),
        ]
        for param in advanced:
            param.setFlags(param.flags() | compat.ADVANCED)
            self.addParameter(param)
        self.addOutput(QgsProcessingOutputFile(self.EXECUTABLE, "geomap-gan executable"))

    def processAlgorithm(  # noqa: N802 (QGIS API)
        self,
        parameters: dict[str, Any],
        context: QgsProcessingContext,
        feedback: QgsProcessingFeedback,
    ) -> dict[str, Any]:
        if feedback is None:
            feedback = QgsProcessingFeedback()
        python = self.parameterAsFile(parameters, self.PYTHON, context) or python_for_venv(
            os.environ
        )
        if not python:
            raise QgsProcessingException(
                "no Python 3 found on PATH to make the environment with; install Python 3 "
                "(with its venv module) or give its path in 'Python 3 to make the environment with'"
            )
        venv = setup_venv()
        if venv.exists() and self.parameterAsBoolean(parameters, self.REINSTALL, context):
            feedback.pushInfo(f"deleting {venv}")
            shutil.rmtree(venv)
        torch = self.parameterAsString(parameters, self.TORCH_REQUIREMENT, context).strip()
        torch = torch or self.parameterAsEnumString(parameters, self.TORCH, context)
        package = self.parameterAsString(parameters, self.PACKAGE, context).strip() or PACKAGE
        commands = install_commands(python, venv, package, torch)
        try:
            executable = run_install(commands, feedback.pushConsoleInfo, feedback.isCanceled)
        except EngineError as exc:
            raise QgsProcessingException(str(exc)) from None
        if not executable.is_file():
            raise QgsProcessingException(
                f"pip finished but {executable} is missing; is {package!r} geomap-gan?"
            )
        feedback.pushInfo(f"geomap-gan is set up: {executable}")
        return {self.EXECUTABLE: str(executable)}
