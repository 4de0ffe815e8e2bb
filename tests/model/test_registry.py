"""The architecture registry: every entry builds, saves and loads from its card; its stride and
receptive field are what the card checks and the renderer's windows use."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from geomap_gan.errors import ModelFileError
from geomap_gan.model import registry
from geomap_gan.model.modelfile import MapModel, ModelCard, build_generator, load_model, save_model
from geomap_gan.model.nets import generator_receptive_field, init_weights
from geomap_gan.model.registry import ARCHITECTURES, Architecture, architecture


@pytest.mark.parametrize("name", sorted(ARCHITECTURES))
def test_each_entry_builds_saves_and_loads(name: str, tmp_path: Path) -> None:
    torch.manual_seed(0)
    card = ModelCard(name="t", arch=name, ngf=4, num_downs=5, tile_size=32, gsd=2.0)
    arch = architecture(name)
    card = ModelCard(**{**card.__dict__, "receptive_field": arch.receptive_field(card)})
    net = init_weights(build_generator(card.validate()))
    path = save_model(MapModel(net, card), tmp_path / "m.safetensors", half=False)
    loaded = load_model(path)
    x = torch.rand(1, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        assert torch.equal(loaded.generator.eval()(x), net.eval()(x))
    assert loaded.card.arch == name and set(arch.card_fields) <= set(card.__dict__)


def test_unet_stride_and_receptive_field_are_the_networks() -> None:
    card = ModelCard(ngf=4, num_downs=6, antialias=True, tile_size=64)
    arch = architecture("unet_256")
    assert arch.stride(card) == 64
    assert arch.receptive_field(card) == max(generator_receptive_field(6, True))


def test_an_unknown_architecture_is_refused_with_the_known_ones() -> None:
    with pytest.raises(ModelFileError, match=r"unsupported architecture 'resnet_9'.*'unet_256'"):
        ModelCard(arch="resnet_9").validate()


def test_a_new_generator_is_one_registered_entry(monkeypatch: pytest.MonkeyPatch) -> None:
    """A 1x1-convolution generator registered at run time is validated and built by name, and
    its own stride decides which tile sizes a card may declare."""
    monkeypatch.setattr(registry, "ARCHITECTURES", dict(ARCHITECTURES))
    registry.register(
        Architecture(
            name="pointwise",
            build=lambda card: nn.Conv2d(card.in_channels, card.out_channels, 1),
            card_fields=("in_channels", "out_channels"),
            receptive_field=lambda card: 0,
            stride=lambda card: 1,
        )
    )
    card = ModelCard(arch="pointwise", num_downs=5, tile_size=33).validate()
    assert isinstance(build_generator(card), nn.Conv2d)
    with pytest.raises(ValueError, match="registered twice"):
        registry.register(registry.ARCHITECTURES["pointwise"])


@pytest.mark.parametrize(
    ("ngf", "num_downs", "field", "stride"), [(16, 5, 94, 32), (16, 4, 46, 16)]
)
def test_student_sizes_build_save_and_load(
    ngf: int, num_downs: int, field: int, stride: int, tmp_path: Path
) -> None:
    """The distillation students (issue 38) are unet_256 cards of another width and depth: a
    4-level U-Net (4 ngf -> 8 ngf innermost) halves the receptive field, so the renderer's
    margins; files of 5 levels and more keep their tensor names."""
    torch.manual_seed(0)
    arch = architecture("unet_256")
    card = ModelCard(name="s", ngf=ngf, num_downs=num_downs, antialias=True, tile_size=64)
    card = ModelCard(**{**card.__dict__, "receptive_field": arch.receptive_field(card)})
    assert (card.receptive_field, arch.stride(card)) == (field, stride)
    net = init_weights(build_generator(card.validate()))
    path = save_model(MapModel(net, card), tmp_path / "s.safetensors", half=False)
    loaded = load_model(path)
    x = torch.rand(1, 3, 64, 64) * 2 - 1
    with torch.no_grad():
        assert torch.equal(loaded.generator.eval()(x), net.eval()(x))


def test_fewer_than_four_levels_are_refused() -> None:
    with pytest.raises(ModelFileError, match="num_downs=3 is outside 4..9"):
        ModelCard(num_downs=3, tile_size=64).validate()
    from geomap_gan.model.nets import UnetGenerator

    with pytest.raises(ValueError, match="at least 4"):
        UnetGenerator(num_downs=3)
