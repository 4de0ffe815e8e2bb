"""Post-training refinements: weight averaging, output-gain fitting and folding, and the script."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from geomap_gan.legend import CLASSES, class_masks
from geomap_gan.model.modelfile import MapModel, ModelCard, build_generator, load_model, save_model
from geomap_gan.model.nets import UnetGenerator, init_weights, to_model_range, to_uint8
from geomap_gan.training.data import centre_crop, load_split
from geomap_gan.training.metrics import MetricAccumulator
from geomap_gan.training.refine import (
    DecoderHead,
    HeadFit,
    average_generators,
    fit_decoder_head,
    fit_output_gain,
    fold_output_gain,
    gain_miou,
    pre_tanh,
    soft_class_masks,
)

ROOT = Path(__file__).resolve().parents[2]
CARD = ModelCard(name="tiny", ngf=8, num_downs=5, antialias=True, tile_size=32, gsd=2.0)


def _generator(seed: int) -> UnetGenerator:
    torch.manual_seed(seed)
    g = build_generator(CARD)
    init_weights(g, gain=0.2)  # larger than pix2pix's 0.02: far from an identity
    for m in g.modules():  # BatchNorm statistics of their own, as a trained model has
        if isinstance(m, torch.nn.BatchNorm2d):
            assert m.running_mean is not None and m.running_var is not None
            m.running_mean.normal_(0, 0.1)
            m.running_var.uniform_(0.5, 2.0)
    return g.eval()


def test_folded_gain_equals_tanh_of_scaled_pre_activation() -> None:
    g = _generator(0)
    images = np.random.default_rng(1).integers(0, 256, (3, 64, 64, 3), dtype=np.uint8)
    g.train()  # pre_tanh must run in eval mode and hand the mode back
    z = pre_tanh(g, images, batch_size=2)
    assert g.training and not g.model.model[-2]._forward_hooks  # type: ignore[index,union-attr]
    fold_output_gain(g, 1.2)
    g.eval()
    with torch.no_grad():
        y = g(to_model_range(torch.from_numpy(images)).permute(0, 3, 1, 2))
    expected = torch.tanh(z * 1.2)
    assert z.shape == (3, 3, 64, 64) and z.abs().max() > 0.1
    torch.testing.assert_close(y, expected, atol=1e-4, rtol=0)  # 0.013 grey levels
    assert (y - torch.tanh(z)).abs().max() > 0.01  # the gain changed the output


def test_average_interpolates_float_tensors_and_keeps_base_counters() -> None:
    a, b = _generator(0), _generator(1)
    before = {k: v.clone() for k, v in a.state_dict().items()}
    for m in b.modules():
        if isinstance(m, torch.nn.BatchNorm2d) and m.num_batches_tracked is not None:
            m.num_batches_tracked.fill_(7)
    sa, sb = a.state_dict(), b.state_dict()
    for w in (0.0, 0.25, 1.0):
        mixed = average_generators(a, b, w).state_dict()
        for k, v in sa.items():
            if v.is_floating_point():
                torch.testing.assert_close(mixed[k], (1 - w) * v + w * sb[k], atol=1e-6, rtol=0)
            else:
                assert torch.equal(mixed[k], v)  # base's batch counts, not b's 7
    assert all(torch.equal(v, before[k]) for k, v in a.state_dict().items())  # base untouched
    with pytest.raises(ValueError, match="outside 0..1"):
        average_generators(a, b, 1.5)
    other = build_generator(ModelCard(ngf=16, num_downs=5, tile_size=32))
    with pytest.raises(RuntimeError):
        average_generators(a, other, 0.5)


def _dimmed(maps: np.ndarray, factor: float) -> torch.Tensor:
    """Pre-activations whose tanh at gain ``factor`` gives back ``maps`` exactly (uint8)."""
    y = to_model_range(torch.from_numpy(maps)).permute(0, 3, 1, 2).clamp(-0.999, 0.999)
    return torch.atanh(y) / factor


def test_gain_fit_recovers_a_dimmed_map_and_counts_as_evaluate(maps256: Path) -> None:
    real = load_split(maps256, "val", 256, limit=12)[0][:, 1]
    z = _dimmed(real, 1.2)
    for gain in (1.0, 1.3):
        acc = MetricAccumulator()
        acc.update(to_uint8(torch.tanh(z * gain)).permute(0, 2, 3, 1).numpy(), real)
        assert gain_miou(z, real, gain, chunk=5) == pytest.approx(acc.result()["miou"], abs=1e-12)
    gain, score = fit_output_gain(z, real)
    assert gain == 1.2 and score == 1.0 > gain_miou(z, real, 1.0)


def _pairs_folder(root: Path, n: int, size: int) -> Path:
    """A train split of n A|B pairs: noise aerials, maps of flat class colours."""
    rng = np.random.default_rng(5)
    (root / "train").mkdir(parents=True)
    colours = np.array([[255, 255, 255], [170, 218, 255], [200, 240, 200], [242, 239, 233]])
    for i in range(n):
        aerial = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
        labels = rng.integers(0, 4, (size // 8, size // 8)).repeat(8, 0).repeat(8, 1)
        pair = np.concatenate([aerial, colours[labels].astype(np.uint8)], axis=1)
        Image.fromarray(pair).save(root / "train" / f"{i + 1}.png")
    return root


def _script(*args: str | Path) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, str(ROOT / "scripts" / "refine_model.py"), *map(str, args)]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300)


def test_refine_script_writes_a_loadable_model_and_keeps_existing_files(tmp_path: Path) -> None:
    data = _pairs_folder(tmp_path / "data", 6, 40)
    files = []
    for seed in (0, 1):
        card = dataclasses.replace(CARD, command=f"train --seed {seed}")
        files.append(
            save_model(MapModel(_generator(seed), card), tmp_path / f"m{seed}.safetensors")
        )
    out = tmp_path / "refined.safetensors"
    common: list[str | Path] = ["--data", data, "--pairs", "6", "--load-size", "40"]
    done = _script(files[0], out, "--average", files[1], "--weight", "0.3", "--fit-gain", *common)
    assert done.returncode == 0, done.stderr
    refined = load_model(out)
    assert refined.card.command.startswith("train --seed 0 && train --seed 1 && python ")
    a, b = load_model(files[0]).generator.state_dict(), load_model(files[1]).generator.state_dict()
    key = "model.model.1.model.1.weight"  # a BlurDownConv's weights: averaged, not refitted
    torch.testing.assert_close(
        refined.generator.state_dict()[key].float(),
        (0.7 * a[key].float() + 0.3 * b[key].float()).half().float(),
        atol=1e-4, rtol=1e-3,  # one fp16 step: the file stores halves
    )  # fmt: skip
    stamp = out.read_bytes()
    again = _script(files[0], out, *common)
    assert again.returncode != 0 and "Traceback" not in again.stderr
    assert "exists" in again.stderr and out.read_bytes() == stamp
    wide = dataclasses.replace(CARD, ngf=16)
    wrong = save_model(MapModel(build_generator(wide), wide), tmp_path / "wide.safetensors")
    mixed = _script(files[0], tmp_path / "x.safetensors", "--average", wrong, *common)
    assert mixed.returncode != 0 and "not the architecture" in mixed.stderr
    assert "Traceback" not in mixed.stderr and not (tmp_path / "x.safetensors").exists()


def test_soft_class_masks_are_the_colour_rules_as_tau_shrinks() -> None:
    real = load_split(ROOT.parent / "shared" / "data" / "maps256", "val", 256, limit=4)[0][:, 1]
    rng = np.random.default_rng(3)
    rgb = np.concatenate([real.reshape(-1, 3), rng.integers(0, 256, (20000, 3), dtype=np.uint8)])
    hard = class_masks(rgb)
    soft = soft_class_masks(torch.from_numpy(rgb.T.astype(np.float32))[None, :, :, None], 0.05)
    for c in CLASSES:
        np.testing.assert_array_equal((soft[c][0, :, 0] > 0.5).numpy(), hard[c])
        assert hard[c].any() and not hard[c].all()  # each rule both holds and fails here


@pytest.mark.parametrize("depth", [1, 2, 4])
def test_decoder_head_runs_the_generator_from_its_features(depth: int) -> None:
    g = _generator(2)
    x = to_model_range(torch.from_numpy(np.random.default_rng(4).integers(0, 256, (2, 3, 64, 64))))
    head = DecoderHead(g, depth)
    expected = pre_tanh(g, x.add(1).mul(127.5).round().permute(0, 2, 3, 1).byte().numpy())
    with torch.no_grad():
        features = head.capture(x, torch.float32)
        z = head(*features)
    assert len(features) == depth and z.abs().max() > 0.1
    torch.testing.assert_close(z, expected, atol=1e-4, rtol=0)
    with pytest.raises(ValueError, match="outside"):
        DecoderHead(g, 5)


def test_fit_decoder_head_repairs_a_dimmed_model_and_touches_nothing_else() -> None:
    pairs, _ = load_split(ROOT.parent / "shared" / "data" / "maps286", "train", 286, limit=40)
    g = load_model(ROOT / "geomap_gan" / "models" / "default.safetensors").generator
    held = centre_crop(pairs[::5], 256)  # what fit_decoder_head holds out
    intact = gain_miou(pre_tanh(g, held[:, 0]), held[:, 1], 1.0)
    with torch.no_grad():
        g.model.model[3].bias.sub_(0.8)  # type: ignore[index,union-attr]  # a darker map
    frozen = {k: v.clone() for k, v in g.state_dict().items() if not k.startswith("model.model.3")}
    rng, flags = torch.get_rng_state(), [p.requires_grad for p in g.parameters()]
    cfg = HeadFit(depth=1, epochs=3, lr=0.02, draws=1, batch_size=4)
    logged: list[str] = []
    epoch, score = fit_decoder_head(g, pairs, 256, cfg=cfg, log=logged.append)
    before = float(logged[0].rsplit(" ", 1)[1])
    assert intact - before > 0.05 and epoch > 0, (intact, before, score)  # a real damage
    assert score - before > 0.5 * (intact - before), (intact, before, score)
    assert all(torch.equal(v, g.state_dict()[k]) for k, v in frozen.items())
    assert [p.requires_grad for p in g.parameters()] == flags
    assert torch.equal(torch.get_rng_state(), rng)
    assert gain_miou(pre_tanh(g, held[:, 0]), held[:, 1], 1.0) == pytest.approx(score, abs=0.01)
