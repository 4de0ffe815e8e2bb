"""The trainer: a few steps on tiny pairs, exact resume, Ctrl-C, DDP, and learning on real pairs."""

from __future__ import annotations

import copy
import csv
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from geomap_gan.errors import CheckpointError, InputError
from geomap_gan.legend import class_masks
from geomap_gan.model.modelfile import load_model
from geomap_gan.model.nets import to_model_range
from geomap_gan.training.config import TrainConfig
from geomap_gan.training.data import load_split
from geomap_gan.training.loop import Trainer, lr_factor
from geomap_gan.training.losses import map_l1_loss
from geomap_gan.training.process import Placement, place_process, seed_process

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def tiny_maps(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """8 train + 4 val A|B pairs of 264 px halves: blocks of colour (map) under noise (aerial)."""
    root = tmp_path_factory.mktemp("maps")
    rng = np.random.default_rng(0)
    for split, n in (("train", 8), ("val", 4)):
        (root / split).mkdir()
        for i in range(n):
            b = np.full((264, 264, 3), (242, 239, 233), np.uint8)
            b[rng.integers(0, 200) :][:, :64] = (170, 218, 255)
            a = np.clip(b.astype(int) // 2 + rng.integers(0, 60, b.shape), 0, 255).astype(np.uint8)
            Image.fromarray(np.concatenate([a, b], 1)).save(root / split / f"{i + 1}.jpg")
    return root


def tiny_cfg(data: Path, out: Path, **kw: object) -> TrainConfig:
    base: dict[str, object] = dict(
        data_dir=str(data), out_dir=str(out), ngf=4, ndf=8, batch_size=4, epochs=1, epochs_decay=1,
        load_size=264, save_every=1, val_subset=4, samples=2, threads=1, amp=False, seed=3,
        device="cpu",  # exact resume needs deterministic kernels; test_gpu.py covers CUDA
    )  # fmt: skip
    base.update(kw)
    return TrainConfig(**base)  # type: ignore[arg-type]


def seeded(cfg: TrainConfig, **kw: object) -> Trainer:
    """A one-process Trainer after seeding the RNGs as place_process does (its thread setting
    would outlive the test in this process)."""
    seed_process(cfg.seed)
    return Trainer(cfg, **kw)  # type: ignore[arg-type]


def test_place_process_seeds_and_places_a_single_process(tiny_maps: Path, tmp_path: Path) -> None:
    cfg = tiny_cfg(tiny_maps, tmp_path, threads=torch.get_num_threads())
    place = place_process(cfg)
    assert place == Placement(0, 1, torch.device("cpu"))
    first = Trainer(cfg, place).G.state_dict()
    unseeded = Trainer(cfg, place).G.state_dict()  # the RNGs went on: other initial weights
    assert not all(torch.equal(v, unseeded[k]) for k, v in first.items())
    again = Trainer(cfg, place_process(cfg)).G.state_dict()
    assert all(torch.equal(v, again[k]) for k, v in first.items())


def test_lr_schedule_is_constant_then_linear_to_zero() -> None:
    cfg = TrainConfig(data_dir="x", epochs=3, epochs_decay=3)
    assert [round(lr_factor(e, cfg), 3) for e in range(6)] == [1, 1, 1, 0.75, 0.5, 0.25]


def test_short_run_writes_everything(tiny_maps: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    metrics = seeded(tiny_cfg(tiny_maps, out), command="pytest").fit()
    assert (out / "checkpoint.pt").is_file() and (out / "model.safetensors").is_file()
    rows = list(csv.DictReader((out / "log.csv").open()))
    assert [r["epoch"] for r in rows] == ["1", "2"]
    assert [float(r["lr"]) for r in rows] == pytest.approx([2e-4, 1e-4])  # each epoch's own lr
    assert all(r["val_miou"] != "" for r in rows) and 0 <= metrics["miou"] <= 1
    assert sorted(p.name for p in (out / "samples").iterdir()) == ["epoch_001.png", "epoch_002.png"]
    grid = Image.open(out / "samples" / "epoch_002.png")
    assert grid.size == (3 * 256, 2 * 256)
    model = load_model(out / "model.safetensors")
    assert model.card.ngf == 4 and model.card.epochs == 2 and model.card.command == "pytest"
    assert model.card.gsd == pytest.approx(0.9 * 600 / 264, abs=1e-3)
    assert set(model.card.metrics) >= {"miou", "rmse", "iou_road"}


def test_resume_continues_exactly(tiny_maps: Path, tmp_path: Path) -> None:
    straight = seeded(tiny_cfg(tiny_maps, tmp_path / "a", val_every=0, samples=0))
    straight.fit()
    first = seeded(tiny_cfg(tiny_maps, tmp_path / "b", val_every=0, samples=0, max_steps=2))
    first.fit()  # stops after epoch 1 (2 steps of 4 pairs)
    assert first.epoch == 1
    resumed = seeded(tiny_cfg(tiny_maps, tmp_path / "b", val_every=0, samples=0))
    resumed.fit(resume=True)
    assert resumed.epoch == 2 and resumed.step == straight.step == 4
    a, b = straight.G.state_dict(), resumed.G.state_dict()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=1e-6, msg=k)
    assert resumed.opt_G.param_groups[0]["lr"] == straight.opt_G.param_groups[0]["lr"] == 0.0


def test_resume_with_a_longer_schedule_follows_it_from_the_first_epoch(
    tiny_maps: Path, tmp_path: Path
) -> None:
    """A finished run (its decay ended at lr 0) resumed with more epochs and another --lr:
    every resumed epoch trains at the new schedule's rate, the first one included."""
    seeded(tiny_cfg(tiny_maps, tmp_path, val_every=0, samples=0)).fit()  # 2 epochs, ends at 0
    longer = tiny_cfg(tiny_maps, tmp_path, val_every=0, samples=0, epochs=3, lr=1e-4)
    resumed = seeded(longer)
    resumed.fit(resume=True)
    rows = list(csv.DictReader((tmp_path / "log.csv").open()))
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3, 4]
    new_rates = [1e-4 * lr_factor(e, longer) for e in (2, 3)]  # epochs 3 and 4, 0-based
    assert [float(r["lr"]) for r in rows[2:]] == pytest.approx(new_rates)
    assert new_rates[0] == pytest.approx(1e-4)  # not the old run's final 0
    assert resumed.opt_D.param_groups[0]["lr"] == pytest.approx(1e-4 * lr_factor(4, longer))


def test_d_warmup_trains_only_the_discriminator_for_its_updates(
    tiny_maps: Path, tmp_path: Path
) -> None:
    """--d-warmup 2: after 2 updates G's weights are the initial ones and D's are not; the
    updates after the warm-up (here in the resumed second epoch) move G."""
    cfg = tiny_cfg(tiny_maps, tmp_path, val_every=0, samples=0, d_warmup=2, max_steps=2)
    trainer = seeded(cfg)
    g0 = {k: v.clone() for k, v in trainer.G.state_dict().items() if k.endswith("weight")}
    d0 = {k: v.clone() for k, v in trainer.D.state_dict().items() if k.endswith("weight")}
    trainer.fit()
    g2, d2 = trainer.G.state_dict(), trainer.D.state_dict()
    assert all(torch.equal(v, g2[k]) for k, v in g0.items())
    assert not all(torch.equal(v, d2[k]) for k, v in d0.items())
    resumed = seeded(tiny_cfg(tiny_maps, tmp_path, val_every=0, samples=0, d_warmup=2))
    resumed.fit(resume=True)  # epoch 2: updates 3 and 4 train G
    g4 = resumed.G.state_dict()
    assert not all(torch.equal(v, g4[k]) for k, v in g0.items())


def test_ema_averages_g_after_each_g_update_and_is_what_ships(
    tiny_maps: Path, tmp_path: Path
) -> None:
    """--ema-decay 0.5: the average stays put during the D warm-up, moves half-way to G's new
    weights at each G update, is the generator the export writes, and resumes exactly."""
    cfg = tiny_cfg(tiny_maps, tmp_path, val_every=0, samples=0, ema_decay=0.5, d_warmup=1)
    trainer = seeded(cfg)
    assert trainer.G_ema is not None
    start = {k: v.clone() for k, v in trainer.G_ema.state_dict().items()}
    a, b = next(iter(trainer._loader()))
    trainer.train_step(a, b)  # the warm-up update: G and its average unchanged
    assert all(torch.equal(v, trainer.G_ema.state_dict()[k]) for k, v in start.items())
    trainer.train_step(a, b)
    g = trainer.G.state_dict()
    for name, avg in trainer.G_ema.named_parameters():
        assert not torch.equal(avg, g[name])  # neither the old weights nor the new ones
        torch.testing.assert_close(avg, 0.5 * start[name] + 0.5 * g[name], rtol=0, atol=1e-7)

    run = dict(val_every=0, samples=0, ema_decay=0.5, lr=0.02)  # a rate that moves G visibly
    trainer = seeded(tiny_cfg(tiny_maps, tmp_path / "run", **run))
    trainer.fit()
    model = load_model(tmp_path / "run" / "model.safetensors")
    avg_state, g_state = trainer.G_ema.state_dict(), trainer.G.state_dict()
    for name, w in model.generator.state_dict().items():
        torch.testing.assert_close(w.float(), avg_state[name].float(), rtol=1e-3, atol=1e-4)
    assert any(
        not torch.allclose(avg_state[k].float(), g_state[k].float(), atol=1e-2)
        for k in avg_state
        if k.endswith("weight")
    )
    resumed = seeded(tiny_cfg(tiny_maps, tmp_path / "run", **run))
    resumed.load_checkpoint()
    assert resumed.G_ema is not None
    for k, v in resumed.G_ema.state_dict().items():
        assert torch.equal(v, avg_state[k]), k


def test_an_ema_decay_outside_0_to_1_is_refused_before_any_data_is_read(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="--ema-decay"):
        TrainConfig(data_dir=str(tmp_path / "missing"), ema_decay=1.0)


@pytest.mark.parametrize("lambda_gan", [0.0, 1.0])
def test_lambda_gan_0_trains_g_on_l1_alone_and_leaves_d_untouched(
    tiny_maps: Path, tmp_path: Path, lambda_gan: float
) -> None:
    """--lambda-gan 0: G's gradient is exactly that of lambda_l1 x the (road-weighted) L1 of its
    map, D is neither run nor updated (weights and BatchNorm statistics bit for bit) and its
    losses log as nan; with the adversarial term on, both differ (the check can fail)."""
    cfg = tiny_cfg(
        tiny_maps, tmp_path, val_every=0, samples=0, lambda_gan=lambda_gan, road_weight=2
    )
    trainer = seeded(cfg)
    a, b = next(iter(trainer._loader()))
    g_copy = copy.deepcopy(trainer.G)
    d0 = {k: v.clone() for k, v in trainer.D.state_dict().items()}
    torch.manual_seed(7)  # the same dropout draws in both forward passes
    logged = trainer.train_step(a, b)

    torch.manual_seed(7)
    expected = cfg.lambda_l1 * map_l1_loss(g_copy(a), b, cfg.road_weight)
    expected.backward()
    grads = [
        (p.grad, q.grad) for p, q in zip(trainer.G.parameters(), g_copy.parameters(), strict=True)
    ]
    d_same = all(torch.equal(v, trainer.D.state_dict()[k]) for k, v in d0.items())
    if lambda_gan == 0:
        for got, want in grads:
            torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-6)
        assert d_same and np.isnan([logged["D_real"], logged["D_fake"], logged["G_GAN"]]).all()
    else:
        assert not all(torch.allclose(got, want, rtol=1e-4, atol=1e-6) for got, want in grads)
        assert not d_same and np.isfinite([logged["D_real"], logged["D_fake"]]).all()


def test_lambda_gan_0_with_a_d_warmup_or_a_negative_weight_is_refused(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="--d-warmup 0 or a --lambda-gan above 0"):
        TrainConfig(data_dir=str(tmp_path / "missing"), lambda_gan=0, d_warmup=10)
    with pytest.raises(InputError, match="--lambda-gan must be 0 or more"):
        TrainConfig(data_dir=str(tmp_path / "missing"), lambda_gan=-1)


def test_resume_after_a_kill_logs_each_epoch_once(tiny_maps: Path, tmp_path: Path) -> None:
    """A SIGKILL between logging an epoch and checkpointing it: the resumed run reruns that
    epoch and log.csv still has one row per epoch (issue 14, item 25)."""
    first = seeded(tiny_cfg(tiny_maps, tmp_path, val_every=0, samples=0, max_steps=2))
    first.fit()  # epoch 1 logged and checkpointed
    log_csv = tmp_path / "log.csv"
    lines = log_csv.read_text().splitlines()
    log_csv.write_text(
        "\n".join([*lines, lines[-1].replace("1,", "2,", 1)]) + "\n"
    )  # epoch 2 logged
    resumed = seeded(tiny_cfg(tiny_maps, tmp_path, val_every=0, samples=0))
    resumed.fit(resume=True)
    epochs = [int(float(ln.split(",")[0])) for ln in log_csv.read_text().splitlines()[1:]]
    assert epochs == [1, 2]


def test_resume_refuses_other_architecture(tiny_maps: Path, tmp_path: Path) -> None:
    seeded(tiny_cfg(tiny_maps, tmp_path, val_every=0, samples=0, max_steps=1)).fit()
    with pytest.raises(CheckpointError, match="ngf=4"):
        seeded(tiny_cfg(tiny_maps, tmp_path, ngf=8)).fit(resume=True)


def test_existing_run_needs_resume(tiny_maps: Path, tmp_path: Path) -> None:
    seeded(tiny_cfg(tiny_maps, tmp_path, val_every=0, samples=0, max_steps=1)).fit()
    with pytest.raises(CheckpointError, match="--resume"):
        seeded(tiny_cfg(tiny_maps, tmp_path)).fit()


def test_ctrl_c_saves_a_checkpoint(tiny_maps: Path, tmp_path: Path) -> None:
    def interrupt(p: dict[str, float]) -> None:
        if p["epoch"] == 2:
            raise KeyboardInterrupt

    trainer = seeded(tiny_cfg(tiny_maps, tmp_path, val_every=0, samples=0), progress=interrupt)
    with pytest.raises(KeyboardInterrupt):
        trainer.fit()
    state = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    assert state["epoch"] == 1 and state["step"] == 3  # epoch 2 re-runs on resume
    assert not list(tmp_path.glob("*.tmp"))


def test_ctrl_c_in_validation_logs_the_epoch_it_checkpoints(
    tiny_maps: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Interrupted while validating epoch 2, whose training is done: the checkpoint says epoch 2
    (a resume starts at 3), so log.csv must hold epoch 2's row (its validation columns blank)."""
    trainer = seeded(tiny_cfg(tiny_maps, tmp_path, val_every=2, samples=0, epochs=2))

    def interrupted(*args: object, **kwargs: object) -> dict[str, float]:
        raise KeyboardInterrupt

    monkeypatch.setattr(trainer, "validate", interrupted)
    with pytest.raises(KeyboardInterrupt):
        trainer.fit()
    assert torch.load(tmp_path / "checkpoint.pt", weights_only=True)["epoch"] == 2
    with (tmp_path / "log.csv").open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["epoch"] for r in rows] == ["1", "2"] and rows[1]["val_miou"] == ""


def test_ddp_two_gloo_ranks_hold_identical_weights(tiny_maps: Path, tmp_path: Path) -> None:
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": path}
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
        str(ROOT / "tests" / "ddp_worker.py"), str(tiny_maps), str(tmp_path),
    ]  # fmt: skip
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    r0 = torch.load(tmp_path / "rank0.pt", weights_only=True)
    r1 = torch.load(tmp_path / "rank1.pt", weights_only=True)
    init = seeded(tiny_cfg(tiny_maps, tmp_path / "init")).G.state_dict()
    assert any(not torch.equal(r0[k], init[k]) for k in r0)  # it trained
    for k in r0:
        if r0[k].is_floating_point() and "running" not in k:
            assert torch.equal(r0[k], r1[k]), k
    assert (tmp_path / "checkpoint.pt").is_file()  # written by rank 0 only, once


@pytest.mark.slow
def test_l1_goes_down_on_16_real_pairs(maps286: Path, tmp_path: Path) -> None:
    cfg = TrainConfig(
        data_dir=str(maps286), out_dir=str(tmp_path), ngf=16, ndf=16, batch_size=4, epochs=6,
        epochs_decay=0, limit=16, val_every=0, samples=0, seed=0, save_every=0,
    )  # fmt: skip
    trainer = seeded(cfg)

    def l1_on_train_pairs() -> float:
        a = torch.from_numpy(trainer.train_pairs[:, 0, 15:271, 15:271]).permute(0, 3, 1, 2)
        b = torch.from_numpy(trainer.train_pairs[:, 1, 15:271, 15:271]).permute(0, 3, 1, 2)
        trainer.G.eval()
        with torch.no_grad():
            fake = trainer.G(a.float() / 127.5 - 1)
        trainer.G.train()
        return (fake - (b.float() / 127.5 - 1)).abs().mean().item()

    before = l1_on_train_pairs()
    trainer.fit()
    after = l1_on_train_pairs()
    assert after < 0.9 * before, (before, after)


def test_road_weighted_l1_weighs_the_real_maps_road_pixels(maps256: Path) -> None:
    """On real val maps: weight 0 is plain L1; weight W is the mean of |error| with 1 + W on the
    pixels that the metrics' own colour rule calls road, so an error on streets costs more."""
    pairs, _ = load_split(maps256, "val", 256, limit=4)
    maps = pairs[:, 1]
    real = to_model_range(torch.from_numpy(maps).permute(0, 3, 1, 2))
    rng = np.random.default_rng(0)
    fake = real + torch.from_numpy(rng.normal(0, 0.2, real.shape).astype(np.float32))
    err = (fake - real).abs().numpy()
    road = class_masks(maps)["road"]  # (N, H, W) from the uint8 maps, not the model range
    assert 0.01 < road.mean() < 0.5  # these tiles do hold streets
    weight = 1.0 + 4.0 * road[:, None]
    expected = (err * weight).sum() / (weight.sum() * 3)

    assert map_l1_loss(fake, real, 0.0).item() == pytest.approx(err.mean(), rel=1e-6)
    assert map_l1_loss(fake, real, 4.0).item() == pytest.approx(expected, rel=1e-5)
    on_roads = real + 0.5 * torch.from_numpy(road[:, None]).float()  # error on streets only
    share = road.mean()  # streets carry 5 / (1 + 4 * share) times their plain share of the loss
    assert map_l1_loss(on_roads, real, 4.0).item() == pytest.approx(
        map_l1_loss(on_roads, real, 0.0).item() * 5 / (1 + 4 * share), rel=1e-5
    )


def test_highway_weighted_l1_weighs_the_real_maps_highway_pixels(maps256: Path) -> None:
    """Weight H adds H on the pixels the metrics' highway rule claims (beside the road weight)."""
    pairs, _ = load_split(maps256, "val", 256, limit=64)
    maps = pairs[:, 1]
    masks = class_masks(maps)
    keep = masks["highway"].mean(axis=(1, 2)) > 0.01
    maps, road, highway = maps[keep], masks["road"][keep], masks["highway"][keep]
    assert len(maps) >= 2  # tiles that do hold highways
    real = to_model_range(torch.from_numpy(maps).permute(0, 3, 1, 2))
    rng = np.random.default_rng(1)
    fake = real + torch.from_numpy(rng.normal(0, 0.2, real.shape).astype(np.float32))
    err = (fake - real).abs().numpy()
    weight = 1.0 + 4.0 * road[:, None] + 30.0 * highway[:, None]
    expected = (err * weight).sum() / (weight.sum() * 3)
    assert map_l1_loss(fake, real, 4.0, 30.0).item() == pytest.approx(expected, rel=1e-5)
    assert map_l1_loss(fake, real, 4.0, 30.0).item() != pytest.approx(
        map_l1_loss(fake, real, 4.0).item(), rel=1e-3
    )


@pytest.mark.parametrize("field", ["road_weight", "highway_weight"])
def test_a_negative_class_weight_is_refused_before_any_data_is_read(
    tmp_path: Path, field: str
) -> None:
    with pytest.raises(InputError, match="--road-weight and --highway-weight must be 0 or more"):
        TrainConfig(data_dir=str(tmp_path / "missing"), **{field: -1.0})


def test_a_clean_share_outside_0_to_1_is_refused_before_any_data_is_read(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="--aug-clean must be 0 to 1"):
        TrainConfig(data_dir=str(tmp_path / "missing"), aug_clean=1.5)
    assert TrainConfig(data_dir=str(tmp_path / "missing"), aug_clean=0.5).augment.clean == 0.5


def test_batchnorm_recalibration_is_the_plain_average_of_batch_statistics(
    tiny_maps: Path, tmp_path: Path
) -> None:
    from geomap_gan.training.task import recalibrate_batchnorm

    trainer = seeded(tiny_cfg(tiny_maps, tmp_path, batch_size=2))
    g = trainer.G
    bn = next(m for m in g.modules() if isinstance(m, torch.nn.BatchNorm2d))
    seen: list[torch.Tensor] = []
    hook = bn.register_forward_hook(lambda m, i, o: seen.append(i[0].float().mean((0, 2, 3))))
    recalibrate_batchnorm(g, trainer.train_pairs, trainer.cfg, trainer.device)
    hook.remove()
    assert len(seen) == 4  # 8 pairs in batches of 2
    torch.testing.assert_close(bn.running_mean, torch.stack(seen).mean(0), rtol=1e-4, atol=1e-5)
    assert bn.momentum == 0.1 and g.training  # restored
    before = bn.running_mean.clone()
    recalibrate_batchnorm(g, trainer.train_pairs, trainer.cfg, trainer.device)
    assert torch.equal(before, bn.running_mean)  # deterministic


def test_cli_progress_leaves_out_the_terms_that_are_off(tiny_maps: Path, tmp_path: Path) -> None:
    """With --lambda-gan 0 the discriminator is not run: the bar shows G_L1, never a NaN."""
    from click.testing import CliRunner

    from geomap_gan.cli import cli

    args = ["train", str(tiny_maps), "--out", str(tmp_path / "run"), "--ngf", "4", "--ndf", "8",
            "--num-downs", "5", "--batch-size", "4", "--epochs", "1", "--epochs-decay", "0",
            "--load-size", "264", "--val-subset", "4", "--samples", "2", "--threads", "1",
            "--no-amp", "--device", "cpu", "--lambda-gan", "0", "--bn-recalibrate", "0"]  # fmt: skip
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    assert "G_L1=" in result.output and "nan" not in result.output.lower()
