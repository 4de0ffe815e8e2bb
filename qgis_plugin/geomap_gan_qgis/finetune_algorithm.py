"""Processing algorithm ``geomap_gan:finetune`` ("Fine-tune model"): a pairs folder (from "Make
training pairs") in, a fine-tuned model out, trained by ``geomap-gan finetune`` in the engine's
own process.

Cancel stops the child with SIGTERM, on which the trainer saves a checkpoint in the run folder;
a second run into the same folder resumes from it (``--resume``). A run folder that holds a
finished model is started over (QGIS asked for that folder). Nothing here imports torch.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from qgis.core import (
    QgsProcessingContext,
    QgsProcessingException,
    QgsProcessingFeedback,
    QgsProcessingOutputFile,
    QgsProcessingOutputNumber,
    QgsProcessingParameterEnum,
    QgsProcessingParameterFile,
    QgsProcessingParameterFolderDestination,
    QgsProcessingParameterNumber,
)

from . import compat
from .engine import EngineError, check_executable, not_found_message, run_engine
from .render_algorithm import DEVICES, CancellableAlgorithm, _is_set, _show_event, locate_engine

FREEZE = ("none", "encoder")  # geomap_gan.training.finetune's choices; "none" is the recipe's


def resume_flag(run: Path) -> str:
    """``--resume`` when ``run`` holds a checkpoint but no finished model (a cancelled run),
    else ``--overwrite`` (a new folder, or a finished run that QGIS was asked to redo)."""
    unfinished = (run / "checkpoint.pt").is_file() and not (run / "model.safetensors").exists()
    return "--resume" if unfinished else "--overwrite"


class FinetuneAlgorithm(CancellableAlgorithm):
    """Fine-tune model (``geomap_gan:finetune``)."""

    PAIRS = "PAIRS"
    MODEL = "MODEL"
    DEVICE = "DEVICE"
    EPOCHS = "EPOCHS"
    EPOCHS_DECAY = "EPOCHS_DECAY"
    FREEZE = "FREEZE"
    OUTPUT = "OUTPUT"
    MODEL_FILE = "MODEL_FILE"

    NAME = "finetune"
    DISPLAY_NAME = "Fine-tune model"
    DESCRIPTION = "Teach the model your region from a folder of training pairs."
    TAGS = ("pix2pix", "training", "fine-tune", "map", "deep learning", "model")

    def shortHelpString(self) -> str:  # noqa: N802 (QGIS API)
        return (
            "Fine-tunes the map model (the bundled one, or the model file given) on the pairs "
            "that <i>Make training pairs</i> wrote, with a recipe that runs on a laptop CPU in "
            "minutes for a few hundred pairs. Progress is per update; validation on the pairs' "
            "validation share is logged with the map classes' IoU.<br><br>"
            "<b>Cancel</b> keeps a checkpoint in the run folder: run again into the same folder "
            "to resume.<br>"
            "The result is <i>run folder</i>/model.safetensors: give it as the model of "
            "<i>Render map from satellite image</i>."
        )

    def canExecute(self) -> tuple[bool, str]:  # noqa: N802 (QGIS API)
        return (True, "") if locate_engine() is not None else (False, not_found_message())

    def initAlgorithm(self, config: dict[str, Any] | None = None) -> None:  # noqa: N802
        self.addParameter(
            QgsProcessingParameterFile(self.PAIRS, "Pairs folder", behavior=compat.FOLDER)
        )
        self.addParameter(
            QgsProcessingParameterFile(
                self.MODEL, "Base model (empty: the bundled model)", behavior=compat.FILE,
                optional=True, fileFilter="geomap-gan models (*.safetensors)",
            )
        )  # fmt: skip
        device = QgsProcessingParameterEnum(
            self.DEVICE, "Device", options=list(DEVICES), defaultValue=DEVICES[0]
        )
        device.setUsesStaticStrings(True)
        self.addParameter(device)
        freeze = QgsProcessingParameterEnum(
            self.FREEZE, "Layers kept as in the base model", options=list(FREEZE),
            defaultValue=FREEZE[0],
        )  # fmt: skip
        freeze.setUsesStaticStrings(True)
        advanced = [
            QgsProcessingParameterNumber(self.EPOCHS, "Epochs at the full rate (empty: recipe)",
                                         type=compat.INTEGER, minValue=0, optional=True),
            QgsProcessingParameterNumber(self.EPOCHS_DECAY,
                                         "Epochs of rate decay (empty: recipe)",
                                         type=compat.INTEGER, minValue=0, optional=True),
            freeze,
        ]  # fmt: skip
        for param in advanced:
            param.setFlags(param.flags() | compat.ADVANCED)
            self.addParameter(param)
        self.addParameter(QgsProcessingParameterFolderDestination(self.OUTPUT, "Run folder"))
        self.addOutput(QgsProcessingOutputFile(self.MODEL_FILE, "Fine-tuned model file"))
        for name, label in (("UPDATES", "Updates"), ("SECONDS", "Seconds"),
                            ("VAL_MIOU", "Validation mIoU")):  # fmt: skip
            self.addOutput(QgsProcessingOutputNumber(name, label))

    def processAlgorithm(  # noqa: N802 (QGIS API)
        self,
        parameters: dict[str, Any],
        context: QgsProcessingContext,
        feedback: QgsProcessingFeedback,
    ) -> dict[str, Any]:
        if feedback is None:
            feedback = QgsProcessingFeedback()
        engine = locate_engine()
        if engine is None:
            raise QgsProcessingException(not_found_message())
        run = Path(self.parameterAsString(parameters, self.OUTPUT, context))
        args = [str(engine), "finetune", *self._engine_arguments(parameters, context, run)]
        feedback.pushInfo("$ " + " ".join(args))
        try:
            check_executable(engine)
            result = run_engine(args, lambda e: _show_event(e, feedback), feedback.isCanceled)
        except EngineError as exc:
            message = str(exc)
            if feedback.isCanceled():
                kept = (run / "checkpoint.pt").is_file()
                message = (
                    f"cancelled; a checkpoint is kept in {run}: run again into the same folder "
                    "to resume"
                    if kept
                    else "cancelled before the first checkpoint"
                )
            raise QgsProcessingException(message) from None
        feedback.setProgress(100.0)
        metrics = result.get("metrics") or {}
        feedback.pushInfo(
            f"model written to {result['model']} ({result['updates']} updates in "
            f"{result['seconds']:.0f} s); validation: "
            + ", ".join(f"{k} {v:.3f}" for k, v in metrics.items() if k.startswith("iou"))
        )
        return {
            self.OUTPUT: str(run),
            self.MODEL_FILE: str(result["model"]),
            "UPDATES": result["updates"],
            "SECONDS": result["seconds"],
            "VAL_MIOU": metrics.get("miou", 0.0),
        }

    def _engine_arguments(
        self, parameters: dict[str, Any], context: QgsProcessingContext, run: Path
    ) -> list[str]:
        pairs = self.parameterAsFile(parameters, self.PAIRS, context)
        if not pairs:
            raise QgsProcessingException("give the pairs folder that Make training pairs wrote")
        args = [pairs, "--out", str(run), "--progress", "json", resume_flag(run)]
        args += ["--device", self.parameterAsEnumString(parameters, self.DEVICE, context)]
        args += ["--freeze", self.parameterAsEnumString(parameters, self.FREEZE, context)]
        model = self.parameterAsFile(parameters, self.MODEL, context)
        if model:
            args += ["--model", model]
        for name, flag in ((self.EPOCHS, "--epochs"), (self.EPOCHS_DECAY, "--epochs-decay")):
            if _is_set(parameters, name):
                args += [flag, str(self.parameterAsInt(parameters, name, context))]
        return args
