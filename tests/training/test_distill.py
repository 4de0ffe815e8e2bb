"""Distillation on tiny nets: the teacher's cached maps, the samples that carry them, the loss
terms, and a student trained with ``--teacher`` whose card names its teacher."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from geomap_gan.errors import InputError
from geomap_gan.legend import BACKGROUND, COLOURS, ROAD_MIN, class_masks
from geomap_gan.model.modelfile import MapModel, ModelCard, build_generator, load_model, save_model
from geomap_gan.model.nets import UnetGenerator, from_model_range, init_weights, to_model_range
from geomap_gan.model.registry import architecture
from geomap_gan.training import distill
from geomap_gan.training.augment import Augment
from geomap_gan.training.config import TrainConfig
from geomap_gan.training.loop import Trainer
from geomap_gan.training.process import seed_process


def tiny_teacher(path: Path, ngf: int = 4, num_downs: int = 4) -> Path:
    torch.manual_seed(1)
    card = ModelCard(name="tiny-teacher", ngf=ngf, num_downs=num_downs, antialias=True,
                     tile_size=32, gsd=2.0, metrics={"miou": 0.5})  # fmt: skip
    card = ModelCard(
        **{**card.__dict__, "receptive_field": architecture("unet_256").receptive_field(card)}
    )
    g = init_weights(build_generator(card.validate()), gain=0.2)
    for m in g.modules():  # running statistics that are not the identity
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 2.0)
    return save_model(MapModel(g, card), path, half=False)


@pytest.fixture(scope="module")
def teacher_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_teacher(tmp_path_factory.mktemp("teacher") / "teacher.safetensors")


@pytest.fixture(scope="module")
def tiny_maps(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """6 train + 2 val A|B pairs of 64 px halves: a white street on a background, noisy aerial."""
    root = tmp_path_factory.mktemp("maps")
    rng = np.random.default_rng(0)
    for split, n in (("train", 6), ("val", 2)):
        (root / split).mkdir()
        for i in range(n):
            b = np.full((64, 64, 3), (233, 230, 223), np.uint8)
            b[:, rng.integers(0, 56) :][:, :6] = 255
            a = np.clip(b.astype(int) // 2 + rng.integers(0, 60, b.shape), 0, 255).astype(np.uint8)
            Image.fromarray(np.concatenate([a, b], 1)).save(root / split / f"{i + 1}.png")
    return root


# ---- the teacher's maps --------------------------------------------------------------------------
def test_teacher_pre_tanh_is_the_teachers_map_before_its_tanh(teacher_file: Path) -> None:
    """Without a margin, tanh of the cached map is the teacher's map; with its receptive field
    as margin (reflected), pixels whose field lies inside the image are unchanged too."""
    teacher = load_model(teacher_file)
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (3, 128, 128, 3), dtype=np.uint8)
    x = to_model_range(torch.from_numpy(images).permute(0, 3, 1, 2))
    with torch.no_grad():
        direct = teacher.generator.eval()(x)
    plain = distill.teacher_pre_tanh(teacher, images, batch_size=2, amp=False, margin=0)
    assert plain.dtype == np.float16 and plain.shape == (3, 3, 128, 128)
    torch.testing.assert_close(
        torch.tanh(torch.from_numpy(plain).float()), direct, atol=2e-3, rtol=0
    )
    # 46 px: padded to 224, 48 px each side (3 strides). The pixel exactly 46 px in still
    # differs (the blur's reflection at the inner levels reaches one further; the renderer's
    # margins, rounded up to the stride, keep clear of it).
    rf = teacher.card.receptive_field + 1
    padded = distill.teacher_pre_tanh(teacher, images, batch_size=3, amp=False)
    inner = (..., slice(rf, 128 - rf), slice(rf, 128 - rf))
    torch.testing.assert_close(
        torch.tanh(torch.from_numpy(padded).float())[inner], direct[inner], atol=2e-3, rtol=0
    )
    assert not np.allclose(padded, plain, atol=1e-2)  # the border did see the reflection


def test_teacher_cache_is_computed_once_and_keyed_by_teacher_and_images(
    teacher_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    teacher = load_model(teacher_file)
    pairs = np.random.default_rng(0).integers(0, 256, (4, 2, 64, 64, 3), dtype=np.uint8)
    calls: list[int] = []
    real = distill.teacher_pre_tanh

    def counted(*args: object, **kw: object) -> np.ndarray:
        calls.append(1)
        return real(*args, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(distill, "teacher_pre_tanh", counted)
    cpu = torch.device("cpu")
    first = distill.teacher_cache(teacher, "sha-a", pairs, "AtoB", False, cpu, tmp_path)
    again = distill.teacher_cache(teacher, "sha-a", pairs, "AtoB", False, cpu, tmp_path)
    assert len(calls) == 1 and np.array_equal(first, again)
    assert json.loads((tmp_path / "teacher_cache.json").read_text())["teacher_sha256"] == "sha-a"
    distill.teacher_cache(teacher, "sha-b", pairs, "AtoB", False, cpu, tmp_path)  # new teacher
    other = pairs.copy()
    other[0, 0, 0, 0, 0] ^= 1
    distill.teacher_cache(teacher, "sha-b", other, "AtoB", False, cpu, tmp_path)  # new images
    distill.teacher_cache(teacher, "sha-b", other, "BtoA", False, cpu, tmp_path)  # other half
    assert len(calls) == 4
    (tmp_path / "teacher_cache.npy").write_bytes(b"damaged")
    distill.teacher_cache(teacher, "sha-b", other, "BtoA", False, cpu, tmp_path)
    assert len(calls) == 5


def test_distill_samples_move_aerial_map_and_teacher_map_alike() -> None:
    """Crop, scale jitter and rotations are drawn once for the three; pixel changes touch the
    aerial only."""
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (5, 40, 40, 3), dtype=np.uint8)
    pairs = np.stack([img, img], 1)
    logits = (img.transpose(0, 3, 1, 2) / 255).astype(np.float16)  # the image itself
    torch.manual_seed(0)
    geo = distill.DistillDataset(pairs, logits, 32, "AtoB", Augment(dihedral=True, scale=0.2))
    for i in range(5):
        a, b, t = geo[i]
        assert a.shape == b.shape == t.shape == (3, 32, 32)
        torch.testing.assert_close(a, b)
        torch.testing.assert_close((a + 1) / 2, t, atol=2e-3, rtol=0)
    photo = distill.DistillDataset(pairs, logits, 32, "AtoB", Augment(photometric=True, noise=True))
    a, b, t = photo[0]
    torch.testing.assert_close((b + 1) / 2, t, atol=2e-3, rtol=0)
    assert not torch.allclose(a, b, atol=1e-3)
    with pytest.raises(ValueError, match="do not match"):
        distill.DistillDataset(pairs, logits[:, :, :20], 32)


# ---- the loss terms ------------------------------------------------------------------------------
def test_hard_class_masks_are_the_legends_rules() -> None:
    rgb = np.random.default_rng(0).integers(150, 256, (2, 16, 16, 3), dtype=np.uint8)
    rgb[0, :4] = (254, 254, 251)  # road
    rgb[0, 4:8] = (177, 208, 254)  # water
    ours = distill.hard_class_masks(torch.from_numpy(rgb).permute(0, 3, 1, 2).float())
    for name, mask in class_masks(rgb).items():
        assert torch.equal(ours[name].bool(), torch.from_numpy(mask)), name


def test_soft_iou_loss_is_near_zero_on_the_target_and_pulls_strokes_to_white() -> None:
    grey = torch.full((1, 3, 16, 16), 230.0)
    grey[..., 6:9] = 254.0  # a street
    target = distill.hard_class_masks(grey)
    exact = to_model_range(grey.clone())  # (it scales a float tensor in place)
    assert distill.soft_iou_loss(exact, target, tau=0.5).item() < 1e-3
    short = to_model_range(torch.where(grey > 250, 244.0, grey)).requires_grad_(True)
    loss = distill.soft_iou_loss(short, target, tau=3.0)
    assert loss.item() > 0.5
    loss.backward()
    assert short.grad is not None and (short.grad[..., 6:9] < 0).all()  # brighter lowers it
    assert distill.soft_iou_loss(exact, {k: torch.zeros(1, 16, 16) for k in target}, 0.5) < 1.01


def test_logit_loss_clips_the_teacher_and_weights_its_roads() -> None:
    teacher = torch.zeros(1, 3, 4, 4)
    teacher[..., 0, :] = 10.0  # a road row, far beyond the clip
    assert to_model_range(torch.tensor(float(ROAD_MIN))) < torch.tanh(torch.tensor(3.0))
    student = torch.zeros(1, 3, 4, 4)
    student[..., 0, :] = 3.0
    assert distill.logit_l1_loss(student, teacher, 0.0, clip=3.0).item() == 0.0
    student = torch.zeros(1, 3, 4, 4)  # 3.0 off on the road row (4 px), exact elsewhere
    plain = distill.logit_l1_loss(student, teacher, 0.0, clip=3.0).item()
    weighted = distill.logit_l1_loss(student, teacher, 3.0, clip=3.0).item()
    assert plain == pytest.approx(3.0 * 4 / 16)
    assert weighted == pytest.approx(3.0 * 4 * 4 / (12 + 4 * 4))


def test_logit_loss_weights_the_teachers_highways() -> None:
    """A highway pixel is one whose teacher map (tanh of its pre-tanh) the legend reads as
    highway: the legend's orange there, grey elsewhere; an error of 1 on the one highway pixel
    weighs 1 + H against the 15 exact pixels' 1 each."""
    orange = to_model_range(torch.tensor(COLOURS["highway"], dtype=torch.float32))
    grey = to_model_range(torch.tensor(BACKGROUND, dtype=torch.float32))
    teacher = torch.atanh(grey).view(1, 3, 1, 1).expand(1, 3, 4, 4).clone()
    teacher[0, :, 2, 1] = torch.atanh(orange)
    student = teacher.clone()
    student[0, :, 2, 1] += 1.0
    assert distill.logit_l1_loss(student, teacher, 0.0, 3.0, 9.0).item() == pytest.approx(
        3 * 10 / (3 * (15 + 10))
    )
    assert distill.logit_l1_loss(student, teacher, 0.0, 3.0).item() == pytest.approx(1 / 16)
    student = teacher.clone()
    student[0, :, 0, 0] += 1.0  # the same error on a background pixel is not weighted
    assert distill.logit_l1_loss(student, teacher, 0.0, 3.0, 9.0).item() == pytest.approx(
        3 / (3 * 25)
    )


def test_feature_match_adapts_widths_and_trains_only_the_student_side() -> None:
    torch.manual_seed(0)
    student, teacher = UnetGenerator(ngf=2, num_downs=4), UnetGenerator(ngf=4, num_downs=5)
    fm = distill.FeatureMatch(student, teacher.requires_grad_(False), levels=2)
    assert [a.in_channels for a in fm.adapters] == [4, 8]
    assert [a.out_channels for a in fm.adapters] == [8, 16]
    x = torch.rand(2, 3, 32, 32)
    student(x)
    with torch.no_grad():
        teacher(x)
    fm.loss().backward()
    assert all(p.grad is not None for p in fm.parameters())
    assert student.model.model[0].weight.grad is not None  # the encoder learns from it
    assert all(p.grad is None for p in teacher.parameters())


# ---- a student trained with --teacher ------------------------------------------------------------
def distill_cfg(data: Path, out: Path, teacher: Path, **kw: object) -> TrainConfig:
    base: dict[str, object] = dict(
        data_dir=str(data), out_dir=str(out), ngf=2, num_downs=4, antialias=True, batch_size=3,
        epochs=1, epochs_decay=1, load_size=64, crop_size=32, save_every=1, val_subset=2,
        samples=1, threads=1, amp=False, seed=3, device="cpu", lambda_gan=0.0, road_weight=4.0,
        teacher=str(teacher), lambda_logit=10.0, lambda_iou=1.0, lambda_iou_teacher=1.0,
        bn_recalibrate=6, aug_dihedral=True, aug_scale=0.2,
    )  # fmt: skip
    base.update(kw)
    return TrainConfig(**base)  # type: ignore[arg-type]


def test_distilled_student_card_names_its_teacher_and_recipe(
    tiny_maps: Path, teacher_file: Path, tmp_path: Path
) -> None:
    out = tmp_path / "run"
    seed_process(3)
    trainer = Trainer(distill_cfg(tiny_maps, out, teacher_file), command="pytest")
    trainer.fit()
    card = load_model(out / "model.safetensors").card
    teacher = card.teacher
    assert teacher["name"] == "tiny-teacher" and teacher["file"] == "teacher.safetensors"
    assert teacher["sha256"] == distill.file_sha256(teacher_file)
    assert "lambda_logit=10.0" in teacher["recipe"] and "teacher_cache=True" in teacher["recipe"]
    assert card.ngf == 2 and card.num_downs == 4 and card.receptive_field == 46
    assert (out / "teacher_cache.npy").is_file()
    with (out / "log.csv").open() as fh:
        header = fh.readline()
    for term in ("G_T", "G_logit", "G_iou", "G_iou_T"):
        assert term in header.split(",")


def test_distillation_resumes_and_runs_the_teacher_live(
    tiny_maps: Path, teacher_file: Path, tmp_path: Path
) -> None:
    """Without the cache (and with feature matching) the teacher runs at each update; the
    adapters travel in the checkpoint, so a resumed run goes on with them."""
    out = tmp_path / "run"
    cfg = distill_cfg(tiny_maps, out, teacher_file, teacher_cache=False, lambda_feat=1.0,
                      epochs_decay=0, max_steps=2)  # fmt: skip
    seed_process(3)
    first = Trainer(cfg)
    first.fit()
    assert not (out / "teacher_cache.npy").exists()
    saved = torch.load(out / "checkpoint.pt", weights_only=True)
    assert "adapters" in saved
    seed_process(3)
    resumed = Trainer(distill_cfg(tiny_maps, out, teacher_file, teacher_cache=False,
                                  lambda_feat=1.0, epochs=2, epochs_decay=0, max_steps=4))  # fmt: skip
    assert resumed.feature_match is not None
    resumed.fit(resume=True)
    assert resumed.step == 4
    for k, v in saved["adapters"].items():  # loaded, then trained on
        assert not torch.equal(resumed.feature_match.state_dict()[k], v)


def test_teacher_options_are_checked_before_any_data_is_read(teacher_file: Path) -> None:
    with pytest.raises(InputError, match="need a --teacher"):
        TrainConfig(data_dir="x", lambda_logit=1.0)
    with pytest.raises(InputError, match="0 or more"):
        TrainConfig(data_dir="x", teacher=str(teacher_file), lambda_teacher=-1.0)


def test_student_learns_the_teachers_white_strokes() -> None:
    """The point of the logit term: from a student that paints the teacher's street 240 grey,
    one gradient step on the pre-tanh L1 moves it further towards white than one on the map L1
    of the same weight (tanh flattens the map's gradient near white)."""
    from geomap_gan.training.losses import map_l1_loss

    t = torch.full((1, 3, 8, 8), 2.8)  # the teacher: 254 grey
    z0 = torch.atanh(to_model_range(torch.tensor(240.0))).expand(1, 3, 8, 8).clone()
    steps = {}
    for name in ("map", "logit"):
        z = z0.clone().requires_grad_(True)
        if name == "map":
            loss = map_l1_loss(torch.tanh(z), torch.tanh(t), 0.0)
        else:
            loss = distill.logit_l1_loss(z, t, 0.0, clip=3.0)
        loss.backward()
        steps[name] = -float(z.grad.mean())  # type: ignore[union-attr]
    assert steps["logit"] > 4 * steps["map"] > 0  # tanh' at 240 grey is 0.22
    assert from_model_range(torch.tanh(t)).min() >= ROAD_MIN


# ---- --teacher-scenes ----------------------------------------------------------------------------
def test_scene_tiles_are_the_renderer_s_reading_of_whole_valid_tiles(
    teacher_file: Path, tmp_path: Path
) -> None:
    """Tiles side by side on the teacher's grid (here the scene's: 2 m both), whole and valid
    only: a nodata corner drops the tiles it touches; at most ``limit`` of them."""
    from geotiffs import write_geotiff

    rng = np.random.default_rng(5)
    data = rng.integers(1, 255, (3, 200, 260), dtype=np.uint8)
    data[:, :60, :60] = 0  # nodata: the first tile is not whole
    src = write_geotiff(tmp_path / "scene.tif", data, 2.0, nodata=0)
    card = load_model(teacher_file).card
    tiles = distill.scene_tiles(str(src), card, 64, 100)
    assert tiles.shape == (3 * 4 - 1, 64, 64, 3)  # 4 columns x 3 rows, less the nodata corner's
    np.testing.assert_array_equal(tiles[0], data[:, 0:64, 64:128].transpose(1, 2, 0))
    assert len(distill.scene_tiles(str(src), card, 64, 4)) <= 4
    with pytest.raises(InputError, match="no whole 256 px tile"):
        distill.scene_tiles(str(src), card, 256, 10)


def test_teacher_scenes_add_pairs_labelled_by_the_teacher(
    tiny_maps: Path, teacher_file: Path, tmp_path: Path
) -> None:
    """The scenes' tiles join the training pairs with the teacher's map as their map; a run
    distils on them and records the scenes in its card's recipe line."""
    from geotiffs import write_geotiff

    rng = np.random.default_rng(6)
    src = write_geotiff(tmp_path / "scene.tif", rng.integers(0, 255, (3, 130, 200), np.uint8))
    cfg = distill_cfg(tiny_maps, tmp_path / "run", teacher_file, teacher_scenes=str(src))
    seed_process(3)
    trainer = Trainer(cfg)
    teacher = trainer.teacher
    assert teacher is not None
    pairs, logits = distill.distill_pairs(trainer.train_pairs, cfg, teacher,
                                          trainer.teacher_sha, trainer.device, None)  # fmt: skip
    n = len(trainer.train_pairs)
    assert len(pairs) == n + 2 * 3 and len(logits) == len(pairs)  # 3 x 2 tiles of 64 px
    np.testing.assert_array_equal(pairs[:n], trainer.train_pairs)
    expected = distill.teacher_pre_tanh(teacher, pairs[n:, 0], amp=False)
    np.testing.assert_allclose(
        logits[n:].astype(np.float32), expected.astype(np.float32), atol=1e-2
    )
    grey = from_model_range(torch.tanh(torch.from_numpy(logits[n:]).float()))
    assert np.abs(pairs[n:, 1].astype(int) - grey.permute(0, 2, 3, 1).numpy()).max() <= 0.5
    trainer.fit()
    assert (
        "teacher_scenes="
        in load_model(tmp_path / "run" / "model.safetensors").card.teacher["recipe"]
    )


def test_teacher_scenes_need_a_teacher_and_its_cache(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="--teacher-scenes needs a --teacher"):
        TrainConfig(data_dir=str(tmp_path), teacher_scenes="a.tif")
    with pytest.raises(InputError, match="--teacher-scenes needs"):
        TrainConfig(data_dir=str(tmp_path), teacher="t.safetensors", teacher_scenes="a.tif",
                    teacher_cache=False)  # fmt: skip
