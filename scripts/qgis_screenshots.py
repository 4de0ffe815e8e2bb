"""Screenshots of the plugin in a real QGIS window (Xvfb): the render dialog, and the rendered map
on the canvas over the input. Writes docs/qgis/dialog.png and docs/qgis/canvas.png.

Needs xvfb-run (Debian: apt-get install xvfb xauth), QGIS, and the engine (this checkout's .venv).
The plugin is installed from the zip that scripts/build_plugin.py writes into a throwaway profile.

    python3 scripts/qgis_screenshots.py
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import textwrap
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "docs" / "qgis"
SCENE = ROOT / "examples" / "naip_nd_2015.tif"

STARTUP = """
import os, processing
from qgis.core import QgsProject, QgsRasterLayer
from qgis.PyQt.QtCore import QTimer
from qgis.utils import iface

def dialog():
    layer = QgsRasterLayer({scene!r}, "naip_nd_2015 (input)")
    QgsProject.instance().addMapLayer(layer)
    dlg = processing.createAlgorithmDialog("geomap_gan:render", {{"INPUT": layer.id()}})
    dlg.resize(900, 760)
    dlg.show()
    QTimer.singleShot(2500, lambda: (dlg.grab().save({dialog_png!r}), dlg.close(), canvas(layer)))

def canvas(layer):
    e = layer.extent()  # the map over the left half of the input, the aerial beside it
    half = f"{{e.xMinimum()}},{{e.center().x()}},{{e.yMinimum()}},{{e.yMaximum()}} [{{layer.crs().authid()}}]"
    result = processing.run("geomap_gan:render", {{"INPUT": layer, "OUTPUT_RES": "native",
                                                  "EXTENT": half, "OUTPUT": {map_tif!r}}})
    QgsProject.instance().addMapLayer(QgsRasterLayer(result["OUTPUT"], "geomap-gan map"))
    canvas = iface.mapCanvas()
    canvas.setExtent(e)
    canvas.refresh()
    QTimer.singleShot(6000, lambda: (iface.mainWindow().grab().save({canvas_png!r}), os._exit(0)))

QTimer.singleShot(8000, dialog)
"""


def main() -> int:
    OUT.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp)
        profile = home / ".local/share/QGIS/QGIS3/profiles/default"
        (profile / "python/plugins").mkdir(parents=True)
        (profile / "QGIS").mkdir()
        (profile / "QGIS/QGIS3.ini").write_text("[PythonPlugins]\ngeomap_gan_qgis=true\n")
        package = home / "plugin.zip"
        subprocess.run([sys.executable, str(ROOT / "scripts/build_plugin.py"), "--out",
                        str(package)], check=True)  # fmt: skip
        with zipfile.ZipFile(package) as zf:
            zf.extractall(profile / "python/plugins")
        startup = home / "startup.py"
        startup.write_text(textwrap.dedent(STARTUP).format(
            scene=str(SCENE), dialog_png=str(OUT / "dialog.png"),
            canvas_png=str(OUT / "canvas.png"), map_tif=str(home / "map.tif")))  # fmt: skip
        env = {k: v for k, v in os.environ.items() if not k.startswith(("QT_", "PYTHON"))}
        env.update(HOME=str(home), PATH="/usr/bin:/bin",
                   GEOMAP_GAN_EXECUTABLE=str(ROOT / ".venv/bin/geomap-gan"))  # fmt: skip
        cmd = ["xvfb-run", "-a", "-s", "-screen 0 1600x1000x24", "qgis", "--nologo",
               "--noversioncheck", "--code", str(startup)]  # fmt: skip
        subprocess.run(cmd, env=env, timeout=300)
    for name in ("dialog.png", "canvas.png"):
        print(OUT / name, "written" if (OUT / name).is_file() else "MISSING")
    return 0 if all((OUT / n).is_file() for n in ("dialog.png", "canvas.png")) else 1


if __name__ == "__main__":
    sys.exit(main())
