"""Time to load the bundled default model (file read, validation, fp16 -> fp32, eval mode).

python benchmarks/model_load.py [--repeat 5]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine import describe  # noqa: E402

from geomap_gan.model.modelfile import default_model_path, load_model  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--model", default=None, help="model file (default: the bundled one)")
    args = ap.parse_args()
    print(describe())
    path = Path(args.model) if args.model else default_model_path()
    print(f"model: {path} ({path.stat().st_size / 2**20:.1f} MiB)")
    times = []
    for _ in range(args.repeat):
        t0 = time.perf_counter()
        load_model(path)
        times.append(time.perf_counter() - t0)
    print(f"load_model: first {times[0]:.3f} s, best {min(times):.3f} s over {args.repeat} loads")


if __name__ == "__main__":
    main()
