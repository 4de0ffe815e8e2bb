"""Build the QGIS plugin package: dist/geomap_gan_qgis.zip, for Plugins > Install from ZIP.

The zip holds one folder, ``geomap_gan_qgis/``, as QGIS expects, without caches; its metadata's
version is checked against itself (a zip whose folder or metadata is wrong installs as nothing).

    python scripts/build_plugin.py [--out dist/geomap_gan_qgis.zip]
"""

from __future__ import annotations

import argparse
import configparser
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PLUGIN = ROOT / "qgis_plugin" / "geomap_gan_qgis"
REQUIRED = ("name", "qgisMinimumVersion", "qgisMaximumVersion", "description", "about",
            "version", "author", "email", "repository")  # fmt: skip


def plugin_files(folder: Path) -> list[Path]:
    """The files that belong in the package: sources, metadata, icon; no caches."""
    return sorted(
        p for p in folder.rglob("*")
        if p.is_file() and "__pycache__" not in p.parts and p.suffix not in (".pyc", ".pyo")
    )  # fmt: skip


def check_metadata(folder: Path) -> str:
    """The plugin's version, after checking that metadata.txt has what QGIS's installer needs."""
    meta = configparser.ConfigParser()
    meta.read(folder / "metadata.txt", encoding="utf-8")
    general = meta["general"]
    missing = [k for k in REQUIRED if not general.get(k)]
    if missing:
        raise SystemExit(f"error: metadata.txt lacks {', '.join(missing)}")
    return general["version"]


def build(out: Path) -> Path:
    version = check_metadata(PLUGIN)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as zf:
        for path in plugin_files(PLUGIN):
            zf.write(path, Path(PLUGIN.name) / path.relative_to(PLUGIN))
        license_file = ROOT / "LICENSE"
        if license_file.is_file():
            zf.write(license_file, Path(PLUGIN.name) / "LICENSE")
    tmp.replace(out)
    print(f"wrote {out} (geomap-gan QGIS plugin {version})")
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "dist" / "geomap_gan_qgis.zip")
    build(parser.parse_args(argv).out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
