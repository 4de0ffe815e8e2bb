"""Refinements of trained generators, each fitted on training pairs only (never on val):

- :func:`average_generators`: the weights of two runs of one architecture, interpolated (a
  "model soup"); the BatchNorm statistics must then be re-estimated
  (:func:`geomap_gan.training.task.recalibrate_batchnorm`), because averaged weights do not have
  averaged activation statistics.
- :func:`fit_output_gain` and :func:`fold_output_gain`: one gain on the last layer's pre-tanh
  output, the same for R, G and B, chosen to maximise the map-class mIoU on training pairs, then
  folded into that layer's weights, so the file keeps the architecture and the renderer needs
  nothing new. Not a gain per channel: fitted so, it buys a little mIoU by tinting the map (the
  background turns from the real maps' beige to mint), which the colour rules reward and users do
  not.
- :func:`fit_decoder_head`: the outermost decoder levels refitted, the rest frozen, against the
  colour rules the map is scored by (a soft map-class IoU) with its colours kept.

Why: a 2-core CPU buys about 1,000 training updates a session, and runs with and without the
adversarial term draw different things well (highways and parks; roads). Averaging two such runs
from one start keeps most of each. The gain exists because pix2pix's tanh reaches the maps'
pure-white street fill (every channel >= ``legend.ROAD_MIN``) only for large pre-activations,
which the L1 term pushes towards slowly: generated streets tend to stop a few grey levels short.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from geomap_gan.legend import CLASS_RULES, CLASSES, class_masks
from geomap_gan.model.nets import (
    UnetGenerator,
    UnetSkipBlock,
    from_model_range,
    to_model_range,
    to_uint8,
)
from geomap_gan.training.augment import Augment
from geomap_gan.training.data import Direction, MapsDataset, centre_crop
from geomap_gan.training.losses import map_l1_loss
from geomap_gan.training.metrics import class_counts, eval_mode

GAINS = (1.0, 1.05, 1.1, 1.15, 1.2, 1.25, 1.3)


def average_generators(base: UnetGenerator, other: UnetGenerator, weight: float) -> UnetGenerator:
    """A copy of ``base`` whose float tensors are ``(1 - weight) * base + weight * other``
    (integer buffers, such as BatchNorm's batch counts, stay base's)."""
    if not 0.0 <= weight <= 1.0:
        raise ValueError(f"weight {weight} is outside 0..1")
    theirs = other.state_dict()
    mixed = {
        k: torch.lerp(v.float(), theirs[k].float(), weight).to(v.dtype)
        if v.is_floating_point()
        else v
        for k, v in base.state_dict().items()
    }
    out = copy.deepcopy(base)
    out.load_state_dict(mixed)  # strict: the two must share the architecture
    return out


def _last_conv(g: UnetGenerator) -> nn.ConvTranspose2d:
    """The outermost transposed convolution, whose output goes through the final tanh."""
    layers = g.model.model
    conv, tanh = layers[-2], layers[-1]
    if not isinstance(conv, nn.ConvTranspose2d) or not isinstance(tanh, nn.Tanh):
        raise TypeError("the generator does not end in ConvTranspose2d -> Tanh")
    return conv


@torch.no_grad()
def pre_tanh(g: UnetGenerator, images: np.ndarray, batch_size: int = 16) -> torch.Tensor:
    """The generator's (eval mode) output before its final tanh on (N, H, W, 3) uint8 images:
    an (N, 3, H, W) float32 tensor, so gains can be tried without running the network again."""
    captured: list[torch.Tensor] = []
    hook = _last_conv(g).register_forward_hook(lambda _m, _i, out: captured.append(out.float()))
    try:
        with eval_mode(g):
            for start in range(0, len(images), batch_size):
                x = to_model_range(torch.from_numpy(images[start : start + batch_size]))
                g(x.permute(0, 3, 1, 2).contiguous(memory_format=torch.channels_last))
    finally:
        hook.remove()
    return torch.cat(captured).contiguous()


def gain_miou(z: torch.Tensor, real: np.ndarray, gain: float, chunk: int = 64) -> float:
    """Map-class mIoU (as ``geomap-gan evaluate`` counts it) of tanh(gain * z) against ``real``
    (N, H, W, 3) uint8 maps, in chunks of images to bound memory."""
    inter, union = dict.fromkeys(CLASSES, 0), dict.fromkeys(CLASSES, 0)
    for start in range(0, len(z), chunk):
        y = torch.tanh(z[start : start + chunk] * gain)
        fake = to_uint8(y).permute(0, 2, 3, 1).numpy()
        for c, (i, u) in class_counts(fake, real[start : start + chunk]).items():
            inter[c] += i
            union[c] += u
    return float(np.mean([inter[c] / union[c] if union[c] else 0.0 for c in CLASSES]))


def fit_output_gain(z: torch.Tensor, real: np.ndarray) -> tuple[float, float]:
    """The gain of :data:`GAINS` with the highest :func:`gain_miou` (the first on a tie), and that
    mIoU."""
    scores = [gain_miou(z, real, g) for g in GAINS]
    best = int(np.argmax(scores))
    return GAINS[best], scores[best]


@torch.no_grad()
def fold_output_gain(g: UnetGenerator, gain: float) -> None:
    """Scale the last layer in place, so that g(x) becomes tanh(gain * pre_tanh(x)) exactly (up
    to float rounding)."""
    conv = _last_conv(g)
    conv.weight.mul_(gain)
    if conv.bias is not None:
        conv.bias.mul_(gain)


@dataclass(frozen=True)
class HeadFit:
    """Settings of :func:`fit_decoder_head` (docs/training-log.md records what they produced)."""

    depth: int = 4  # decoder levels refitted, from the output inwards
    epochs: int = 8
    lr: float = 1e-4
    draws: int = 2  # augmented samples drawn per training pair (the trainer's augmentations)
    batch_size: int = 16
    road_weight: float = 4.0  # of the L1 term, as the trainer's --road-weight
    lambda_iou: float = 0.2  # soft map-class IoU term
    tau: float = 6.0  # sigmoid width of the soft colour rules, grey levels
    lambda_bg: float = 1.0  # mean colour of the background (no class) must match the real maps'
    holdout_every: int = 5  # every 5th training pair is held out to choose the epoch
    seed: int = 0


def decoder_blocks(g: UnetGenerator, depth: int) -> list[UnetSkipBlock]:
    """The outermost ``depth + 1`` U-Net levels, outermost first."""
    if not 1 <= depth < g.num_downs:
        raise ValueError(f"depth {depth} is outside 1..{g.num_downs - 1}")
    blocks = [g.model]
    while len(blocks) <= depth:
        inner = blocks[-1].model[1 if len(blocks) == 1 else 3]
        assert isinstance(inner, UnetSkipBlock)
        blocks.append(inner)
    return blocks


class DecoderHead(nn.Module):
    """The up-convolutions (and norms) of the outermost ``depth`` levels of ``g``, run from the
    features of the rest: the skip inputs of levels 2..depth and the output of level depth + 1.

    Why: with the encoder and the inner levels frozen, their features can be computed once per
    training sample, and a step then costs the head alone (about a tenth of a training step with
    the discriminator on a 2-core CPU). The modules are g's own: fitting the head changes g.
    """

    def __init__(self, g: UnetGenerator, depth: int) -> None:
        super().__init__()
        self.blocks = decoder_blocks(g, depth)
        self.ups = nn.ModuleList(
            [_last_conv(g)] + [nn.Sequential(b.model[5], b.model[6]) for b in self.blocks[1:-1]]
        )

    def forward(self, *features: torch.Tensor) -> torch.Tensor:
        """Pre-tanh output from the features :meth:`capture` returns (any float dtype)."""
        s = features[-1].float()
        for i in range(len(self.ups) - 1, 0, -1):
            s = torch.cat([features[i - 1].float(), self.ups[i](torch.relu(s))], 1)
        return self.ups[0](torch.relu(s))

    @torch.no_grad()
    def capture(self, x: torch.Tensor, dtype: torch.dtype = torch.float16) -> list[torch.Tensor]:
        """Run the whole generator (eval mode) on model-range inputs and return the head's
        features, as fp16 by default to halve the cache."""
        out: dict[int, torch.Tensor] = {}
        last = len(self.blocks) - 1
        hooks = [
            b.register_forward_hook(
                lambda _m, i, o, k=k: out.__setitem__(k, o if k == last else i[0])
            )
            for k, b in enumerate(self.blocks[1:], 1)
        ]
        try:
            with eval_mode(self.blocks[0]):
                self.blocks[0](x.contiguous(memory_format=torch.channels_last))
        finally:
            for h in hooks:
                h.remove()
        return [out[k].to(dtype).contiguous() for k in range(1, last + 1)]


def soft_class_masks(rgb: torch.Tensor, tau: float) -> dict[str, torch.Tensor]:
    """``legend.CLASS_RULES`` with every step a sigmoid ``tau`` grey levels wide, centred half a
    level below the integer threshold: (N, 3, H, W) float grey levels -> (N, H, W) in (0, 1)."""
    masks = {}
    for name, rules in CLASS_RULES.items():
        m = torch.ones_like(rgb[:, 0])
        for (wr, wg, wb), t in rules:
            lin = wr * rgb[:, 0] + wg * rgb[:, 1] + wb * rgb[:, 2]
            m = m * torch.sigmoid((lin - (t - 0.5)) / tau)
        masks[name] = m
    return masks


def head_loss(fake: torch.Tensor, real: torch.Tensor, cfg: HeadFit) -> torch.Tensor:
    """Road-weighted L1 + ``lambda_iou`` x (1 - soft map-class mIoU over the batch) +
    ``lambda_bg`` x the background's mean colour error, for model-range ``fake`` and uint8
    (N, 3, H, W) ``real``.

    Why the background term: the colour rules do not score the background, so an IoU term alone
    brightens it towards the road white (a first head fit without it moved the median background
    from 233/230/223 to 242/239/234 and val acc10 from 0.52 to 0.41).
    """
    y = to_model_range(real)
    loss = map_l1_loss(fake, y, cfg.road_weight)
    hard = {
        k: torch.from_numpy(v) for k, v in class_masks(real.permute(0, 2, 3, 1).numpy()).items()
    }
    if cfg.lambda_iou:
        soft = soft_class_masks(from_model_range(fake), cfg.tau)
        ious = []
        for c in CLASSES:
            t = hard[c].float()
            inter = (soft[c] * t).sum()
            ious.append(inter / (soft[c] + t - soft[c] * t).sum().clamp_min(1.0))
        loss = loss + cfg.lambda_iou * (1 - torch.stack(ious).mean())
    if cfg.lambda_bg:
        bg = ~torch.stack([hard[c] for c in CLASSES]).any(0)
        bg = bg[:, None].float()
        bias = ((fake.float() - y) * bg).sum(dim=(0, 2, 3)) / bg.sum().clamp_min(1.0)
        loss = loss + cfg.lambda_bg * bias.abs().sum()
    return loss


def _cache(head: DecoderHead, ds: MapsDataset, draws: int, batch: int) -> list[torch.Tensor]:
    """The head's features and the uint8 real maps of ``draws`` passes over ``ds``."""
    feats: list[list[torch.Tensor]] = []
    for _ in range(draws):
        for start in range(0, len(ds), batch):
            items = [ds[i] for i in range(start, min(start + batch, len(ds)))]
            a = torch.stack([t[0] for t in items])
            b = torch.stack([t[1] for t in items])
            feats.append([*head.capture(a), to_uint8(b)])
    return [torch.cat(col) for col in zip(*feats, strict=True)]


@torch.no_grad()
def _holdout_miou(head: DecoderHead, cache: list[torch.Tensor], batch: int) -> float:
    z = torch.cat(
        [head(*(c[s : s + batch] for c in cache[:-1])) for s in range(0, len(cache[0]), batch)]
    )
    return gain_miou(z, cache[-1].permute(0, 2, 3, 1).numpy(), 1.0)


def fit_decoder_head(
    g: UnetGenerator,
    pairs: np.ndarray,
    crop: int,
    direction: Direction = "AtoB",
    cfg: HeadFit = HeadFit(),
    log: Callable[[str], None] = print,
) -> tuple[int, float]:
    """Refit the outermost ``cfg.depth`` decoder levels of ``g`` in place on (N, 2, H, W, 3)
    uint8 training pairs, the rest frozen and BatchNorm statistics kept (its affine is fitted),
    without the adversarial term (:func:`head_loss`). Samples are the trainer's augmentations
    (everything on, half of them clean); the epoch kept is the one with the best map-class mIoU
    on every ``holdout_every``-th pair (centre crops, not fitted). Returns (that epoch, its
    mIoU); epoch 0 is the input model. The global RNG state is restored afterwards.

    Why: pix2pix's adversarial term and L1 do not aim at the colour rules the map is scored by,
    and a head fit costs CPU minutes where a training run costs hours. It has no shift term:
    measure ``benchmarks/render_consistency.py`` on the result: a head fit can gain val mIoU and
    lose consistency across stride phases.
    """
    head = DecoderHead(g, cfg.depth)
    idx = np.arange(len(pairs))
    held = idx % cfg.holdout_every == 0
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        hold = _cache(
            head,
            MapsDataset(np.ascontiguousarray(centre_crop(pairs[held], crop)), crop, train=False,
                        direction=direction),
            1, cfg.batch_size,
        )  # fmt: skip
        augment = dataclasses.replace(Augment.full(), clean=0.5)
        fit = _cache(
            head, MapsDataset(pairs[~held], crop, True, direction, augment), cfg.draws,
            cfg.batch_size,
        )  # fmt: skip
        best = (0, _holdout_miou(head, hold, cfg.batch_size), copy.deepcopy(head.state_dict()))
        log(f"head: {len(fit[0])} samples, {len(hold[0])} held out; epoch 0 mIoU {best[1]:.4f}")
        params = list(head.parameters())
        flags = [p.requires_grad for p in params]
        opt = torch.optim.Adam(params, lr=cfg.lr, betas=(0.5, 0.999))
        try:
            for p in params:
                p.requires_grad_(True)
            for epoch in range(1, cfg.epochs + 1):
                order = torch.randperm(len(fit[0]))
                for s in range(0, len(order) - cfg.batch_size + 1, cfg.batch_size):
                    j = order[s : s + cfg.batch_size]
                    loss = head_loss(torch.tanh(head(*(c[j] for c in fit[:-1]))), fit[-1][j], cfg)
                    opt.zero_grad()
                    loss.backward()
                    opt.step()
                score = _holdout_miou(head, hold, cfg.batch_size)
                log(f"head: epoch {epoch} held-out mIoU {score:.4f}")
                if score > best[1]:
                    best = (epoch, score, copy.deepcopy(head.state_dict()))
        finally:
            for p, flag in zip(params, flags, strict=True):
                p.requires_grad_(flag)
    head.load_state_dict(best[2])
    return best[0], best[1]
