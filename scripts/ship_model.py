"""Ship a trained model as the package default: evaluate it on a whole split, put those metrics
in its card, and write ``geomap_gan/models/default.safetensors`` (fp16).

    python scripts/ship_model.py runs/default-ngf32/model.safetensors ../shared/data/maps256
"""

from __future__ import annotations

import argparse
import dataclasses
import json

from geomap_gan.model.modelfile import MapModel, default_model_path, load_model, save_model
from geomap_gan.training.metrics import evaluate


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("model")
    ap.add_argument("data_dir", help="folder with the evaluation split (maps256)")
    ap.add_argument("--split", default="val")
    ap.add_argument("--dataset", help="the card's training-data description, when the run "
                    "read a copy of it (e.g. on a GPU machine)")  # fmt: skip
    args = ap.parse_args()
    metrics = evaluate(args.model, args.data_dir, args.split)
    print(json.dumps(metrics, indent=2))
    model = load_model(args.model)
    scores = {k: round(float(v), 4) for k, v in metrics.items() if k != "model"}
    card = dataclasses.replace(model.card, metrics=scores)
    if args.dataset:
        card = dataclasses.replace(card, dataset=args.dataset)
    path = save_model(MapModel(model.generator, card), default_model_path())
    print(f"wrote {path} ({path.stat().st_size / 2**20:.1f} MiB)")


if __name__ == "__main__":
    main()
