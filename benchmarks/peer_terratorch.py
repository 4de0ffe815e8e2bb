"""Our render against the strongest blending peer, terratorch's ``tiled_inference``, on the same
scene and the same generator, whole process each, side by side in one run.

The scene is the tiled NAIP photo of ``_render_scene`` at the model's GSD (no resampling), so both
sides do the same work: read the GeoTIFF, run the generator over overlapping windows, blend, write
an RGB GeoTIFF. The peer runs as its documentation shows: the whole scene read into one tensor,
crops of 256 px at stride 224 with an 8 px delta and its blend masks, batch 16, the generator in
eval mode under bf16 autocast and channels_last where native (as our engine). Ours runs as the
CLI does, with its defaults. Each side is one fresh interpreter; wall time, CPU time and peak
RSS come from the kernel's accounting of the child (``os.wait4``).

terratorch is installed only for this benchmark, never as a project dependency:
``pip install --no-deps --target DIR terratorch==1.2.13`` (``--install`` does it). Its package
``__init__`` pulls in torchvision, timm and lightning, which do not install beside this
machine's CPU torch, so the child loads ``terratorch/tasks/tiled_inference.py`` itself from the
installed files; the one name that module imports from elsewhere in terratorch
(``models.utils.pad_images``) is never called by ``tiled_inference``, and is given a stand-in
that raises if it ever were.

    python benchmarks/peer_terratorch.py --install [--size 8192] [--work DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine import describe  # noqa: E402
from _render_scene import make_scene  # noqa: E402

from geomap_gan.model.modelfile import default_model_path, load_model  # noqa: E402

TERRATORCH = "terratorch==1.2.13"

PEER = r"""
import importlib.util, sys, types
import numpy as np, rasterio, torch
from geomap_gan.device import autocast, configure_process, resolve_device
from geomap_gan.model.modelfile import load_model
from geomap_gan.model.nets import from_model_range, to_model_range

def not_used(*a, **k):
    raise RuntimeError("terratorch.models.utils.pad_images was called")

for name in ("terratorch", "terratorch.models"):
    sys.modules[name] = types.ModuleType(name)
sys.modules["terratorch.models.utils"] = types.SimpleNamespace(pad_images=not_used)
spec = importlib.util.spec_from_file_location(
    "terratorch_tiled_inference", {target!r} + "/terratorch/tasks/tiled_inference.py")
peer = importlib.util.module_from_spec(spec)
spec.loader.exec_module(peer)

device = resolve_device("auto")
configure_process(device)
g = load_model({model!r}, device).generator.eval().to(memory_format=torch.channels_last)

def forward(x):
    with torch.inference_mode(), autocast(device):
        return g(x.contiguous(memory_format=torch.channels_last)).float()

with rasterio.open({scene!r}) as ds:
    profile = ds.profile
    x = to_model_range(torch.from_numpy(ds.read([1, 2, 3]))[None]).to(device)
y = peer.tiled_inference(forward, x, out_channels=3, crop=256, stride=224, delta=8,
                         batch_size=16, blend_overlaps=True)
rgb = from_model_range(y[0]).round().to(torch.uint8).cpu().numpy()
profile.update(count=3, dtype="uint8", compress="deflate", predictor=2, tiled=True,
               blockxsize=512, blockysize=512, BIGTIFF="IF_SAFER")
with rasterio.open({out!r}, "w", **profile) as dst:
    dst.write(rgb)
"""


def install(target: Path) -> None:
    """terratorch's files into ``target`` (no dependencies: see the module docstring)."""
    if (target / "terratorch" / "tasks" / "tiled_inference.py").is_file():
        return
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--quiet", "--target",
                    str(target), TERRATORCH], check=True)  # fmt: skip


def run_child(argv: list[str]) -> dict[str, float]:
    """Wall time, CPU time and peak RSS of one child process."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{argv[:3]}... failed with exit code {os.waitstatus_to_exitcode(status)}")
    return {"seconds": wall, "cpu": usage.ru_utime + usage.ru_stime,
            "peak_rss_gb": usage.ru_maxrss / 2**20}  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--size", type=int, default=8192, help="scene side, px at the model's GSD")
    ap.add_argument("--model", default=None, help="model file (default: the bundled model)")
    ap.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "geomap-bench")
    ap.add_argument("--target", type=Path, default=None,
                    help="where terratorch is installed [default: WORK/terratorch]")  # fmt: skip
    ap.add_argument("--install", action="store_true", help="pip-install terratorch there first")
    args = ap.parse_args()
    target = args.target or args.work / "terratorch"
    if args.install:
        install(target)
    if not (target / "terratorch" / "tasks" / "tiled_inference.py").is_file():
        raise SystemExit(f"terratorch is not in {target}; pass --install")
    model = str(args.model or default_model_path())
    gsd = load_model(model).card.gsd
    scene = make_scene(args.work, args.size, gsd)
    mp = args.size**2 / 1e6
    print(describe())
    print(f"scene {args.size}^2 px at the model GSD ({gsd} m), {mp:.1f} MP; model {model}")
    ours_out, peer_out = args.work / "peer_ours.tif", args.work / "peer_terratorch.tif"
    ours = run_child([sys.executable, "-m", "geomap_gan", "-q", "render", str(scene),
                      str(ours_out), "--model", model, "--overwrite"])  # fmt: skip
    code = PEER.format(target=str(target), model=model, scene=str(scene), out=str(peer_out))
    peer_out.unlink(missing_ok=True)
    theirs = run_child([sys.executable, "-c", code])
    print("| | whole process | MP/s | CPU s | peak RSS |")
    print("|---|---|---|---|---|")
    for name, r in (("geomap-gan render", ours), ("terratorch tiled_inference", theirs)):
        print(f"| {name} | {r['seconds']:.1f} s | {mp / r['seconds']:.2f} | {r['cpu']:.0f} | "
              f"{r['peak_rss_gb']:.2f} GB |")  # fmt: skip
    print(
        f"ours: {theirs['seconds'] / ours['seconds']:.2f}x faster, "
        f"{theirs['peak_rss_gb'] / ours['peak_rss_gb']:.1f}x less peak memory"
    )
    print(json.dumps({"ours": ours, "terratorch": theirs, "size": args.size}))


if __name__ == "__main__":
    main()
