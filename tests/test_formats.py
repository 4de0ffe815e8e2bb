"""formats: the output-format registry every writer reads."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from geomap_gan import formats
from geomap_gan.errors import InputError, OutputError

ROOT = Path(__file__).resolve().parents[1]


def test_render_formats_are_the_cli_choices_and_the_options_default():
    from geomap_gan.rendering.options import RenderOptions

    assert formats.RENDER_FORMATS == ("GTiff", "COG")
    assert RenderOptions().driver == formats.GTIFF.name and not formats.INTERMEDIATE.copy
    assert formats.get("cog") is formats.COG  # case-insensitive, as GDAL's driver names
    with pytest.raises(InputError, match="--format must be one of GTiff, COG"):
        formats.render_format("VRT")  # a registry entry, but not a render output
    with pytest.raises(InputError):
        RenderOptions(driver="PNG").validate(256)


def test_the_qgis_plugin_lists_the_same_formats():
    """The plugin must not import geomap_gan (QGIS's Python), so it lists the names itself."""
    path = ROOT / "qgis_plugin" / "geomap_gan_qgis" / "render_algorithm.py"
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", "") == "FORMATS":
            assert ast.literal_eval(node.value) == formats.RENDER_FORMATS
            return
    raise AssertionError("render_algorithm.py no longer defines FORMATS")


def test_options_merge_defaults_alpha_and_user_values():
    opts = formats.GTIFF.options({"compress": "zstd", " zlevel ": "3"}, alpha=True)
    assert opts["COMPRESS"] == "zstd" and opts["ZLEVEL"] == "3" and opts["ALPHA"] == "YES"
    assert formats.COG.options()["BLOCKSIZE"] == "512" and "ALPHA" not in formats.COG.options()


def test_numeric_options_accept_their_range_and_all_cpus():
    formats.GTIFF.check_numbers({"NUM_THREADS": "ALL_CPUS", "BLOCKXSIZE": "512", "ZLEVEL": "1"})
    formats.GTIFF.check_numbers({"TILED": "NO", "BLOCKYSIZE": "7"})  # strips: any height
    with pytest.raises(InputError, match="multiple of 16"):
        formats.GTIFF.check_numbers({"BLOCKYSIZE": "100"})


def test_suffix_rule_names_the_fix():
    with pytest.raises(OutputError, match=r"map\.png must end in \.tif or \.tiff.*map\.tif"):
        formats.check_suffix(Path("map.png"), formats.GTIFF)
    with pytest.raises(OutputError, match=r"\(\.tif is GTiff / COG\).*for example g\.png"):
        formats.check_suffix(Path("g.tif"), formats.PNG)
    formats.check_suffix(Path("MAP.TIFF"), formats.COG)
