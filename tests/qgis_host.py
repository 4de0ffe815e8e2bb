"""A headless QGIS that loads the geomap-gan plugin and runs Processing jobs: the test's QGIS.

Run with QGIS's own Python (``/usr/bin/python3`` on Debian), not the project's venv, so that it
sees exactly what a QGIS user's does: ``python3 tests/qgis_host.py SPEC.json``. SPEC holds
``plugin_path`` (the folder containing ``geomap_gan_qgis``) and ``jobs``, each either
``{"describe": true}`` or ``{"alg": id, "params": {...}, "cancel_at": percent or null, "load":
bool}``; with ``load`` the job runs as the toolbox runs it, loading its outputs into the project
(``processing.runAndLoadResults``), and its report adds the project's layer tree. The last line of
stdout is one JSON report: per job its results or error, the progress values, the log lines (and
the layers); and which of torch, rasterio and geomap_gan QGIS's Python had imported at the end.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any

WATCHED = ("torch", "rasterio", "geomap_gan")


def describe(registry: Any) -> dict[str, Any]:
    """What the toolbox shows: each algorithm's parameters (type, default, drop-down options)."""
    out: dict[str, Any] = {}
    for alg in registry.providerById("geomap_gan").algorithms():
        params = {}
        for p in alg.parameterDefinitions():
            entry = {"type": p.type(), "default": p.defaultValue(), "advanced": False}
            entry["advanced"] = bool(int(p.flags()) & 2)  # FlagAdvanced / Advanced is 1 << 1
            if p.type() == "enum":
                entry["options"] = list(p.options())
                entry["static_strings"] = p.usesStaticStrings()
            params[p.name()] = entry
        can, why = alg.canExecute()
        out[alg.id()] = {"name": alg.displayName(), "params": params, "can_execute": [can, why]}
    return out


def layers_report() -> list[dict[str, Any]]:
    """The project's layer tree, top to bottom: name, source, and for vector layers geometry
    type, feature count and the colours of each symbol layer (fill for areas, stroke for lines)."""
    from qgis.core import QgsProject, QgsVectorLayer

    out = []
    for node in QgsProject.instance().layerTreeRoot().findLayers():
        layer = node.layer()
        entry: dict[str, Any] = {"name": layer.name(), "source": layer.source()}
        if isinstance(layer, QgsVectorLayer):
            entry["geometry"] = int(layer.geometryType())
            entry["features"] = layer.featureCount()
            symbol = layer.renderer().symbol()
            entry["colours"] = [list(sl.color().getRgb()[:3]) for sl in symbol.symbolLayers()]
        out.append(entry)
    return out


def run_job(job: dict[str, Any]) -> dict[str, Any]:
    import processing
    from qgis.core import QgsProcessingException, QgsProcessingFeedback

    record: dict[str, Any] = {"progress": [], "infos": [], "errors": [], "console": []}
    cancel_at = job.get("cancel_at")

    class Feedback(QgsProcessingFeedback):
        def pushInfo(self, info: str) -> None:  # noqa: N802 (QGIS API)
            record["infos"].append(info)

        def pushConsoleInfo(self, info: str) -> None:  # noqa: N802 (QGIS API)
            record["console"].append(info)

        def reportError(self, error: str, fatal: bool = False) -> None:  # noqa: N802
            record["errors"].append(error)

    feedback = Feedback()

    def on_progress(value: float) -> None:
        record["progress"].append(value)
        if cancel_at is not None and value >= cancel_at:
            feedback.cancel()

    feedback.progressChanged.connect(on_progress)
    run = processing.runAndLoadResults if job.get("load") else processing.run
    try:
        results = run(job["alg"], job["params"], feedback=feedback)
        if results is None:  # runAndLoadResults reports a failure instead of raising
            record["error"] = "; ".join(record["errors"]) or "failed"
        else:
            record["results"] = {
                k: v for k, v in results.items() if isinstance(v, (str, int, float))
            }
    except QgsProcessingException as exc:
        record["error"] = str(exc)
    if job.get("load"):
        record["layers"] = layers_report()
    return record


def main(spec_path: str) -> None:
    with open(spec_path, encoding="utf-8") as fh:
        spec = json.load(fh)
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    from qgis.core import QgsApplication

    app = QgsApplication([], False)
    app.initQgis()
    sys.path.append(os.path.join(QgsApplication.pkgDataPath(), "python", "plugins"))
    sys.path.insert(0, spec["plugin_path"])
    from processing.core.Processing import Processing

    Processing.initialize()
    import geomap_gan_qgis

    plugin = geomap_gan_qgis.classFactory(None)  # qgis_process passes no iface either
    plugin.initProcessing()
    report: dict[str, Any] = {"jobs": []}
    for job in spec["jobs"]:
        if job.get("describe"):
            report["jobs"].append(describe(QgsApplication.processingRegistry()))
        else:
            report["jobs"].append(run_job(job))
    report["modules"] = sorted(m for m in WATCHED if m in sys.modules)
    report["settings_dir"] = QgsApplication.qgisSettingsDirPath()
    plugin.unload()
    print(json.dumps(report, default=str))
    sys.stdout.flush()
    os._exit(0)  # exitQgis() with Processing's objects or layers alive crashes QGIS 3.22 at exit


if __name__ == "__main__":
    main(sys.argv[1])
