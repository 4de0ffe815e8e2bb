"""Would int8 make the generator faster on a CPU without bf16? Each convolution of the bundled
model, at the shapes one render window gives it, timed in fp32 (oneDNN, channels_last, as the
engine's eager path runs it) and as PyTorch's quantized int8 module (the "x86" engine: fbgemm /
oneDNN int8), one after the other in this process. Printed per layer and summed: milliseconds and
the fp32 / int8 ratio. Only speed is measured here, not what int8 would do to the map.

    python benchmarks/int8_layers.py [--window 1024] [--threads 1] [--reps 3]
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

import torch
import torch.ao.nn.quantized as nnq
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine import describe  # noqa: E402

from geomap_gan.model.modelfile import load_model  # noqa: E402


def layer_inputs(net: nn.Module, window: int) -> list[tuple[nn.Module, torch.Size]]:
    """Every Conv2d / ConvTranspose2d of ``net`` with the input shape one window gives it."""
    seen: list[tuple[nn.Module, torch.Size]] = []
    hooks = [
        m.register_forward_hook(lambda mod, inp, out: seen.append((mod, inp[0].shape)))
        for m in net.modules()
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d))
    ]
    with torch.inference_mode():
        net(torch.zeros(1, 3, window, window))
    for h in hooks:
        h.remove()
    return seen


def fp32_plain(m: nn.Module) -> nn.Module:
    """The convolution alone, in fp32 and channels_last (an antialiased layer's blur is not a
    module and is left out of both timings)."""
    kind = nn.ConvTranspose2d if isinstance(m, nn.ConvTranspose2d) else nn.Conv2d
    plain = kind(
        m.in_channels, m.out_channels, m.kernel_size, m.stride, m.padding, bias=m.bias is not None
    )
    plain.load_state_dict(m.state_dict())
    return plain.float().eval().to(memory_format=torch.channels_last)  # type: ignore[call-overload]


def int8_twin(m: nn.Module) -> nn.Module:
    """The quantized module of the same shape (weights per tensor; values do not set the speed)."""
    kind = nnq.ConvTranspose2d if isinstance(m, nn.ConvTranspose2d) else nnq.Conv2d
    q = kind(m.in_channels, m.out_channels, m.kernel_size, m.stride, m.padding)
    w = torch.quantize_per_tensor(m.weight.detach().float(), 0.01, 0, torch.qint8)
    bias = None if m.bias is None else m.bias.detach().float()
    q.set_weight_bias(w, bias)
    q.scale, q.zero_point = 0.05, 64
    return q


def timed(f: nn.Module, x: torch.Tensor, reps: int) -> float:
    with torch.inference_mode():
        f(x)
        start = time.perf_counter()
        for _ in range(reps):
            f(x)
    return (time.perf_counter() - start) / reps


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--window", type=int, default=1024)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--reps", type=int, default=3)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)  # this script owns its process
    torch.backends.quantized.engine = "x86"
    warnings.filterwarnings("ignore", message=".*quantize.*deprecated")
    print(describe())
    net = load_model().generator.float().eval()
    total32 = total8 = 0.0
    for m, shape in layer_inputs(net, args.window):
        x = torch.randn(shape).contiguous(memory_format=torch.channels_last)
        t32 = timed(fp32_plain(m), x, args.reps)
        t8 = timed(int8_twin(m), torch.quantize_per_tensor(x, 0.05, 64, torch.quint8), args.reps)
        total32, total8 = total32 + t32, total8 + t8
        kind = "convT" if isinstance(m, nn.ConvTranspose2d) else "conv "
        print(
            f"{kind} {m.in_channels:4d}->{m.out_channels:4d} on {shape[-1]:5d}^2: fp32 "
            f"{t32 * 1e3:7.1f} ms, int8 {t8 * 1e3:7.1f} ms, {t32 / t8:.2f}x"
        )
    print(
        f"all convolutions of one {args.window}^2 window: fp32 {total32 * 1e3:.0f} ms, "
        f"int8 {total8 * 1e3:.0f} ms: int8 is {total32 / total8:.2f}x fp32's speed"
    )


if __name__ == "__main__":
    main()
