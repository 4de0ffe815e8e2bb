"""Map-class IoU on maps val scored at the model's ground sample distance, as ``render`` runs it.

``geomap-gan evaluate`` feeds each 256 px val aerial to the generator as it is: 600 px originals
at about 0.9 m/px resized to 256, so 2.11 m/px, while the shipped models train on 256 px crops
of 286 px resizes (1.89 m/px, the card's GSD) and ``render`` brings every scene to that GSD.
This script resizes each val aerial to the side that puts it at the card's GSD (rounded to the
network's stride; bicubic, antialiased), runs the generator in eval mode, resizes the map back
to 256 px (bilinear, antialiased) and scores it against the real map, next to the plain protocol,
in one run. Printed: the machine, then miou and per-class IoU per protocol.

    python benchmarks/val_at_model_gsd.py [--model FILE] [--size PX ...] [--limit N]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine import describe  # noqa: E402

from geomap_gan.model.modelfile import default_model_path, load_model  # noqa: E402
from geomap_gan.model.nets import to_model_range, to_uint8  # noqa: E402
from geomap_gan.model.registry import MAPS_ORIGINAL_GSD, MAPS_ORIGINAL_SIZE  # noqa: E402
from geomap_gan.training.data import load_split  # noqa: E402
from geomap_gan.training.metrics import CLASSES, MetricAccumulator  # noqa: E402

VAL = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "maps256"
TILE = 256  # the val tiles' side, px
BATCH = 16


@torch.no_grad()
def score(generator: torch.nn.Module, pairs: np.ndarray, size: int) -> dict[str, float]:
    """Metrics of ``generator`` on (N, 2, 256, 256, 3) pairs with the aerials run at ``size`` px."""
    acc = MetricAccumulator()
    for start in range(0, len(pairs), BATCH):
        batch = pairs[start : start + BATCH]
        x = to_model_range(torch.from_numpy(batch[:, 0]).permute(0, 3, 1, 2))
        if size != TILE:
            x = F.interpolate(x, size=(size, size), mode="bicubic", antialias=True).clamp(-1, 1)
        y = generator(x).float().clamp(-1, 1)
        if size != TILE:
            y = F.interpolate(y, size=(TILE, TILE), mode="bilinear", antialias=True)
        fake = to_uint8(y).permute(0, 2, 3, 1).numpy()
        acc.update(fake, batch[:, 1])
    return acc.result()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--model", default=None, help="model file (default: the bundled model)")
    ap.add_argument("--size", type=int, nargs="*", default=None,
                    help="aerial sides to score besides 256 (default: the card's GSD)")  # fmt: skip
    ap.add_argument("--limit", type=int, default=None, help="first N val pairs only")
    args = ap.parse_args()

    print(describe())
    model = load_model(args.model or default_model_path())
    generator, card = model.generator.eval(), model.card
    val_gsd = MAPS_ORIGINAL_GSD * MAPS_ORIGINAL_SIZE / TILE
    stride = generator.multiple
    at_gsd = max(stride, round(TILE * val_gsd / card.gsd / stride) * stride)
    sizes = [TILE, *(args.size if args.size else [at_gsd])]
    pairs, _ = load_split(VAL, "val", TILE)
    pairs = pairs[: args.limit] if args.limit else pairs
    print(f"model {card.name} (GSD {card.gsd} m/px), {len(pairs)} val pairs at {val_gsd:.2f} m/px")
    for size in sizes:
        r = score(generator, pairs, size)
        ious = " ".join(f"{c} {r[f'iou_{c}']:.4f}" for c in CLASSES)
        print(
            f"aerial at {size} px ({val_gsd * TILE / size:.2f} m/px): miou {r['miou']:.4f}  {ious}"
        )


if __name__ == "__main__":
    main()
