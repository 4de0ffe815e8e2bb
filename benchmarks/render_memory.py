"""Peak memory (RSS) of the render engine against scene size: memory must be bounded by the window
rows in flight, not by the scene (a 20000x20000 scene within 20% of a 2000x2000 one, and under
1.5 GB).

Each render runs in a fresh child process (the real NAIP photo tiled up to each size, see
_render_scene.py; a randomly initialised ngf=32 generator); its peak RSS comes from the kernel's
resource accounting of that child (``os.wait4``), so the parent's own memory does not count.

    python benchmarks/render_memory.py [--sizes 2000 20000] [--ngf 32] [--threads 0]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _child_render import render_in_child  # noqa: E402
from _machine import describe  # noqa: E402
from _render_scene import make_scene  # noqa: E402

from geomap_gan.model.modelfile import ModelCard  # noqa: E402


def gpu_peak(info: dict) -> str:
    """The render's peak CUDA allocation, when it ran on a GPU."""
    return "" if info.get("gpu_peak_mb") is None else f", GPU peak {info['gpu_peak_mb']:.0f} MB"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[2000, 20000])
    ap.add_argument("--ngf", type=int, default=32)
    ap.add_argument("--batch-size", type=int, default=0, help="0: the engine's choice")
    ap.add_argument("--overlap", type=int, default=32)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    ap.add_argument(
        "--compile", choices=["auto", "on", "off"], default="off",
        help="compiled generator in both renders, from a cache warmed by a first, unmeasured "
        "render (auto: the engine decides); building it is a one-time cost, not per scene",
    )  # fmt: skip
    ap.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "geomap-gan-bench")
    args = ap.parse_args()

    print(describe())
    print(f"settings: ngf={args.ngf}, batch {args.batch_size}, overlap {args.overlap}, "
          f"compile {args.compile}, threads {args.threads or 'default'}")  # fmt: skip
    gsd = ModelCard(ngf=args.ngf).gsd
    os.environ["GEOMAP_GAN_CACHE_DIR"] = str(args.work / "aot-cache")  # children inherit it
    sizes = args.sizes
    if args.compile == "on":
        sizes = [("warm-up", min(args.sizes)), *sizes]
    peaks = {}
    for size in sizes:
        label, size = size if isinstance(size, tuple) else ("", size)
        t0 = time.perf_counter()
        scene = make_scene(args.work, size, gsd)
        made = time.perf_counter() - t0
        out = args.work / f"memory_out_{size}.tif"
        options = dict(overlap=args.overlap, batch_size=args.batch_size, overwrite=True,
                       compile={"auto": None, "on": True, "off": False}[args.compile],
                       threads=args.threads, device=args.device)  # fmt: skip
        info = render_in_child(scene, out, args.ngf, options)
        peak = info["peak_rss_mb"]
        out.unlink(missing_ok=True)
        if label:
            print(f"{label} (builds the compiled generator): peak RSS {peak:.0f} MB, "
                  f"{info['seconds']:.0f} s")  # fmt: skip
            continue
        peaks[size] = peak
        print(f"{size}x{size} px ({size * size / 1e6:.0f} MP, scene ready in {made:.0f} s): "
              f"peak RSS {peak:.0f} MB, {info['windows']} windows in {info['seconds']:.0f} s "
              f"({info['mp'] / info['seconds']:.2f} MP/s){gpu_peak(info)}")  # fmt: skip
    if len(peaks) > 1:
        small, large = min(peaks), max(peaks)
        growth = peaks[large] / peaks[small] - 1
        print(f"peak RSS {large}^2 vs {small}^2: {growth * 100:+.1f}%")


if __name__ == "__main__":
    main()
