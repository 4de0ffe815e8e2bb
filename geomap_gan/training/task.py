"""The pix2pix task: networks, optimisers, one G/D update, warm start and BatchNorm
recalibration of the generator."""

from __future__ import annotations

import copy
import logging
from pathlib import Path

import numpy as np
import torch
from torch import nn

from geomap_gan.device import autocast
from geomap_gan.errors import InputError
from geomap_gan.model.modelfile import MapModel
from geomap_gan.model.nets import (
    PatchDiscriminator,
    UnetGenerator,
    from_model_range,
    init_weights,
    to_model_range,
)
from geomap_gan.training.config import TrainConfig
from geomap_gan.training.data import centre_crop
from geomap_gan.training.losses import gan_loss, map_l1_loss, shift_consistency_loss
from geomap_gan.training.metrics import pair_sides

log = logging.getLogger(__name__)


@torch.no_grad()
def recalibrate_batchnorm(
    g: nn.Module, pairs: np.ndarray, cfg: TrainConfig, device: torch.device
) -> None:
    """Replace BatchNorm running statistics by their plain average over batches of centre-cropped
    training inputs, at the training batch size, with dropout off.

    Why: rendering runs G in eval mode (tile outputs must not depend on batch neighbours), but
    the exponential running averages of a GAN generator describe its batch statistics badly. On
    maps val after 2 epochs (ngf=32, batch 4) this raised miou from 0.09 to 0.28. Deterministic:
    fixed crops, no random numbers drawn, so resuming stays exact.
    """
    bns = [m for m in g.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not bns:
        return
    was_training, momenta = g.training, [m.momentum for m in bns]
    g.eval()  # dropout off
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # cumulative average over all batches seen
        m.train()
    src, _ = pair_sides(cfg.direction)
    crops = torch.from_numpy(centre_crop(pairs, cfg.crop_size)[:, src]).permute(0, 3, 1, 2)
    n = max(cfg.batch_size, 2)  # a batch of 1 at 1x1 resolution has no variance
    for start in range(0, len(crops) - n + 1, n):
        x = to_model_range(crops[start : start + n]).to(device)
        with autocast(device, cfg.amp):
            g(x.contiguous(memory_format=torch.channels_last))
    for m, momentum in zip(bns, momenta, strict=True):
        m.momentum = momentum
    g.train(was_training)


def warm_start(g: UnetGenerator, path: str | Path) -> int:
    """Copy into ``g`` every tensor of the model file at ``path`` whose name and shape match, and
    the innermost level's up-convolution and norm from the file's innermost level.

    Why: a shallower U-Net shares all its outer levels with a deeper one (same names, same
    shapes), so a model trained for hours keeps what it knows about roads and parks; only the
    levels that were cut need learning again. Returns the number of tensors copied.
    """
    from geomap_gan.model.modelfile import load_model

    src = load_model(path).generator.state_dict()
    dst = g.state_dict()
    inner_src, inner_dst = _innermost_prefix(src), _innermost_prefix(dst)
    copied = 0
    for key, value in dst.items():
        candidate = src.get(key)
        if key.startswith(inner_dst) and key[len(inner_dst) :].split(".")[0] in {"3", "4"}:
            candidate = src.get(inner_src + key[len(inner_dst) :])
        if candidate is not None and candidate.shape == value.shape:
            value.copy_(candidate.to(value.dtype))
            copied += 1
    log.info("warm start from %s: %d of %d tensors copied", path, copied, len(dst))
    return copied


def _innermost_prefix(state: dict[str, torch.Tensor]) -> str:
    """The key prefix of a U-Net state dict's innermost block (the deepest 'model.' nesting)."""
    deepest = max(state, key=lambda k: k.count("model."))
    return deepest[: deepest.rindex("model.") + len("model.")]


def unwrap(net: nn.Module) -> nn.Module:
    return net.module if isinstance(net, nn.parallel.DistributedDataParallel) else net


class Pix2PixTask:
    """The pix2pix task: the generator and the PatchGAN discriminator, their optimisers, the
    weight average, and one update (D on real against detached fake, then G). The run loop
    (:class:`~geomap_gan.training.loop.Trainer`) owns data, schedule, checkpoints and logs."""

    def __init__(self, cfg: TrainConfig, device: torch.device, world: int) -> None:
        self.cfg, self.device, self.world = cfg, device, world
        generator = UnetGenerator(
            ngf=cfg.ngf, num_downs=cfg.num_downs, norm=cfg.norm, antialias=cfg.antialias
        )
        init_weights(generator)
        if cfg.init_from:
            warm_start(generator, cfg.init_from)
        self.G: nn.Module = generator
        self.D = init_weights(PatchDiscriminator(ndf=cfg.ndf, norm=cfg.norm))
        for net in (self.G, self.D):
            net.to(self.device, memory_format=torch.channels_last)  # type: ignore[call-overload]
        # The weight average that validation, samples and export use when --ema-decay is set.
        self.G_ema: nn.Module | None = None
        if cfg.ema_decay > 0:
            self.G_ema = copy.deepcopy(generator).eval().requires_grad_(False)
        self._init_teacher(generator)  # after the copy: its hooks are the trained G's alone
        if self.world > 1:
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.G = nn.parallel.DistributedDataParallel(self.G, device_ids=ids)
            # D runs twice before its backward (fake, real): broadcasting its BatchNorm buffers
            # at the second call bumps tensors the first one saved (autograd error on torch
            # 2.11). Its running statistics are never used (D is never in eval mode).
            self.D = nn.parallel.DistributedDataParallel(
                self.D, device_ids=ids, broadcast_buffers=False
            )
        betas = (cfg.beta1, cfg.beta2)
        g_params = list(self.G.parameters())
        if self.feature_match is not None:  # the adapters train with G
            g_params += list(self.feature_match.parameters())
        self.opt_G = torch.optim.Adam(g_params, lr=cfg.lr, betas=betas)
        self.opt_D = torch.optim.Adam(self.D.parameters(), lr=cfg.lr, betas=betas)
        self.step = 0  # optimiser updates completed

    def _init_teacher(self, student: UnetGenerator) -> None:
        """With ``--teacher``: the frozen teacher (eval mode), its file's digest, the hook on
        the student's pre-tanh layer and, with ``--lambda-feat``, the feature adapters."""
        from geomap_gan.training import distill

        cfg = self.cfg
        self.teacher: MapModel | None = None
        self.teacher_sha = ""
        self.feature_match: distill.FeatureMatch | None = None
        self._pre_tanh: distill.Capture | None = None
        if cfg.lambda_logit > 0:
            self._pre_tanh = distill.Capture(distill.last_conv(student))
        if not cfg.teacher:
            return
        from geomap_gan.model.modelfile import load_model

        self.teacher = load_model(cfg.teacher, self.device)
        if self.teacher.card.direction != cfg.direction:
            raise InputError(
                f"the teacher {cfg.teacher} maps {self.teacher.card.direction}, this run "
                f"{cfg.direction}; pass --direction {self.teacher.card.direction}"
            )
        tg = self.teacher.generator.eval().requires_grad_(False)
        tg.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
        self.teacher_sha = distill.file_sha256(cfg.teacher)
        self._teacher_pre_tanh = distill.Capture(distill.last_conv(tg))
        if cfg.lambda_feat > 0:
            self.feature_match = distill.FeatureMatch(student, tg, cfg.feat_levels)
            self.feature_match.to(self.device)

    def distill_recipe(self) -> str:
        """The distillation terms of this run, for the model card."""
        from geomap_gan.training.distill import recipe

        return recipe(self.cfg)

    @torch.no_grad()
    def _run_teacher(self, a: torch.Tensor) -> torch.Tensor:
        """The teacher's pre-tanh map of model-range inputs ``a`` (its features captured)."""
        assert self.teacher is not None
        with autocast(self.device, self.cfg.amp):
            self.teacher.generator(a)
        return self._teacher_pre_tanh.pop().float()

    @property
    def shipped_g(self) -> nn.Module:
        """The generator that validation, samples and export see: the weight average with
        ``--ema-decay``, else the trained weights."""
        return self.G_ema if self.G_ema is not None else unwrap(self.G)

    @torch.no_grad()
    def _update_ema(self) -> None:
        """Move the average a step towards G's new weights.

        Why: a GAN generator's weights wander with the discriminator from update to update; their
        running average is a smoother, usually better generator (Yazici et al. 2019), at the cost
        of one lerp per tensor. Buffers (BatchNorm statistics) are copied, then recalibrated for
        the average before it is validated or exported."""
        assert self.G_ema is not None
        g, decay = unwrap(self.G), self.cfg.ema_decay
        for avg, p in zip(self.G_ema.parameters(), g.parameters(), strict=True):
            avg.lerp_(p.detach(), 1.0 - decay)
        for buf, b in zip(self.G_ema.buffers(), g.buffers(), strict=True):
            buf.copy_(b)

    # ---- one update --------------------------------------------------------------------------
    def train_step(
        self, a: torch.Tensor, b: torch.Tensor, t: torch.Tensor | None = None
    ) -> dict[str, float]:
        """One pix2pix update: D on (real, detached fake), then G on
        lambda_gan * GAN + lambda_l1 * L1 (+ lambda_shift * shift).

        During the first ``d_warmup`` updates G is not updated (its losses are still computed
        and logged): a warm-started G otherwise meets a discriminator from scratch, whose first
        gradients are uninformed. With ``lambda_gan`` 0 the discriminator is neither run nor
        updated (its losses log as nan; the progress bar leaves them out): an update costs a quarter on a CPU, but the
        classes a discriminator teaches (highways, parks) come out weaker."""
        cfg = self.cfg
        a = a.to(self.device, non_blocking=True).contiguous(memory_format=torch.channels_last)
        b = b.to(self.device, non_blocking=True).contiguous(memory_format=torch.channels_last)
        train_g, adversarial = self.step >= cfg.d_warmup, cfg.lambda_gan > 0
        if self.teacher is not None and (t is None or self.feature_match is not None):
            live = self._run_teacher(a)  # no cached map, or features to match
            t = live if t is None else t
        if t is not None:
            t = t.to(self.device, non_blocking=True)
        with autocast(self.device, cfg.amp), torch.set_grad_enabled(train_g):
            fake = self.G(a)
            terms = self._extra_terms(fake, b, t)
        nan = float("nan")
        d_real, d_fake = self._d_step(a, b, fake.detach()) if adversarial else (nan, nan)

        d_plain = unwrap(self.D)  # G's step must not touch D's DDP reducer or D's grads
        d_plain.requires_grad_(False)
        with autocast(self.device, cfg.amp), torch.set_grad_enabled(train_g):
            loss_g_gan = torch.zeros((), device=self.device)
            if adversarial:
                pred = d_plain(torch.cat([a, fake], 1))
                loss_g_gan = gan_loss(pred, True, cfg.gan_mode, False)
            loss_g_l1 = map_l1_loss(fake, b, cfg.road_weight, cfg.highway_weight)
            loss_g = cfg.lambda_gan * loss_g_gan + cfg.lambda_l1 * loss_g_l1
            for weight, term in terms.values():
                loss_g = loss_g + weight * term
            loss_shift = torch.zeros((), device=self.device)
            if cfg.lambda_shift > 0 and train_g:  # plain G: a second DDP forward breaks DDP
                stride = 2**cfg.num_downs
                loss_shift = shift_consistency_loss(unwrap(self.G), a, fake, stride, stride)
                loss_g = loss_g + cfg.lambda_shift * loss_shift
        if train_g:
            self.opt_G.zero_grad(set_to_none=True)
            loss_g.backward()
            self.opt_G.step()
            if self.G_ema is not None:
                self._update_ema()
        d_plain.requires_grad_(True)
        self.step += 1
        return {
            "G_GAN": loss_g_gan.item() if adversarial else nan,
            "G_L1": loss_g_l1.item(),
            "G_shift": loss_shift.item(),
            "D_real": d_real,
            "D_fake": d_fake,
            **{k: term.item() for k, (_, term) in terms.items()},
        }

    def _extra_terms(
        self, fake: torch.Tensor, b: torch.Tensor, t: torch.Tensor | None
    ) -> dict[str, tuple[float, torch.Tensor]]:
        """The terms beside pix2pix's, as name -> (weight, value): the soft class IoU against
        the real map and, with a teacher's pre-tanh map ``t``, the distillation terms
        (:mod:`~geomap_gan.training.distill`). Called right after G's forward pass: the
        pre-tanh and feature hooks hold its tensors."""
        from geomap_gan.training import distill

        cfg = self.cfg
        out: dict[str, tuple[float, torch.Tensor]] = {}
        pre = self._pre_tanh.pop() if self._pre_tanh is not None else None
        if cfg.lambda_iou > 0:
            real = distill.hard_class_masks(from_model_range(b))
            out["G_iou"] = (cfg.lambda_iou, distill.soft_iou_loss(fake, real, cfg.iou_tau))
        if t is None:
            return out
        t_map = torch.tanh(t)
        if cfg.lambda_teacher > 0:
            out["G_T"] = (
                cfg.lambda_teacher,
                map_l1_loss(fake, t_map, cfg.road_weight, cfg.highway_weight),
            )
        if pre is not None and cfg.lambda_logit > 0:
            term = distill.logit_l1_loss(
                pre, t, cfg.road_weight, cfg.logit_clip, cfg.highway_weight
            )
            out["G_logit"] = (cfg.lambda_logit, term)
        if cfg.lambda_iou_teacher > 0:
            masks = distill.hard_class_masks(from_model_range(t_map))
            term = distill.soft_iou_loss(fake, masks, cfg.iou_tau)
            out["G_iou_T"] = (cfg.lambda_iou_teacher, term)
        if self.feature_match is not None:
            out["G_feat"] = (cfg.lambda_feat, self.feature_match.loss())
        return out

    def _d_step(self, a: torch.Tensor, b: torch.Tensor, fake: torch.Tensor) -> tuple[float, float]:
        """One discriminator update on (aerial, real map) against (aerial, ``fake`` detached);
        returns its real and fake losses."""
        cfg = self.cfg
        with autocast(self.device, cfg.amp):
            loss_fake = gan_loss(self.D(torch.cat([a, fake], 1)), False, cfg.gan_mode, True)
            loss_real = gan_loss(self.D(torch.cat([a, b], 1)), True, cfg.gan_mode, True)
            loss_d = 0.5 * (loss_fake + loss_real)
        self.opt_D.zero_grad(set_to_none=True)
        loss_d.backward()
        self.opt_D.step()
        return loss_real.item(), loss_fake.item()
