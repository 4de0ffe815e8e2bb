"""A headless QGIS that runs Processing jobs *and loads their results into the project*, as the
toolbox does (``processing.runAndLoadResults``), then reports the project's layers: the test's
QGIS for algorithms whose outputs are layers in the user's project.

Run with QGIS's own Python: ``python3 tests/qgis/qgis_load_host.py SPEC.json``. SPEC as
tests/qgis_host.py's (``plugin_path``, ``jobs`` of ``{"alg", "params", "cancel_at"}`` or
``{"describe": true}``). The last stdout line is one JSON report: per job its results or error,
progress values and log lines, and the layer tree after it (top to bottom: name, source,
geometry type, feature count, and the colours of each symbol layer: fill for areas, stroke for
lines); and which of torch, rasterio and geomap_gan QGIS's Python had imported.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any

WATCHED = ("torch", "rasterio", "geomap_gan")


def layers_report() -> list[dict[str, Any]]:
    """The project's layer tree, top to bottom."""
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

    record: dict[str, Any] = {"progress": [], "infos": [], "errors": []}
    cancel_at = job.get("cancel_at")

    class Feedback(QgsProcessingFeedback):
        def pushInfo(self, info: str) -> None:  # noqa: N802 (QGIS API)
            record["infos"].append(info)

        def reportError(self, error: str, fatal: bool = False) -> None:  # noqa: N802
            record["errors"].append(error)

    feedback = Feedback()

    def on_progress(value: float) -> None:
        record["progress"].append(value)
        if cancel_at is not None and value >= cancel_at:
            feedback.cancel()

    feedback.progressChanged.connect(on_progress)
    try:
        results = processing.runAndLoadResults(job["alg"], job["params"], feedback=feedback)
        if results is None:
            record["error"] = "; ".join(record["errors"]) or "failed"
        else:
            record["results"] = {
                k: v for k, v in results.items() if isinstance(v, (str, int, float))
            }
    except QgsProcessingException as exc:
        record["error"] = str(exc)
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

    plugin = geomap_gan_qgis.classFactory(None)
    plugin.initProcessing()
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    from qgis_host import describe

    report: dict[str, Any] = {"jobs": []}
    for job in spec["jobs"]:
        if job.get("describe"):
            report["jobs"].append(describe(QgsApplication.processingRegistry()))
        else:
            report["jobs"].append(run_job(job))
    report["modules"] = sorted(m for m in WATCHED if m in sys.modules)
    plugin.unload()
    print(json.dumps(report, default=str))
    sys.stdout.flush()
    os._exit(0)  # layers alive at exitQgis() crash QGIS 3.22 at exit (FINDINGS)


if __name__ == "__main__":
    main(sys.argv[1])
