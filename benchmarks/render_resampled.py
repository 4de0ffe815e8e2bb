"""Whole-process render time as a user sees it, before and after a change, side by side.

Runs ``geomap-gan render SCENE OUT -q --overwrite`` (default settings, the bundled model) of this
checkout and of an earlier revision (a temporary git worktree; ``--before``) on the same scenes,
alternating A, B, A, B so that drift hits both alike, and prints wall time, MP/s of map and peak
RSS. Scenes are the real NAIP photo tiled up (see _render_scene.py) at half the model's GSD (the
usual case: the scene must be resampled) and at the model's GSD, plus a one-window scene for the
fixed start-up cost.

    python benchmarks/render_resampled.py [--before a3eb5b8] [--reps 1] [--cases big,half,native,coarse,small]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _child_render import run_command  # noqa: E402
from _machine import describe  # noqa: E402
from _render_scene import make_scene  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SCENES = Path(os.environ.get("GEOMAP_GAN_BENCH_DIR", Path(tempfile.gettempdir()) / "geomap-bench"))
# name: (scene side in px, scene GSD as a fraction of the model's)
CASES = {
    "big": (16384, 0.5),  # 8192^2 px of map: the lead case
    "half": (8192, 0.5),
    "native": (6144, 1.0),
    "coarse": (3072, 1.5),  # enlarged: 2.8 m imagery for the 1.9 m model (resampled reads)
    "small": (512, 1.0),  # one window: the fixed cost
}


def model_gsd() -> float:
    from geomap_gan.model.modelfile import load_model

    return load_model(None).card.gsd


def run(tree: Path, scene: Path, out: Path) -> dict[str, float]:
    """One whole ``geomap-gan render`` of ``tree``'s code in a fresh process: wall s, peak RSS."""
    env = {**os.environ, "PYTHONPATH": str(tree)}
    cmd = [sys.executable, "-m", "geomap_gan", "-q", "render", str(scene), str(out), "--overwrite",
           "--json"]  # fmt: skip
    wall, printed, usage = run_command(cmd, tree, env)
    data = json.loads(printed)
    return {"wall": wall, "mp": data["width"] * data["height"] / 1e6, "rss_gb": usage["rss_gb"]}


def worktree(rev: str, where: Path) -> Path:
    subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(where), rev],
                   check=True, capture_output=True)  # fmt: skip
    return where


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", default="a3eb5b8", help="git revision to compare against")
    parser.add_argument("--reps", type=int, default=1)
    parser.add_argument("--cases", default=",".join(CASES))
    args = parser.parse_args()
    print(describe())
    gsd = model_gsd()
    with tempfile.TemporaryDirectory() as tmp:
        trees = {"before": worktree(args.before, Path(tmp) / "before"), "after": ROOT}
        try:
            print(f"before = {args.before}, after = working tree; model GSD {gsd:.4g} m")
            print(f"{'case':<34} {'before':>22} {'after':>22} {'speed-up':>8}")
            for name in args.cases.split(","):
                size, frac = CASES[name]
                scene = make_scene(SCENES, size, gsd * frac)
                times: dict[str, list[dict[str, float]]] = {"before": [], "after": []}
                for _ in range(args.reps):
                    for label, tree in trees.items():
                        times[label].append(run(tree, scene, Path(tmp) / f"{label}.tif"))
                cells = {}
                for label, runs in times.items():
                    wall = statistics.median(r["wall"] for r in runs)
                    mp, rss = runs[0]["mp"], max(r["rss_gb"] for r in runs)
                    cells[label] = (wall, f"{wall:6.1f} s {mp / wall:4.1f} MP/s {rss:4.2f} GB")
                what = f"{name}: {size}^2 at {frac:g}x GSD"
                ratio = cells["before"][0] / cells["after"][0]
                print(f"{what:<34} {cells['before'][1]:>22} {cells['after'][1]:>22} {ratio:7.2f}x")
        finally:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force",
                            str(trees["before"])], capture_output=True)  # fmt: skip


if __name__ == "__main__":
    main()
