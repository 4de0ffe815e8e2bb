"""The pix2pix networks: U-Net-256 generator and 70x70 PatchGAN discriminator.

Faithful to Isola et al. (2017) and the reference implementation: 4x4 convolutions with stride 2,
BatchNorm (no conv bias before it), LeakyReLU(0.2) in the encoder, ReLU in the decoder, dropout 0.5
in the three innermost decoder blocks, Tanh output. Pure torch, no I/O.

Tensors are (B, C, H, W) in [-1, 1].
"""

from __future__ import annotations

import copy
import functools
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

NormName = Literal["batch", "instance"]

# [1, 2, 1] x [1, 2, 1] / 16: the binomial low-pass that anti-aliased CNNs (Zhang 2019) apply
# before every subsampling, so a feature no longer depends on the stride phase it lands on.
_BINOMIAL = torch.tensor([1.0, 2.0, 1.0])


class BlurDownConv(nn.Conv2d):
    """A strided convolution that low-passes its input first (3x3 binomial, reflect padding).

    Why a Conv2d subclass: the weights keep the plain convolution's name and shape, so a
    non-antialiased model's weights load into it (warm start) and BatchNorm folding still works.
    The filter is a non-persistent buffer: model files hold only learned tensors.
    """

    blur: torch.Tensor

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        k = torch.outer(_BINOMIAL, _BINOMIAL) / 16.0
        self.register_buffer("blur", k.expand(self.in_channels, 1, 3, 3).clone(), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.conv2d(
            F.pad(x, (1, 1, 1, 1), mode="reflect"),
            self.blur.to(x.dtype),
            groups=x.shape[1],
        )
        return super().forward(x)


def _norm_layer(norm: NormName) -> type[nn.Module]:
    """BatchNorm as in the paper; InstanceNorm (no running stats) as an option."""
    return nn.BatchNorm2d if norm == "batch" else nn.InstanceNorm2d


def to_model_range(x: torch.Tensor) -> torch.Tensor:
    """uint8 [0, 255] -> float [-1, 1] (the model card's 'x/127.5-1'): the one home of the
    network's input convention, for training, evaluation and rendering alike."""
    return x.float().div_(127.5).sub_(1.0)


def from_model_range(y: torch.Tensor) -> torch.Tensor:
    """float [-1, 1] (clamped) -> float grey levels [0, 255], unrounded (the renderer weights
    and blends them before rounding)."""
    return y.float().clamp(-1.0, 1.0).add(1.0).mul(127.5)


def to_uint8(y: torch.Tensor) -> torch.Tensor:
    """float [-1, 1] -> uint8 [0, 255], rounded."""
    return from_model_range(y).round_().to(torch.uint8)


class UnetSkipBlock(nn.Module):
    """One level of the U-Net: down-conv, the inner submodule, up-conv, and a skip concatenation.

    The block maps ``outer_nc`` channels at size S to ``2 * outer_nc`` at size S (the input is
    concatenated to the decoded output), except the outermost block, which returns the image.
    """

    def __init__(
        self,
        outer_nc: int,
        inner_nc: int,
        input_nc: int | None = None,
        submodule: nn.Module | None = None,
        *,
        outermost: bool = False,
        innermost: bool = False,
        norm: NormName = "batch",
        dropout: bool = False,
        antialias: bool = False,
    ) -> None:
        super().__init__()
        self.outermost = outermost
        norm_layer = _norm_layer(norm)
        use_bias = norm == "instance"  # BatchNorm has its own shift, a conv bias would be redundant
        input_nc = outer_nc if input_nc is None else input_nc
        conv = BlurDownConv if antialias else nn.Conv2d
        downconv = conv(input_nc, inner_nc, 4, stride=2, padding=1, bias=use_bias)
        downrelu = nn.LeakyReLU(0.2)
        uprelu = nn.ReLU(inplace=True)  # its input is always a fresh tensor (cat or conv output)
        layers: list[nn.Module]
        if outermost:
            assert submodule is not None
            upconv = nn.ConvTranspose2d(inner_nc * 2, outer_nc, 4, stride=2, padding=1)
            layers = [downconv, submodule, uprelu, upconv, nn.Tanh()]
        elif innermost:
            upconv = nn.ConvTranspose2d(inner_nc, outer_nc, 4, stride=2, padding=1, bias=use_bias)
            layers = [downrelu, downconv, uprelu, upconv, norm_layer(outer_nc)]
        else:
            assert submodule is not None
            upconv = nn.ConvTranspose2d(
                inner_nc * 2, outer_nc, 4, stride=2, padding=1, bias=use_bias
            )
            layers = [downrelu, downconv, norm_layer(inner_nc), submodule]
            layers += [uprelu, upconv, norm_layer(outer_nc)]
            if dropout:
                layers.append(nn.Dropout(0.5))
        self.model = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.outermost:
            return self.model(x)
        return torch.cat([x, self.model(x)], 1)


class UnetGenerator(nn.Module):
    """pix2pix U-Net: ``num_downs`` stride-2 levels and back, with skip connections.

    ``num_downs=8`` is pix2pix's ``unet_256`` (a 256x256 input goes down to 1x1, so every output
    pixel depends on the whole window). Fewer levels bound the receptive field
    (:func:`generator_receptive_field`), which is what lets the renderer make a map that depends
    on the content alone. ``antialias`` blurs before each subsampling (:class:`BlurDownConv`).
    Works on any input whose sides are multiples of 2**num_downs.
    """

    def __init__(
        self,
        input_nc: int = 3,
        output_nc: int = 3,
        ngf: int = 64,
        num_downs: int = 8,
        norm: NormName = "batch",
        dropout: bool = True,
        antialias: bool = False,
    ) -> None:
        super().__init__()
        if num_downs < 4:
            raise ValueError("num_downs must be at least 4 (the outer levels are fixed)")
        self.num_downs = num_downs
        self.antialias = antialias
        level = functools.partial(UnetSkipBlock, norm=norm, antialias=antialias)
        if num_downs == 4:  # the student's depth: level 4 (4 ngf -> 8 ngf) is the innermost
            block = level(ngf * 4, ngf * 8, innermost=True)
        else:  # pix2pix's layout: 8 ngf -> 8 ngf innermost, the same tensor names as ever
            block = level(ngf * 8, ngf * 8, innermost=True)
            for _ in range(num_downs - 5):
                block = level(ngf * 8, ngf * 8, submodule=block, dropout=dropout)
            block = level(ngf * 4, ngf * 8, submodule=block)
        block = level(ngf * 2, ngf * 4, submodule=block)
        block = level(ngf, ngf * 2, submodule=block)
        self.model = level(output_nc, ngf, input_nc, block, outermost=True)

    @property
    def multiple(self) -> int:
        """Input sides must be multiples of this many pixels."""
        return 2**self.num_downs

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


def receptive_radius(num_downs: int, antialias: bool) -> int:
    """Pixels on each side of an output pixel that it may depend on (the larger side)."""
    return max(generator_receptive_field(num_downs, antialias))


_NONLINEAR = (nn.LeakyReLU, nn.ReLU, nn.Tanh, nn.Dropout, nn.BatchNorm2d)


def _linearise(module: nn.Module) -> None:
    """Replace every activation, dropout and norm layer below ``module`` by the identity."""
    for name, child in module.named_children():
        if isinstance(child, _NONLINEAR):
            setattr(module, name, nn.Identity())
        else:
            _linearise(child)


@functools.cache
def generator_receptive_field(num_downs: int, antialias: bool) -> tuple[int, int]:
    """(before, after): how many input pixels before and after an output pixel it depends on,
    the worst case over every stride phase, exactly, from the architecture.

    Why measured this way: the dependency of a U-Net output on its input is the union over skip
    paths of conv, blur and transposed-conv footprints and varies with the phase; rather than a
    hand formula that could drift from the code, a structural copy (one channel per level,
    positive averaging weights, no nonlinearity, float64) is run backwards from a block of
    2**num_downs outputs (every phase) and the support of the gradient is read off. Positive
    weights cannot cancel, so the support is exactly the structural receptive field. Along x
    only, on a strip two strides tall: the field is the same along both axes, and the strip
    keeps the cost bounded for every depth a card may claim (9 levels, antialiased: 1.1 GB peak
    RSS measured, an eighth of the square input's activations).
    """
    net = UnetGenerator(1, 1, ngf=1, num_downs=num_downs, dropout=False, antialias=antialias)
    net = net.double().eval()
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
                m.weight.fill_(1.0 / m.weight[0].numel())
                if m.bias is not None:
                    m.bias.zero_()
    _linearise(net)
    step = 2**num_downs
    size = step * 16  # room for a receptive field of up to 15 strides around the middle block
    x = torch.zeros(1, 1, 2 * step, size, dtype=torch.float64, requires_grad=True)
    y = net(x)
    y0 = size // 2
    y[0, 0, :, y0 : y0 + step].sum().backward()
    assert x.grad is not None
    cols = torch.nonzero(x.grad[0, 0].abs().sum(0) > 0).flatten()
    first, last = int(cols.min()), int(cols.max())
    if first == 0 or last == size - 1:
        raise ValueError(f"receptive field of num_downs={num_downs} exceeds {size} px")
    return y0 - first, last - (y0 + step - 1)


class PatchDiscriminator(nn.Module):
    """pix2pix ``basic`` discriminator (n_layers=3): one logit per 70x70 patch.

    Input is the condition and the (real or generated) image concatenated on channels; a 256x256
    pair gives 30x30 logits.
    """

    def __init__(
        self, input_nc: int = 6, ndf: int = 64, n_layers: int = 3, norm: NormName = "batch"
    ) -> None:
        super().__init__()
        norm_layer = _norm_layer(norm)
        use_bias = norm == "instance"
        layers: list[nn.Module] = [
            nn.Conv2d(input_nc, ndf, 4, stride=2, padding=1),
            nn.LeakyReLU(0.2, True),
        ]
        mult = 1
        for n in range(1, n_layers + 1):
            prev, mult = mult, min(2**n, 8)
            stride = 2 if n < n_layers else 1
            layers += [
                nn.Conv2d(ndf * prev, ndf * mult, 4, stride=stride, padding=1, bias=use_bias),
                norm_layer(ndf * mult),
                nn.LeakyReLU(0.2, True),
            ]
        layers.append(nn.Conv2d(ndf * mult, 1, 4, stride=1, padding=1))
        self.model = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


def init_weights(net: nn.Module, gain: float = 0.02) -> nn.Module:
    """pix2pix 'normal' init: conv weights N(0, gain), norm weights N(1, gain), biases 0."""

    def init(m: nn.Module) -> None:
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
            nn.init.normal_(m.weight, 0.0, gain)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.normal_(m.weight, 1.0, gain)
            nn.init.zeros_(m.bias)

    net.apply(init)
    return net


def fuse_batchnorm(net: nn.Module) -> nn.Module:
    """An inference copy of ``net`` (eval mode) with each BatchNorm folded into the convolution
    just before it; ``net`` itself is not changed.

    Why: in eval mode BatchNorm is a per-channel affine map, so folding it into the conv weights
    gives the same output up to float rounding and saves one pass over every activation (about
    5-10% of the U-Net's CPU time in eager mode).
    """
    fused = copy.deepcopy(net).eval()
    _fuse_children(fused)
    return fused


def _fuse_children(module: nn.Module) -> None:
    for name, child in module.named_children():
        if isinstance(child, nn.Sequential):
            setattr(module, name, nn.Sequential(*_fused_layers(child)))
        else:
            _fuse_children(child)


def _fused_layers(seq: nn.Sequential) -> list[nn.Module]:
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    out: list[nn.Module] = []
    for layer in seq:
        prev = out[-1] if out else None
        if isinstance(layer, nn.BatchNorm2d) and isinstance(prev, (nn.Conv2d, nn.ConvTranspose2d)):
            transpose = isinstance(prev, nn.ConvTranspose2d)
            out[-1] = fuse_conv_bn_eval(prev, layer, transpose=transpose)
        else:
            _fuse_children(layer)
            out.append(layer)
    return out


def receptive_field(net: PatchDiscriminator) -> int:
    """Receptive field in pixels of one output logit (70 for n_layers=3), from the conv stack."""
    rf, jump = 1, 1
    convs = [m for m in net.modules() if isinstance(m, nn.Conv2d)]
    for conv in convs:
        k, s = conv.kernel_size[0], conv.stride[0]
        rf += (k - 1) * jump
        jump *= s
    return rf


def count_parameters(net: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in net.parameters() if p.requires_grad)
