"""The architecture registry: each generator a model card may name, with how to build it from the
card, which card fields it reads, its receptive field and its stride.

A new generator is one registered entry: the model file builds it by name, the card's checks
and the renderer's windows (margin = receptive field, lattice = stride) read it from here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from geomap_gan.errors import ModelFileError

if TYPE_CHECKING:  # torch stays out of the import: the CLI's --help reads the ranges below
    from torch import nn

# pix2pix maps: 600 px originals at about 0.905 m/px (Google z17 at New York's latitude).
MAPS_ORIGINAL_GSD = 0.9
MAPS_ORIGINAL_SIZE = 600
# The generator sizes a model card may declare, inclusive: the trainer refuses to train outside
# them, since the renderer would refuse the model it exports.
NGF_RANGE = (1, 256)
NUM_DOWNS_RANGE = (4, 9)
TILE_SIZE_RANGE = (32, 4096)


class CardFields(Protocol):
    """The card fields an architecture may read (modelfile.ModelCard has them all); a protocol,
    so that the registry does not import the model file that imports it."""

    @property
    def in_channels(self) -> int: ...

    @property
    def out_channels(self) -> int: ...

    @property
    def ngf(self) -> int: ...

    @property
    def num_downs(self) -> int: ...

    @property
    def norm(self) -> str: ...

    @property
    def antialias(self) -> bool: ...


@dataclass(frozen=True)
class Architecture:
    """One generator family. ``receptive_field``: pixels on each side of an output pixel that it
    may depend on; ``stride``: the product of its subsamplings, the lattice its windows and
    tile sizes keep to."""

    name: str
    build: Callable[[CardFields], nn.Module]
    card_fields: tuple[str, ...]
    receptive_field: Callable[[CardFields], int]
    stride: Callable[[CardFields], int]


ARCHITECTURES: dict[str, Architecture] = {}


def register(arch: Architecture) -> Architecture:
    """Add ``arch`` under its name (a second entry of one name is a programming error)."""
    if arch.name in ARCHITECTURES:
        raise ValueError(f"architecture {arch.name!r} is registered twice")
    ARCHITECTURES[arch.name] = arch
    return arch


def architecture(name: str) -> Architecture:
    """The registered architecture ``name``; a ModelFileError naming the known ones otherwise."""
    try:
        return ARCHITECTURES[name]
    except (KeyError, TypeError):
        known = ", ".join(repr(n) for n in sorted(ARCHITECTURES))
        raise ModelFileError(
            f"unsupported architecture {name!r}; expected one of {known}"
        ) from None


def _build_unet(card: CardFields) -> nn.Module:
    from geomap_gan.model.nets import UnetGenerator

    return UnetGenerator(
        card.in_channels,
        card.out_channels,
        card.ngf,
        card.num_downs,
        norm=card.norm,  # type: ignore[arg-type]
        antialias=card.antialias,
    )


def _unet_receptive_field(card: CardFields) -> int:
    from geomap_gan.model.nets import receptive_radius

    return receptive_radius(card.num_downs, card.antialias)


register(
    Architecture(
        name="unet_256",
        build=_build_unet,
        card_fields=("in_channels", "out_channels", "ngf", "num_downs", "norm", "antialias"),
        receptive_field=_unet_receptive_field,
        stride=lambda card: 2**card.num_downs,
    )
)
