"""The pix2pix networks match the paper's shapes, sizes and receptive field."""

from __future__ import annotations

import pytest
import torch

from geomap_gan.model.nets import (
    PatchDiscriminator,
    UnetGenerator,
    count_parameters,
    fuse_batchnorm,
    init_weights,
    receptive_field,
)


def test_parameter_counts_match_pix2pix() -> None:
    assert count_parameters(UnetGenerator(ngf=64)) == pytest.approx(54.4e6, rel=0.005)
    assert count_parameters(UnetGenerator(ngf=32)) == pytest.approx(13.6e6, rel=0.005)
    assert count_parameters(PatchDiscriminator()) == pytest.approx(2.77e6, rel=0.005)


def test_generator_reaches_1x1_bottleneck_and_keeps_shape() -> None:
    g = UnetGenerator(ngf=4).eval()
    seen: list[tuple[int, ...]] = []
    convs = [m for m in g.modules() if isinstance(m, torch.nn.Conv2d)]
    handle = convs[-1].register_forward_hook(lambda m, i, o: seen.append(tuple(o.shape)))
    with torch.no_grad():
        y = g(torch.zeros(1, 3, 256, 256))
    handle.remove()
    assert len(convs) == 8
    assert seen == [(1, 32, 1, 1)]  # innermost conv output: ngf*8 channels at 1x1
    assert y.shape == (1, 3, 256, 256)


@pytest.mark.parametrize("h,w", [(256, 256), (512, 256), (256, 768)])
def test_generator_accepts_multiples_of_256(h: int, w: int) -> None:
    g = UnetGenerator(ngf=4).eval()
    with torch.no_grad():
        y = g(torch.rand(2, 3, h, w) * 2 - 1)
    assert y.shape == (2, 3, h, w)
    assert y.min() >= -1 and y.max() <= 1  # Tanh output


def test_dropout_only_in_three_innermost_decoder_blocks() -> None:
    g = UnetGenerator(ngf=4)
    assert sum(isinstance(m, torch.nn.Dropout) for m in g.modules()) == 3
    assert all(m.p == 0.5 for m in g.modules() if isinstance(m, torch.nn.Dropout))


def test_discriminator_70x70_patches_30x30_logits() -> None:
    d = PatchDiscriminator()
    assert receptive_field(d) == 70
    assert d(torch.zeros(2, 6, 256, 256)).shape == (2, 1, 30, 30)


def test_init_weights_normal_002() -> None:
    torch.manual_seed(0)
    g = init_weights(UnetGenerator(ngf=16))
    w = torch.cat([m.weight.flatten() for m in g.modules() if isinstance(m, torch.nn.Conv2d)])
    assert abs(w.mean().item()) < 1e-3
    assert w.std().item() == pytest.approx(0.02, rel=0.05)
    bn = [m for m in g.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert all(abs(m.weight.mean().item() - 1) < 0.02 for m in bn)


def test_batchnorm_layers_have_no_conv_bias_before_them() -> None:
    g = UnetGenerator(ngf=4)
    inner = [m for m in g.modules() if isinstance(m, torch.nn.Conv2d)][1:]
    assert all(m.bias is None for m in inner)


def test_fuse_batchnorm_keeps_eval_output_and_leaves_the_original() -> None:
    torch.manual_seed(0)
    net = init_weights(UnetGenerator(ngf=8, num_downs=6))
    net.train()
    with torch.no_grad():  # give the running statistics non-trivial values
        for _ in range(3):
            net(torch.randn(4, 3, 64, 64))
    net.eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        expected = net(x)
        fused = fuse_batchnorm(net)
        got, again = fused(x), net(x)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in fused.modules())
    assert sum(isinstance(m, torch.nn.BatchNorm2d) for m in net.modules()) == 9
    assert torch.allclose(got, expected, atol=1e-5)
    assert torch.equal(again, expected)  # the original is untouched
