"""Distillation: a small student generator learns a trained teacher's maps.

The teacher's map is a free label on any aerial, and a deterministic function of it, so a student
can fit it where it cannot fit the real map's unpredictable parts. But a student fitted to the
teacher with plain L1 draws no streets (FINDINGS: a 5-level ngf-16 student, 4,331 updates, road
IoU 0.00, the best RMSE of all): thin white strokes are a small share of the pixels, and a street
painted a few grey levels short of the legend's white (``legend.ROAD_MIN`` in every channel)
costs L1 almost nothing while it scores as missed. So the terms here aim at the strokes:

- L1 to the teacher's *pre-tanh* output (clipped): tanh flattens near white, so in the map's
  range a street painted 240 grey gets 0.22 of the gradient a mid-grey pixel gets (tanh's slope
  there), at 245 grey 0.15; before the tanh it is the same everywhere. Road-weighted like the
  map L1.
- the road-weighted L1 to the teacher's map and (as in any run) to the real map;
- a soft class-IoU term (the legend's colour rules, each step a sigmoid,
  :func:`geomap_gan.training.refine.soft_class_masks`) against the teacher's classes and/or the
  real map's, which is what ``evaluate`` scores;
- optional feature matching: the student's decoder features, through a learned 1x1 adapter per
  level (not exported), against the teacher's at the same scale;
- the trainer's own terms stay: the discriminator, the shift term (the map must not depend on the
  stride phase), anti-aliasing and the bounded receptive field are the student's architecture.

Teacher outputs on the training pairs are cached once per run (:func:`teacher_cache`): the
teacher's pre-tanh maps of the clean aerials at the load size, computed with a margin of
reflection so that every crop's target saw its surroundings, as the renderer's windows do. The
geometric augmentations then move aerial, real map and teacher map alike; the photometric ones
change the aerial only, so the student learns to draw the clean aerial's map from a degraded one.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset

from geomap_gan import files
from geomap_gan.device import autocast
from geomap_gan.legend import CLASS_RULES, CLASSES, ROAD_MIN
from geomap_gan.model.modelfile import MapModel, ModelCard
from geomap_gan.model.nets import UnetSkipBlock, from_model_range, to_model_range
from geomap_gan.training.augment import Augment, random_crop, random_dihedral, random_photometric
from geomap_gan.training.config import TrainConfig
from geomap_gan.training.data import Direction
from geomap_gan.training.losses import highway_mask
from geomap_gan.training.metrics import eval_mode, pair_sides

log = logging.getLogger(__name__)

CACHE_FORMAT = "geomap-gan-teacher-cache/1"
CACHE_NAME = "teacher_cache.npy"


# ---- the teacher -------------------------------------------------------------------------------
def file_sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with Path(path).open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def last_conv(g: nn.Module) -> nn.Module:
    """The generator's layer whose output goes through the final tanh (its pre-tanh map)."""
    layers = g.model.model  # type: ignore[union-attr]
    if not isinstance(layers, nn.Sequential) or not isinstance(layers[-1], nn.Tanh):
        raise TypeError("the generator does not end in a tanh")
    return layers[-2]


class Capture:
    """Keeps the latest output of ``module`` (a forward hook) until :meth:`pop`."""

    def __init__(self, module: nn.Module) -> None:
        self.value: torch.Tensor | None = None
        self.handle = module.register_forward_hook(self._hook)

    def _hook(self, _m: nn.Module, _i: object, out: torch.Tensor) -> None:
        self.value = out

    def pop(self) -> torch.Tensor:
        value, self.value = self.value, None
        if value is None:
            raise RuntimeError("the captured layer did not run")
        return value

    def remove(self) -> None:
        self.handle.remove()


@torch.no_grad()
def teacher_pre_tanh(
    teacher: MapModel,
    images: np.ndarray,
    batch_size: int = 8,
    device: torch.device | str = "cpu",
    amp: bool = True,
    margin: int | None = None,
) -> np.ndarray:
    """The teacher's (eval mode) output before its tanh for (N, H, W, 3) uint8 aerials:
    (N, 3, H, W) float16.

    Each image is reflected by ``margin`` px (default: the card's receptive field) and rounded
    up to the network's stride before it runs, then cut back: every target pixel saw as much
    context as a pixel the renderer keeps (its window cores drop exactly that margin).
    """
    from geomap_gan.model.registry import architecture

    card = teacher.card
    arch = architecture(card.arch)
    stride = arch.stride(card)
    margin = arch.receptive_field(card) if margin is None else margin
    n, h, w, _ = images.shape
    ph, pw = -(-(h + 2 * margin) // stride) * stride, -(-(w + 2 * margin) // stride) * stride
    top, left = (ph - h) // 2, (pw - w) // 2
    if max(ph - h - top, pw - w - left) >= min(h, w):
        raise ValueError(f"images of {h}x{w} px are too small to reflect by {margin} px")
    g = teacher.generator
    device = torch.device(device)
    out = np.empty((n, 3, h, w), np.float16)
    cap = Capture(last_conv(g))
    try:
        with eval_mode(g):
            for s in range(0, n, batch_size):
                x = to_model_range(torch.from_numpy(images[s : s + batch_size]).permute(0, 3, 1, 2))
                pad = (left, pw - w - left, top, ph - h - top)
                x = F.pad(x, pad, mode="reflect").to(device)
                with autocast(device, amp):
                    g(x.contiguous(memory_format=torch.channels_last))
                z = cap.pop().float()[..., top : top + h, left : left + w]
                out[s : s + batch_size] = z.cpu().numpy().astype(np.float16)
    finally:
        cap.remove()
    return out


def teacher_cache(
    teacher: MapModel,
    teacher_sha: str,
    pairs: np.ndarray,
    direction: Direction,
    amp: bool,
    device: torch.device,
    folder: Path | None,
) -> np.ndarray:
    """The teacher's pre-tanh maps of the input halves of (N, 2, H, W, 3) uint8 ``pairs``:
    (N, 3, H, W) float16, read from ``folder/teacher_cache.npy`` when its key (teacher file,
    images, precision) matches, else computed and, with ``folder``, written there (atomically).
    A resumed run then starts training at once (computing it costs minutes on a 2-core CPU)."""
    src, _ = pair_sides(direction)
    h = hashlib.sha256()
    h.update(np.ascontiguousarray(pairs[:, src]).data)
    key = {
        "format": CACHE_FORMAT,
        "teacher_sha256": teacher_sha,
        "images": h.hexdigest(),
        "shape": list(pairs[:, src].shape),
        "amp": bool(amp),
    }
    path = None if folder is None else folder / CACHE_NAME
    if path is not None and path.is_file() and path.with_suffix(".json").is_file():
        try:
            if json.loads(path.with_suffix(".json").read_text()) == key:
                cached = np.load(path, mmap_mode="r")
                log.info("teacher outputs from %s", path)
                return np.asarray(cached)
        except (OSError, ValueError) as exc:
            log.warning("teacher cache %s is unreadable (%s); computing it again", path, exc)
    log.info("computing the teacher's maps of %d training aerials", len(pairs))
    logits = teacher_pre_tanh(teacher, np.ascontiguousarray(pairs[:, src]), 8, device, amp)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        with files.atomic_output(path) as tmp, tmp.open("wb") as fh:
            np.save(fh, logits)
        with files.atomic_output(path.with_suffix(".json")) as tmp:
            tmp.write_text(json.dumps(key, sort_keys=True))
    return logits


def scene_tiles(path: str, card: ModelCard, size: int, limit: int) -> np.ndarray:
    """Up to ``limit`` tiles of ``size`` px of the scene ``path``, read as ``render`` reads it
    on ``card``'s grid (its GSD; bands, 8-bit stretch): side by side without overlap, spread
    evenly over the scene, only those whose every pixel is valid. (N, size, size, 3) uint8;
    InputError when none is whole."""
    import contextlib

    import rasterio

    from geomap_gan.errors import InputError
    from geomap_gan.rendering import scene
    from geomap_gan.rendering.engine import plan_scene, region_reader
    from geomap_gan.rendering.options import RenderOptions

    with rasterio.Env(), contextlib.ExitStack() as stack:
        ds = stack.enter_context(scene.open_raster(path))
        plan = plan_scene(ds, card, RenderOptions(overlap=0))
        reader = region_reader(stack, ds, plan, path)
        width, height = plan.grid.width, plan.grid.height
        origins = [(x, y) for y in range(0, height - size + 1, size)
                   for x in range(0, width - size + 1, size)]  # fmt: skip
        tiles = []
        for x, y in origins[:: max(1, -(-len(origins) // limit))]:
            data, valid = reader.read(x, y, size, size)
            if valid.all():
                tiles.append(data.transpose(1, 2, 0))
    if not tiles:
        raise InputError(
            f"--teacher-scenes: {path} has no whole {size} px tile of valid pixels on the "
            f"teacher's {width}x{height} px grid ({card.gsd:g} m/px); drop it or lower --load-size"
        )
    return np.stack(tiles)


def distill_pairs(
    pairs: np.ndarray,
    cfg: TrainConfig,
    teacher: MapModel,
    teacher_sha: str,
    device: torch.device,
    folder: Path | None,
) -> tuple[np.ndarray, np.ndarray]:
    """The training pairs and the teacher's cached pre-tanh maps of their inputs; with
    ``--teacher-scenes`` the scenes' tiles are appended as pairs whose map is the teacher's
    (rounded to uint8), their only label: every term then pulls towards the teacher there."""
    extra = [scene_tiles(p.strip(), teacher.card, pairs.shape[2], cfg.teacher_scene_tiles)
             for p in (cfg.teacher_scenes or "").split(",") if p.strip()]  # fmt: skip
    n = len(pairs)
    if extra:
        aerials = np.concatenate(extra)
        added = np.stack([aerials, np.zeros_like(aerials)], axis=1)
        pairs = np.concatenate([pairs, added])
        log.info("distilling on %d tiles of --teacher-scenes beside %d pairs", len(aerials), n)
    logits = teacher_cache(teacher, teacher_sha, pairs, cfg.direction, cfg.amp, device, folder)
    if extra:
        grey = from_model_range(torch.tanh(torch.from_numpy(logits[n:]).float()))
        pairs[n:, 1] = grey.round().clamp(0, 255).byte().permute(0, 2, 3, 1).numpy()
    return pairs, logits


class DistillDataset(Dataset):
    """Training samples (input, real map, teacher pre-tanh), each (3, crop, crop): the inputs
    and maps in [-1, 1], the teacher's map before its tanh.

    The crop, scale jitter and rotations/flips are drawn once and applied to all three (the
    pre-tanh map is resampled as it is, bilinearly); the pixel augmentations to the input only.
    """

    def __init__(
        self,
        pairs: np.ndarray,
        logits: np.ndarray,
        crop: int = 256,
        direction: Direction = "AtoB",
        augment: Augment | None = None,
    ) -> None:
        n, _, h, w, _ = pairs.shape
        if logits.shape != (n, 3, h, w):
            raise ValueError(f"teacher maps {logits.shape} do not match pairs {pairs.shape}")
        self.pairs = torch.from_numpy(pairs).permute(0, 1, 4, 2, 3).reshape(n, 6, h, w)
        self.logits = logits  # maybe the cache's read-only memory map: copied per sample
        self.crop, self.direction = crop, direction
        self.augment = augment or Augment()

    def __len__(self) -> int:
        return self.pairs.shape[0]

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        aug = self.augment.draw()
        t = torch.from_numpy(self.logits[i].astype(np.float32))
        x = torch.cat([self.pairs[i].float() / 255, t])
        x = random_crop(x, self.crop, aug.scale)
        x = random_dihedral(x) if aug.dihedral else (x.flip(-1) if torch.rand(()) < 0.5 else x)
        src = 0 if self.direction == "AtoB" else 3
        if aug.any_pixel:
            x[src : src + 3] = random_photometric(x[src : src + 3].contiguous(), aug)
        a, b = x[src : src + 3] * 2 - 1, x[3 - src : 6 - src] * 2 - 1
        return a, b, x[6:9].contiguous()


# ---- the loss terms ----------------------------------------------------------------------------
def hard_class_masks(grey: torch.Tensor) -> dict[str, torch.Tensor]:
    """``legend.CLASS_RULES`` on (N, 3, H, W) float grey levels (rounded first, as a uint8 map
    is scored): (N, H, W) float 0/1 masks."""
    rgb = grey.float().round()
    masks = {}
    for name, rules in CLASS_RULES.items():
        m = torch.ones_like(rgb[:, 0], dtype=torch.bool)
        for (wr, wg, wb), t in rules:
            m &= wr * rgb[:, 0] + wg * rgb[:, 1] + wb * rgb[:, 2] >= t
        masks[name] = m.float()
    return masks


def soft_iou_loss(fake: torch.Tensor, target: dict[str, torch.Tensor], tau: float) -> torch.Tensor:
    """1 - the soft map-class IoU of model-range ``fake`` against the hard masks ``target``,
    over the batch, averaged over the classes present (in the target or in the soft masks)."""
    from geomap_gan.training.refine import soft_class_masks

    soft = soft_class_masks(from_model_range(fake.float()), tau)
    ious = []
    for c in CLASSES:
        t, s = target[c], soft[c]
        union = (s + t - s * t).sum()
        if union.item() >= 1.0:
            ious.append((s * t).sum() / union)
    if not ious:
        return fake.new_zeros((), dtype=torch.float32)
    return 1 - torch.stack(ious).mean()


def logit_l1_loss(
    pre: torch.Tensor,
    target: torch.Tensor,
    road_weight: float,
    clip: float,
    highway_weight: float = 0.0,
) -> torch.Tensor:
    """L1 between the student's and the teacher's pre-tanh maps, the teacher's clipped to
    ±``clip`` (beyond it the map is white or black to the grey level), weighted 1 +
    ``road_weight`` where the teacher draws a road (legend.ROAD_MIN in every channel) and +
    ``highway_weight`` where it draws a highway (the legend's highway rules)."""
    t = target.float().clamp(-clip, clip)
    err = (pre.float() - t).abs()
    if road_weight == 0 and highway_weight == 0:
        return err.mean()
    road_min = torch.atanh(to_model_range(torch.tensor(float(ROAD_MIN) - 0.5)))
    weight = 1.0 + road_weight * (target.float() >= road_min).all(dim=1, keepdim=True).float()
    if highway_weight:
        grey = from_model_range(torch.tanh(target.float()))
        weight = weight + highway_weight * highway_mask(grey)
    return (err * weight).sum() / (weight.sum() * err.shape[1])


# ---- feature matching --------------------------------------------------------------------------
def level_blocks(g: nn.Module) -> list[UnetSkipBlock]:
    """The U-Net's inner levels (all but the outermost), outermost first."""
    return [m for m in g.modules() if isinstance(m, UnetSkipBlock) and not m.outermost]


class FeatureMatch(nn.Module):
    """Feature matching between a student and a teacher U-Net: the output of each of the
    student's inner levels (skip input and decoded features, concatenated), through a learned
    1x1 convolution, against the teacher's level of the same scale (L1, mean over levels).
    The adapters train with the student and are not part of the exported model."""

    def __init__(self, student: nn.Module, teacher: nn.Module, levels: int) -> None:
        super().__init__()
        s_blocks, t_blocks = level_blocks(student), level_blocks(teacher)
        n = min(levels, len(s_blocks), len(t_blocks))
        self.s_caps = [Capture(b) for b in s_blocks[:n]]
        self.t_caps = [Capture(b) for b in t_blocks[:n]]
        self.adapters = nn.ModuleList(
            nn.Conv2d(_out_channels(s), _out_channels(t), 1)
            for s, t in zip(s_blocks[:n], t_blocks[:n], strict=True)
        )

    def loss(self) -> torch.Tensor:
        """The matching loss of the last student and teacher forward passes."""
        terms = []
        for adapt, s_cap, t_cap in zip(self.adapters, self.s_caps, self.t_caps, strict=True):
            s, t = s_cap.pop(), t_cap.pop()
            terms.append(F.l1_loss(adapt(s).float(), t.detach().float()))
        return torch.stack(terms).mean()


def _out_channels(block: UnetSkipBlock) -> int:
    """Channels a (non-outermost) level returns: its input and its decoded output."""
    down = block.model[1]
    assert isinstance(down, nn.Conv2d)
    return 2 * down.in_channels


def recipe(c: TrainConfig) -> str:
    """A run's distillation terms as one line, for the model card (the command has the rest)."""
    return (
        f"lambda_teacher={c.lambda_teacher} lambda_logit={c.lambda_logit} "
        f"logit_clip={c.logit_clip} lambda_l1={c.lambda_l1} road_weight={c.road_weight} "
        f"highway_weight={c.highway_weight} "
        f"lambda_iou={c.lambda_iou} lambda_iou_teacher={c.lambda_iou_teacher} "
        f"iou_tau={c.iou_tau} lambda_feat={c.lambda_feat} feat_levels={c.feat_levels} "
        f"lambda_gan={c.lambda_gan} lambda_shift={c.lambda_shift} "
        f"teacher_cache={c.teacher_cache} teacher_scenes={c.teacher_scenes or ''}"
    )


def teacher_provenance(teacher: MapModel, path: str | Path, sha: str, recipe: str) -> dict:
    """What a distilled model's card says about its teacher."""
    card = teacher.card
    return {
        "name": card.name,
        "file": Path(path).name,
        "sha256": sha,
        "arch": f"{card.arch} ngf={card.ngf} num_downs={card.num_downs}",
        "miou": str(card.metrics.get("miou", "")),
        "recipe": recipe,
    }
