"""Generator alone on one render window: student candidates beside v16, in one process.

For each candidate (random weights: the speed does not depend on them) the renderer's own tile
module (BatchNorm folded, channels_last, bf16 where native, uint8 in, weighted grey levels out)
runs a ``--window`` px window at batch 1, eager and, with ``--aot``, as the ahead-of-time compiled
library the renderer would build (aot.build, in a throwaway cache). Prints ms per window and MP/s
of map: the window's core after the renderer drops its margins (the receptive field rounded up
to the network's stride on each side).

Rounds interleave the candidates (A B C A B C ...) so that another job on the cores slows them
alike; the figures are the median and the best of the rounds ("x v16": map pixels per second
against v16's, by the median; "best x": by the best round, the one least disturbed). With other
jobs on the cores prefer ``--threads 1``: with 2 threads on oversubscribed cores every parallel
region waits for a descheduled thread, and the student (as many layers as v16, each a quarter of
the work) lost its whole advantage (ngf 16 eager 1357 ms, v16 1343 ms).

    .venv/bin/python benchmarks/student_speed.py --aot --rounds 5
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).parent))
from _machine import describe  # noqa: E402

from geomap_gan.model.modelfile import ModelCard, build_generator  # noqa: E402
from geomap_gan.model.nets import count_parameters, fuse_batchnorm  # noqa: E402
from geomap_gan.model.registry import architecture  # noqa: E402
from geomap_gan.rendering.inference import TileNet  # noqa: E402
from geomap_gan.rendering.windows import round_up  # noqa: E402

# name -> card fields; v16 first (the reference)
CANDIDATES: dict[str, dict[str, object]] = {
    "v16 (unet_256 ngf32 L5)": {"arch": "unet_256", "ngf": 32, "num_downs": 5},
    "ngf16 L5": {"arch": "unet_256", "ngf": 16, "num_downs": 5},
    "ngf16 L4": {"arch": "unet_256", "ngf": 16, "num_downs": 4},
    "ngf24 L5": {"arch": "unet_256", "ngf": 24, "num_downs": 5},
    "ngf16 L5 no-antialias": {"arch": "unet_256", "ngf": 16, "num_downs": 5, "antialias": False},
}


def macs_per_pixel(net: nn.Module, side: int = 256) -> float:
    """Multiply-adds per output pixel of the convolutions (blur included), by forward hooks."""
    total = 0

    def hook(m: nn.Module, inp: tuple[torch.Tensor, ...], out: torch.Tensor) -> None:
        nonlocal total
        if isinstance(m, nn.ConvTranspose2d):  # each input pixel scatters the whole kernel
            total += inp[0].numel() * m.weight[0].numel()
        elif isinstance(m, nn.Conv2d):
            total += out.numel() * m.weight[0].numel()
            blur = getattr(m, "blur", None)
            if blur is not None:
                total += inp[0].numel() * blur[0].numel()

    hooks = [
        m.register_forward_hook(hook)
        for m in net.modules()
        if isinstance(m, nn.Conv2d | nn.ConvTranspose2d)
    ]
    with torch.no_grad():
        net.eval()(torch.zeros(1, 3, side, side))
    for h in hooks:
        h.remove()
    return total / side**2


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--window", type=int, default=1024)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--reps", type=int, default=3, help="windows timed per round (mean)")
    ap.add_argument("--aot", action="store_true", help="also the AOT-compiled library")
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--only", default="", help="comma-separated candidate names")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    from geomap_gan.device import bf16_supported

    amp = bf16_supported(torch.device("cpu"))
    print(describe())
    print(f"window {args.window}^2, batch 1, bf16={amp}, channels_last, BatchNorm folded")
    names = [n for n in CANDIDATES if not args.only or n in args.only.split(",")]
    runners: dict[str, dict[str, object]] = {}
    x = torch.randint(0, 256, (1, 3, args.window, args.window), dtype=torch.uint8)
    weights = torch.ones(args.window, args.window)
    cache = Path(tempfile.mkdtemp(prefix="student-speed-"))
    for name in names:
        card = ModelCard(**{"antialias": True, **CANDIDATES[name]})  # type: ignore[arg-type]
        arch = architecture(card.arch)
        g = build_generator(card)
        margin = round_up(arch.receptive_field(card), arch.stride(card))
        core = (args.window - 2 * margin) ** 2
        info = {
            "params": count_parameters(g),
            "macs": macs_per_pixel(g),
            "margin": margin,
            "core": core,
        }
        tile = TileNet(
            fuse_batchnorm(g).to(memory_format=torch.channels_last),
            weights,
            torch.device("cpu"),
            amp,
        )
        fns = {"eager": tile}
        if args.aot:
            from geomap_gan.model import aot

            t0 = time.perf_counter()
            with torch.inference_mode():
                fns["aot"] = aot.build(tile, x, cache / f"{len(runners)}.so")
            info["build_s"] = time.perf_counter() - t0
        runners[name] = {"info": info, "fns": fns, "times": {k: [] for k in fns}}
    with torch.inference_mode():
        for r in runners.values():  # warm-up
            for fn in r["fns"].values():  # type: ignore[union-attr]
                fn(x)
        for _ in range(args.rounds):
            for r in runners.values():
                for mode, fn in r["fns"].items():  # type: ignore[union-attr]
                    t0 = time.perf_counter()
                    for _ in range(args.reps):
                        fn(x)
                    r["times"][mode].append((time.perf_counter() - t0) / args.reps)  # type: ignore[index]
    ref = runners[names[0]]
    print(
        f"{'candidate':26s} {'params':>9s} {'MAC/px':>7s} {'margin':>6s} {'mode':>5s} "
        f"{'ms/win':>7s} {'best':>7s} {'MP/s map':>8s} {'x v16':>6s} {'best x':>6s} {'build s':>7s}"
    )
    for name, r in runners.items():
        info = r["info"]
        for mode, ts in r["times"].items():  # type: ignore[union-attr]
            ms, best = statistics.median(ts) * 1e3, min(ts) * 1e3
            mps = info["core"] / (ms / 1e3) / 1e6  # type: ignore[index,operator]
            ref_ts = ref["times"][mode]  # type: ignore[index]
            ref_ms, ref_best = statistics.median(ref_ts) * 1e3, min(ref_ts) * 1e3
            ref_mps = ref["info"]["core"] / (ref_ms / 1e3) / 1e6  # type: ignore[index]
            # per pixel of map: time per window over the core it keeps, against v16's
            best_x = (ref_best / ref["info"]["core"]) / (best / info["core"])  # type: ignore[index,operator]
            build = f"{info['build_s']:.0f}" if mode == "aot" else ""  # type: ignore[index]
            print(
                f"{name:26s} {info['params']:9,d} {info['macs']:7,.0f} {info['margin']:6d} "
                f"{mode:>5s} {ms:7.1f} {best:7.1f} {mps:8.2f} {mps / ref_mps:6.2f} {best_x:6.2f} "
                f"{build:>7s}"
            )


if __name__ == "__main__":
    main()
