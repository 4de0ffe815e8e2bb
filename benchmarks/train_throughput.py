"""Training images per second of the real trainer step (G + D updates) for ngf 64/32, batch 1/8,
fp32 and bf16 autocast, on random 256 px pairs (speed does not depend on the data).

    python benchmarks/train_throughput.py [--steps 6] [--device auto]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine import describe  # noqa: E402

from geomap_gan.device import bf16_supported  # noqa: E402
from geomap_gan.training.config import TrainConfig  # noqa: E402
from geomap_gan.training.loop import Trainer  # noqa: E402
from geomap_gan.training.process import place_process  # noqa: E402


def fake_dataset(root: Path) -> Path:
    (root / "train").mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(8):
        img = rng.integers(0, 256, (286, 572, 3), dtype=np.uint8)
        Image.fromarray(img).save(root / "train" / f"{i}.jpg")
    return root


def images_per_second(
    data: Path, ngf: int, batch: int, amp: bool, steps: int, device: str
) -> float:
    cfg = TrainConfig(data_dir=str(data), out_dir=str(data / "run"), ngf=ngf, batch_size=batch,
                      amp=amp, device=device, val_every=0, samples=0)  # fmt: skip
    trainer = Trainer(cfg, place_process(cfg))
    a = torch.rand(batch, 3, 256, 256) * 2 - 1
    b = torch.rand(batch, 3, 256, 256) * 2 - 1
    for _ in range(2):  # warm-up: allocator, oneDNN/cuDNN kernel choice
        trainer.train_step(a, b)
    if trainer.device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(steps):
        trainer.train_step(a, b)
    if trainer.device.type == "cuda":
        torch.cuda.synchronize()
    return steps * batch / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--ngf", type=int, nargs="+", default=[64, 32])
    ap.add_argument("--batch", type=int, nargs="+", default=[1, 8])
    args = ap.parse_args()
    print(describe())
    with tempfile.TemporaryDirectory() as tmp:
        data = fake_dataset(Path(tmp))
        print(f"{'ngf':>4} {'batch':>5} {'precision':>9} {'img/s':>7}")
        for ngf in args.ngf:
            for batch in args.batch:
                for amp in (False, True):
                    ips = images_per_second(data, ngf, batch, amp, args.steps, args.device)
                    dev = torch.device(
                        "cuda" if args.device != "cpu" and torch.cuda.is_available() else "cpu"
                    )
                    prec = "bf16" if amp and bf16_supported(dev) else "fp32"
                    print(f"{ngf:>4} {batch:>5} {prec:>9} {ips:>7.2f}", flush=True)


if __name__ == "__main__":
    main()
