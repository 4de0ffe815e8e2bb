"""The pix2pix training losses: the adversarial term, the road-weighted L1 to the real map, and
the shift-consistency term that keeps the map independent of the network's stride phase."""

from __future__ import annotations

import logging

import torch
import torch.nn.functional as F
from torch import nn

from geomap_gan.legend import CLASS_RULES, ROAD_MIN
from geomap_gan.model.nets import from_model_range, to_model_range
from geomap_gan.training.config import GanMode

log = logging.getLogger(__name__)


def gan_loss(
    pred: torch.Tensor, real: bool, mode: GanMode, for_discriminator: bool
) -> torch.Tensor:
    """The adversarial term for logits ``pred`` against target real/fake."""
    pred = pred.float()
    if mode == "vanilla":
        target = torch.ones_like(pred) if real else torch.zeros_like(pred)
        return F.binary_cross_entropy_with_logits(pred, target)
    if mode == "lsgan":
        return F.mse_loss(pred, torch.ones_like(pred) if real else torch.zeros_like(pred))
    if for_discriminator:
        return F.relu(1 - pred).mean() if real else F.relu(1 + pred).mean()
    return -pred.mean()


def map_l1_loss(
    fake: torch.Tensor, real: torch.Tensor, road_weight: float, highway_weight: float = 0.0
) -> torch.Tensor:
    """L1 between generated and real maps (model range), weighted 1 + ``road_weight`` on the real
    map's road pixels (legend.ROAD_MIN in every channel) and + ``highway_weight`` on its highway
    pixels (the legend's highway rules), normalised by the weights' sum.

    Why: the road class needs a pixel white in every channel; plain L1 lets a generator paint
    streets a few grey levels short of that (scored as missed), and roads are a small share of
    the pixels, so their error barely moves the mean. Highways are rarer still (half a percent
    of the pixels) and their orange lies far from every other colour, so a generator trained
    without a discriminator paints them background grey unless their pixels weigh more.
    """
    err = (fake.float() - real.float()).abs()
    if road_weight == 0 and highway_weight == 0:
        return err.mean()
    road = (real.float() >= to_model_range(torch.tensor(float(ROAD_MIN)))).all(dim=1, keepdim=True)
    weight = 1.0 + road_weight * road.float()
    if highway_weight:
        weight = weight + highway_weight * highway_mask(from_model_range(real))
    return (err * weight).sum() / (weight.sum() * err.shape[1])


def highway_mask(grey: torch.Tensor) -> torch.Tensor:
    """(N, 1, H, W) float 0/1: the pixels of (N, 3, H, W) float grey levels (rounded, as a uint8
    map is scored) that the legend's highway rules claim."""
    rgb = grey.detach().float().round()
    mask = torch.ones_like(rgb[:, :1], dtype=torch.bool)
    for (wr, wg, wb), t in CLASS_RULES["highway"]:
        mask &= wr * rgb[:, :1] + wg * rgb[:, 1:2] + wb * rgb[:, 2:3] >= t
    return mask.float()


def shift_consistency_loss(
    g: nn.Module, a: torch.Tensor, fake: torch.Tensor, stride: int, margin: int
) -> torch.Tensor:
    """L1 between G's map of the aerial moved by a random sub-stride offset and G's map moved alike.

    Why: a U-Net that subsamples by ``stride`` is exactly shift-equivariant only for moves that are
    multiples of it, so without this term the map of a scene depends on where its pixels fall on
    the render lattice (render_consistency's "moved by k"). Both sides keep their gradient (the
    property is symmetric); ``margin`` px at the crop's edges, where padding differs, are left out.
    """
    size = a.shape[-1] - stride  # still a multiple of the stride when the crop is
    dy, dx = (int(v) for v in torch.randint(1, stride, (2,)))
    moved = g(a[..., dy : dy + size, dx : dx + size])
    ref = fake[..., dy : dy + size, dx : dx + size]
    inner = (..., slice(margin, size - margin), slice(margin, size - margin))
    return F.l1_loss(moved[inner].float(), ref[inner].float())
