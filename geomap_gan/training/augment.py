"""Training augmentations and the fixed sensor shifts of the robustness benchmark.

Why: the maps dataset is one city, one season, one sensor. A model trained on it alone learns
New York's colours as a shortcut (tinted lakes become park, the sea becomes park, haze drops miou
from 0.49 to 0.09). The geometric augmentations (8 rotations/flips, scale jitter) are applied to
the aerial and the map alike; the photometric ones (brightness, contrast, gamma, saturation, hue,
per-channel gain, haze, blur, noise, JPEG) to the aerial only, because the map style does not
change with the sensor.

Images here are float tensors (3, H, W) in [0, 1]; all randomness comes from a torch Generator or
the global torch RNG, so a seeded run is reproducible. Pure torch (and Pillow for JPEG), no I/O.
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

# ITU-R BT.601 luma weights: the grey that saturation and haze blend towards.
_LUMA = torch.tensor([0.299, 0.587, 0.114])


@dataclass(frozen=True)
class Augment:
    """Which augmentations a training run applies; all off is pix2pix's crop + flip only."""

    dihedral: bool = False  # the 8 rotations/flips instead of the horizontal flip alone
    scale: float = 0.0  # scale jitter: crop side drawn in [1/(1+s), 1+s] x the crop size
    photometric: bool = False  # brightness, contrast, gamma, saturation, hue, gain, haze
    blur: bool = False  # Gaussian blur, sigma up to 1.5 px (softer optics, resampling)
    noise: bool = False  # Gaussian noise, sigma up to 0.03
    jpeg: bool = False  # JPEG re-encoding at quality 30-90
    # Share of samples that skip the scale jitter and every pixel change (the dihedral stays):
    # with all of them on, hardly 1 sample in 200 shows the model a crisp, unaltered pair.
    clean: float = 0.0

    @classmethod
    def full(cls) -> Augment:
        """Everything on: what the shipped default model trains with."""
        return cls(True, 0.2, True, True, True, True)

    def plain(self) -> Augment:
        """These augmentations less the scale jitter and the pixel changes: for a clean sample."""
        return Augment(dihedral=self.dihedral)

    def draw(self) -> Augment:
        """The augmentations for one sample: plain() with the ``clean`` chance, else these.
        Without a clean share no random number is drawn, so earlier seeded runs replay exactly."""
        return self.plain() if self.clean and _chance(self.clean) else self

    @property
    def any_pixel(self) -> bool:
        return self.photometric or self.blur or self.noise or self.jpeg


def _u(lo: float, hi: float) -> float:
    return float(torch.empty(()).uniform_(lo, hi))


def _chance(p: float) -> bool:
    return bool(torch.rand(()) < p)


def grey(x: torch.Tensor) -> torch.Tensor:
    """Luma (1, H, W) of an RGB image (3, H, W)."""
    return (x * _LUMA.to(x.dtype).view(3, 1, 1)).sum(0, keepdim=True)


def brightness(x: torch.Tensor, delta: float) -> torch.Tensor:
    return x + delta


def contrast(x: torch.Tensor, factor: float) -> torch.Tensor:
    mean = grey(x).mean()
    return (x - mean) * factor + mean


def gamma(x: torch.Tensor, g: float) -> torch.Tensor:
    return x.clamp(0, 1) ** g


def saturation(x: torch.Tensor, factor: float) -> torch.Tensor:
    g = grey(x)
    return (x - g) * factor + g


def hue(x: torch.Tensor, turns: float) -> torch.Tensor:
    """Rotate the chroma around the grey axis by ``turns`` of a full circle (YIQ rotation)."""
    to_yiq = torch.tensor(
        [[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]], dtype=x.dtype
    )
    c, s = math.cos(2 * math.pi * turns), math.sin(2 * math.pi * turns)
    rot = torch.tensor([[1, 0, 0], [0, c, -s], [0, s, c]], dtype=x.dtype)
    m = torch.linalg.inv(to_yiq) @ rot @ to_yiq
    return torch.einsum("ij,jhw->ihw", m, x)


def gain(x: torch.Tensor, gains: tuple[float, float, float]) -> torch.Tensor:
    """Per-channel gain: a colour cast (white balance, sensor response)."""
    return x * torch.tensor(gains, dtype=x.dtype).view(3, 1, 1)


def haze(x: torch.Tensor, amount: float, airlight: float = 0.85) -> torch.Tensor:
    """Atmospheric haze: a blend towards a bright, slightly blue airlight."""
    light = torch.tensor([airlight * 0.97, airlight, airlight * 1.03], dtype=x.dtype)
    return x * (1 - amount) + light.view(3, 1, 1) * amount


def gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur with reflect padding, radius 3 sigma."""
    radius = max(1, math.ceil(3 * sigma))
    t = torch.arange(-radius, radius + 1, dtype=x.dtype)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    k = k / k.sum()
    y = F.pad(x[None], (radius, radius, radius, radius), mode="reflect")
    y = F.conv2d(y, k.view(1, 1, 1, -1).expand(3, 1, 1, -1), groups=3)
    y = F.conv2d(y, k.view(1, 1, -1, 1).expand(3, 1, -1, 1), groups=3)
    return y[0]


def noise(x: torch.Tensor, sigma: float, generator: torch.Generator | None = None) -> torch.Tensor:
    return x + sigma * torch.randn(x.shape, generator=generator, dtype=x.dtype)


def jpeg(x: torch.Tensor, quality: int) -> torch.Tensor:
    """Encode and decode as JPEG at ``quality`` (block artefacts, chroma subsampling)."""
    from PIL import Image

    arr = (x.clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, "JPEG", quality=int(quality))
    buf.seek(0)
    with Image.open(buf) as im:
        out = torch.frombuffer(bytearray(im.convert("RGB").tobytes()), dtype=torch.uint8)
    return out.view(x.shape[1], x.shape[2], 3).permute(2, 0, 1).to(x.dtype) / 255


def random_photometric(x: torch.Tensor, aug: Augment) -> torch.Tensor:
    """The aerial-only augmentations of ``aug``, each with its own chance, in sensor order."""
    if aug.photometric:
        if _chance(0.5):
            x = brightness(x, _u(-0.12, 0.12))
        if _chance(0.5):
            x = contrast(x, _u(0.6, 1.4))
        if _chance(0.4):
            x = gamma(x, math.exp(_u(-0.4, 0.4)))
        if _chance(0.5):
            x = saturation(x, _u(0.3, 1.5))
        if _chance(0.3):
            x = hue(x, _u(-0.06, 0.06))
        if _chance(0.5):
            x = gain(x, (_u(0.8, 1.2), _u(0.8, 1.2), _u(0.8, 1.2)))
        if _chance(0.3):
            x = haze(x, _u(0.05, 0.5), _u(0.7, 0.95))
        x = x.clamp(0, 1)
    if aug.blur and _chance(0.3):
        x = gaussian_blur(x, _u(0.3, 1.5))
    if aug.noise and _chance(0.3):
        x = noise(x, _u(0.005, 0.03)).clamp(0, 1)
    if aug.jpeg and _chance(0.3):
        x = jpeg(x, int(_u(30, 90)))
    return x.clamp(0, 1)


def random_dihedral(x: torch.Tensor) -> torch.Tensor:
    """One of the 8 rotations/flips of a (C, H, W) tensor (square), uniformly."""
    k = int(torch.randint(0, 4, ()))
    x = torch.rot90(x, k, (-2, -1))
    return x.flip(-1) if _chance(0.5) else x


def random_crop(x: torch.Tensor, crop: int, scale: float) -> torch.Tensor:
    """A random square crop of side ``crop`` (scale 0), or of a side drawn log-uniformly in
    [crop/(1+scale), crop*(1+scale)] (capped by the image) and resized to ``crop``."""
    size = x.shape[-1]
    side = crop
    if scale > 0:
        side = round(crop * math.exp(_u(-math.log1p(scale), math.log1p(scale))))
        side = max(8, min(side, size))
    top, left = torch.randint(0, size - side + 1, (2,)).tolist()
    x = x[:, top : top + side, left : left + side]
    if side != crop:
        x = F.interpolate(
            x[None], size=(crop, crop), mode="bilinear", antialias=True, align_corners=False
        )[0]
    return x


@dataclass(frozen=True)
class Shift:
    """One fixed, documented scene-wide shift of the robustness benchmark."""

    name: str
    apply: Callable[[torch.Tensor], torch.Tensor]


def _seeded_noise(x: torch.Tensor) -> torch.Tensor:
    return noise(x, 0.02, torch.Generator().manual_seed(0))


# Fixed parameters, chosen to look like real sensors and seasons rather than like the training
# ranges' extremes; each applied to the whole scene (the same for every pixel).
SHIFTS: tuple[Shift, ...] = (
    Shift("haze", lambda x: haze(x, 0.35, 0.85)),
    Shift("green_cast", lambda x: gain(x, (0.9, 1.12, 0.92))),
    Shift("warm_cast", lambda x: gain(x, (1.12, 1.0, 0.85))),
    Shift("dark", lambda x: gamma(brightness(x, -0.08), 1.3)),
    Shift("bright", lambda x: gamma(brightness(x, 0.08), 0.75)),
    Shift("low_contrast", lambda x: contrast(x, 0.65)),
    Shift("desaturated", lambda x: saturation(x, 0.45)),
    Shift("soft_optics", lambda x: gaussian_blur(x, 1.0)),
    Shift("jpeg_q35", lambda x: jpeg(x, 35)),
    Shift("noise", _seeded_noise),
)
