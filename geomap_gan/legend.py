"""The map legend: the classes a map shows, the colours the training maps draw them in, and the
colour rules that read a map pixel back into a class.

One home for everything that classifies or draws map classes: the metrics score a map with these
rules, the vector layers are cut by them, and training pairs are drawn in these colours, so a map
drawn from vector layers is read back into the same classes.
"""

from __future__ import annotations

import numpy as np

RGB = tuple[int, int, int]

CLASSES = ("road", "water", "park", "highway")
"""Map classes in the order the metrics report them."""

ROAD_MIN = 248
"""A road pixel is this white or whiter in every channel (the maps' street fill)."""

# Each class is a conjunction of linear rules on a pixel's (R, G, B): weights . rgb >= threshold.
# The hard masks below score a map; refine's soft masks (each step a sigmoid) train against them.
CLASS_RULES: dict[str, tuple[tuple[RGB, int], ...]] = {
    "road": (((1, 0, 0), ROAD_MIN), ((0, 1, 0), ROAD_MIN), ((0, 0, 1), ROAD_MIN)),
    "water": (((0, 0, 1), 220), ((-1, 0, 1), 40)),
    "park": (((-1, 1, 0), 8), ((0, 1, -1), 20)),
    "highway": (((1, 0, 0), 230), ((1, 0, -1), 70), ((0, 1, 0), 120)),
}

# The median colour of each class's pixels in the maps training split (its background: every pixel
# no rule claims). Drawing in these colours makes a map the model and the rules both read as the
# training maps.
BACKGROUND: RGB = (233, 230, 223)
COLOURS: dict[str, RGB] = {
    "road": (254, 254, 251),
    "water": (177, 208, 254),
    "park": (203, 223, 172),
    "highway": (248, 162, 50),
}

DRAW_ORDER = ("park", "water", "road", "highway")
"""Later classes are drawn over earlier ones, as the training maps do (a street crosses a park,
a highway bridge crosses a river)."""

AREA_CLASSES = ("water", "park")
"""Classes a map draws as filled areas."""

LINE_CLASSES = ("road", "highway")
"""Classes a map draws as strokes along a centre line."""


def class_masks(rgb: np.ndarray) -> dict[str, np.ndarray]:
    """Boolean masks per map class for uint8 RGB arrays (..., 3); signed arithmetic."""
    c = rgb.astype(np.int16)
    r, g, b = c[..., 0], c[..., 1], c[..., 2]
    return {
        name: np.logical_and.reduce([wr * r + wg * g + wb * b >= t for (wr, wg, wb), t in rules])
        for name, rules in CLASS_RULES.items()
    }


def parse_classes(text: str) -> tuple[str, ...]:
    """Comma-separated class names, each checked against the legend (ValueError names the bad one)."""
    names = tuple(n.strip() for n in text.split(",") if n.strip())
    unknown = [n for n in names if n not in CLASSES]
    if unknown or not names:
        bad = ", ".join(unknown) or repr(text)
        raise ValueError(f"unknown map class {bad}; the legend has {', '.join(CLASSES)}")
    return names
