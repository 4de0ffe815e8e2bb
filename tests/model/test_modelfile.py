"""Model files round-trip, and every broken file gives a clear ModelFileError."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from geomap_gan.errors import ModelFileError
from geomap_gan.model.modelfile import (
    CARD_KEY,
    MapModel,
    ModelCard,
    build_generator,
    load_model,
    save_model,
)
from geomap_gan.model.nets import init_weights


def test_round_trip_keeps_card_and_weights(tiny_model_file: Path) -> None:
    m = load_model(tiny_model_file)
    assert m.card.name == "tiny" and m.card.ngf == 8 and m.card.tile_size == 32
    assert m.card.gsd == 2.0
    assert not m.generator.training  # loaded models are in eval mode
    raw = load_file(str(tiny_model_file))
    assert all(v.dtype == torch.float16 for v in raw.values() if v.is_floating_point())
    sd = m.generator.state_dict()
    key = "model.model.0.weight"
    assert torch.equal(sd[key].half(), raw[key])


def test_fp16_output_close_to_fp32(tmp_path: Path) -> None:
    torch.manual_seed(1)
    card = ModelCard(ngf=8, num_downs=5, tile_size=32)
    g = init_weights(build_generator(card)).eval()
    path = save_model(MapModel(g, card), tmp_path / "m.safetensors")
    x = torch.rand(1, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        assert (g(x) - load_model(path).generator(x)).abs().max() < 0.01


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ModelFileError, match="does not exist"):
        load_model(tmp_path / "nope.safetensors")


def test_truncated_file(tiny_model_file: Path, tmp_path: Path) -> None:
    bad = tmp_path / "trunc.safetensors"
    bad.write_bytes(tiny_model_file.read_bytes()[:5000])
    with pytest.raises(ModelFileError):
        load_model(bad)


def test_foreign_file(tmp_path: Path) -> None:
    bad = tmp_path / "image.safetensors"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 100)
    with pytest.raises(ModelFileError):
        load_model(bad)


def test_safetensors_without_card(tmp_path: Path) -> None:
    path = tmp_path / "other.safetensors"
    save_file({"w": torch.zeros(2)}, str(path))
    with pytest.raises(ModelFileError, match="no card"):
        load_model(path)


def test_tampered_shape_is_rejected(tiny_model_file: Path, tmp_path: Path) -> None:
    state = load_file(str(tiny_model_file))
    state["model.model.0.weight"] = torch.zeros(9, 3, 4, 4, dtype=torch.float16)
    card = ModelCard(name="tiny", ngf=8, num_downs=5, tile_size=32).to_json()
    path = tmp_path / "tampered.safetensors"
    save_file(state, str(path), metadata={CARD_KEY: card})
    with pytest.raises(ModelFileError, match="shape"):
        load_model(path)


def test_card_claiming_other_architecture_is_rejected(
    tiny_model_file: Path, tmp_path: Path
) -> None:
    state = load_file(str(tiny_model_file))
    card = json.loads(ModelCard(ngf=16, num_downs=5).to_json())
    path = tmp_path / "lying.safetensors"
    save_file(state, str(path), metadata={CARD_KEY: json.dumps(card)})
    with pytest.raises(ModelFileError, match="tampered|shape"):
        load_model(path)


def test_raw_torch_state_dict_is_loaded_safely(tmp_path: Path) -> None:
    torch.manual_seed(2)
    g = init_weights(build_generator(ModelCard(ngf=8)))
    path = tmp_path / "g.pth"
    torch.save(g.state_dict(), path)
    m = load_model(path)
    assert m.card.ngf == 8 and m.card.num_downs == 8
    assert torch.equal(
        m.generator.state_dict()["model.model.0.weight"], g.state_dict()["model.model.0.weight"]
    )


def test_pickled_code_is_refused(tmp_path: Path) -> None:
    class Evil:
        def __reduce__(self):  # would run code if unpickled without weights_only
            return (print, ("pwned",))

    path = tmp_path / "evil.pt"
    torch.save({"x": Evil()}, path)
    with pytest.raises(ModelFileError):
        load_model(path)
