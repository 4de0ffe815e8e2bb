"""The map's vector layers in a QGIS project: loaded when an algorithm finishes, each styled in
the colour the maps draw its class in, lines above areas as the maps draw them.

The colours are a copy of ``geomap_gan.legend.COLOURS`` (the plugin never imports geomap_gan);
tests/qgis/test_qgis_vectorize.py checks that they agree.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

LEGEND_COLOURS = {
    "road": (254, 254, 251),
    "water": (177, 208, 254),
    "park": (203, 223, 172),
    "highway": (248, 162, 50),
}
"""The training maps' colour of each class (RGB), as geomap_gan.legend.COLOURS."""

CLASSES = ("road", "water", "park", "highway")
"""The legend's classes in its order (geomap_gan.legend.CLASSES): the vector layers' names."""

TOP_TO_BOTTOM = ("highway", "road", "water", "park")
"""Layer order in the project: the maps' drawing order (park, water, road, highway), last on
top."""

CASING = 0.6
"""A line's casing is its colour at this brightness, drawn under it a little wider: white
roads stay visible on a white or light background."""

_KEEP: list[Any] = []  # post-processors must outlive the algorithm run that registered them


def layer_uri(path: str | Path, name: str) -> str:
    """The OGR data source of one layer of a GeoPackage."""
    return f"{path}|layername={name}"


def style_layer(layer: Any, name: str) -> None:
    """Areas filled in the class's colour, no outline; lines in its colour over a darker
    casing, round caps and joins."""
    from qgis.core import QgsFillSymbol, QgsLineSymbol, QgsSingleSymbolRenderer

    r, g, b = LEGEND_COLOURS[name]
    if name in ("water", "park"):
        symbol = QgsFillSymbol.createSimple({"color": f"{r},{g},{b},255", "outline_style": "no"})
    else:
        width = 1.2 if name == "highway" else 0.8
        dark = ",".join(str(int(c * CASING)) for c in (r, g, b))
        symbol = QgsLineSymbol.createSimple(
            {"line_color": f"{dark},255", "line_width": str(width + 0.4),
             "capstyle": "round", "joinstyle": "round"}
        )  # fmt: skip
        top = QgsLineSymbol.createSimple(
            {"line_color": f"{r},{g},{b},255", "line_width": str(width),
             "capstyle": "round", "joinstyle": "round"}
        )  # fmt: skip
        symbol.appendSymbolLayer(top.symbolLayer(0).clone())
    layer.setRenderer(QgsSingleSymbolRenderer(symbol))
    layer.triggerRepaint()


def _order_in_tree(project: Any, names: dict[str, str]) -> None:
    """Put the loaded layers (class -> layer id) in TOP_TO_BOTTOM order where they stand."""
    root = project.layerTreeRoot()
    nodes = [(c, root.findLayer(names[c])) for c in TOP_TO_BOTTOM if c in names]
    nodes = [(c, n) for c, n in nodes if n is not None]
    if len(nodes) < 2:
        return
    parent = nodes[0][1].parent()
    if any(n.parent() is not parent for _, n in nodes):
        return
    children = parent.children()
    at = min(children.index(n) for _, n in nodes)
    for offset, (_, node) in enumerate(nodes):
        clone = node.clone()
        parent.insertChildNode(at + offset, clone)
        parent.removeChildNode(node)


def load_layers(context: Any, path: str, layers: list[str], prefix: str) -> None:
    """Have QGIS load ``layers`` of the GeoPackage ``path`` into the context's project when the
    algorithm finishes, named ``<prefix> <class>``, styled and ordered. Nothing without a
    project (qgis_process)."""
    from qgis.core import QgsProcessingContext, QgsProcessingLayerPostProcessorInterface

    project = context.project()
    if project is None:
        return
    loaded: dict[str, str] = {}

    class Style(QgsProcessingLayerPostProcessorInterface):  # type: ignore[misc]
        def __init__(self, name: str) -> None:
            super().__init__()
            self.name = name

        def postProcessLayer(self, layer: Any, context: Any, feedback: Any) -> None:  # noqa: N802
            style_layer(layer, self.name)
            loaded[self.name] = layer.id()
            _order_in_tree(project, loaded)

    for name in layers:
        details = QgsProcessingContext.LayerDetails(f"{prefix} {name}", project, name)
        post = Style(name)
        _KEEP.append(post)
        details.setPostProcessor(post)
        context.addLayerToLoadOnCompletion(layer_uri(path, name), details)
