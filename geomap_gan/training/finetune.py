"""Fine-tune a model on a region's pairs (``geomap-gan pairs``): the trainer, warm-started from the
base model, with a recipe that runs on a laptop CPU in minutes for a few hundred pairs.

The recipe (measured on the NAIP scene in ../shared/data, benchmarks/finetune_naip.py): the
base model's architecture and weights, no adversarial term (L1 only: the discriminator is
neither built up nor run, a quarter of an update's cost), the 8 rotations and flips, batch 8,
Adam at 1e-4 for about :data:`UPDATES` updates (half at the full rate, half decaying to 0),
BatchNorm statistics re-estimated on the region's pairs before validation and export. The model
card records the base model, the pairs' sources and region; ``OUT/finetune.json`` holds the
whole record.

Measured (benchmarks/finetune_naip.py, 2-core AMX Xeon shared with other jobs): water from NDWI
over the west 60% of the NAIP 2015 scene, 90 training pairs; water IoU against the NDWI truth on
the east 40%, never in a pair: bundled 0.757; this recipe (242 updates) 0.902, in 8.1 CPU
minutes (13.8 min wall on the shared cores). Rate 2e-4: 0.888. With the encoder frozen (85
pairs of an earlier split, where the full network gave 0.868): 0.834, for only 10% less CPU.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from geomap_gan.errors import DatasetError, InputError, RenderCancelled
from geomap_gan.training.config import TrainConfig

if TYPE_CHECKING:
    from geomap_gan.model.modelfile import ModelCard

log = logging.getLogger(__name__)

UPDATES = 240  # the recipe's length in optimiser updates
MIN_EPOCHS = 2  # at full rate, for tiny pair folders the updates would be few epochs of
BATCH_SIZE = 8
LR = 1e-4
FREEZE: Literal["none", "encoder"] = "none"
RECORD_FILE = "finetune.json"


@dataclass(frozen=True)
class FinetuneOptions:
    """The recipe's knobs; None: the recipe's value (see the module docstring)."""

    epochs: int | None = None
    epochs_decay: int | None = None
    lr: float | None = None
    batch_size: int | None = None
    freeze: Literal["none", "encoder"] | None = None
    threads: int = 0
    device: str = "auto"
    seed: int = 0
    name: str = ""
    resume: bool = False
    overwrite: bool = False
    extra: dict[str, Any] = field(default_factory=dict)  # further TrainConfig fields (tests)


@dataclass(frozen=True)
class FinetuneResult:
    """What :func:`finetune` wrote."""

    model: Path
    out_dir: Path
    updates: int
    epochs: int
    train_pairs: int
    val_pairs: int
    seconds: float
    metrics: dict[str, float]
    classes: tuple[str, ...] = ()  # the map classes the pairs draw (all: a map raster's pairs)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _pair_size(pairs_dir: Path) -> int:
    """Side of the first training pair's halves, pixels (DatasetError when there is none)."""
    from PIL import Image

    from geomap_gan.training.data import list_pairs

    first = list_pairs(pairs_dir, "train")[0]
    with Image.open(first) as im:
        return int(im.size[1])


def plan(
    pairs_dir: str | Path,
    out_dir: str | Path,
    model: str | Path | None = None,
    options: FinetuneOptions | None = None,
) -> tuple[TrainConfig, dict[str, Any]]:
    """The TrainConfig of a fine-tune and the record of its base model and pairs, after
    checking them (InputError, DatasetError or ModelFileError, before anything is written)."""
    from geomap_gan.model.modelfile import default_model_path, load_model
    from geomap_gan.training.data import list_pairs
    from geomap_gan.training.manifest import read_manifest

    options = options or FinetuneOptions()
    pairs_dir = Path(pairs_dir)
    base_path = default_model_path() if model is None else Path(model)
    card = load_model(base_path).card
    _check_base(card, base_path)
    n_train = len(list_pairs(pairs_dir, "train"))
    try:
        n_val = len(list_pairs(pairs_dir, "val"))
    except DatasetError:
        n_val = 0
    size = _pair_size(pairs_dir)
    manifest = read_manifest(pairs_dir)
    _check_pairs(pairs_dir, size, manifest, card, base_path)
    batch = options.batch_size or BATCH_SIZE
    per_epoch = max(1, n_train // batch) if n_train >= batch else 1
    total = max(2 * MIN_EPOCHS, math.ceil(UPDATES / per_epoch))
    epochs = options.epochs if options.epochs is not None else total // 2
    decay = options.epochs_decay if options.epochs_decay is not None else total - total // 2
    name = options.name or f"{card.name}-finetuned-{pairs_dir.absolute().name}"
    cfg = TrainConfig(
        data_dir=str(pairs_dir),
        out_dir=str(out_dir),
        ngf=card.ngf,
        num_downs=card.num_downs,
        norm=card.norm,  # type: ignore[arg-type]
        antialias=card.antialias,
        init_from=str(base_path),
        aug_dihedral=True,
        lambda_gan=0.0,
        lr=options.lr or LR,
        epochs=epochs,
        epochs_decay=decay,
        batch_size=batch,
        load_size=size,
        crop_size=card.tile_size,
        source_gsd=card.gsd,
        source_size=size,
        device=options.device,
        threads=options.threads,
        seed=options.seed,
        save_every=1,
        val_every=max(1, (epochs + decay) // 4),
        name=name,
        **options.extra,
    )
    return cfg, _record(card, base_path, pairs_dir, (n_train, n_val), manifest, options, cfg)


def _check_base(card: ModelCard, base_path: Path) -> None:
    """InputError for a base model that finetune cannot train."""
    if card.arch != "unet_256":
        raise InputError(
            f"the base model {base_path} is a {card.arch!r} generator; finetune trains unet_256 "
            "models (pix2pix U-Nets) only: give one with --model"
        )
    if card.direction != "AtoB":
        raise InputError(f"the base model {base_path} maps B to A; finetune needs an AtoB model")


def _check_pairs(
    pairs_dir: Path, size: int, manifest: dict[str, Any] | None, card: ModelCard, base: Path
) -> None:
    """InputError for pairs the base model cannot learn from: smaller than its tile, or cut at
    another ground sample distance (their manifest says which)."""
    if size < card.tile_size:
        raise InputError(
            f"the pairs in {pairs_dir} are {size} px, smaller than the base model's "
            f"{card.tile_size} px tile; make them with `geomap-gan pairs --tile {card.tile_size}` "
            "or larger"
        )
    if manifest is not None and abs(float(manifest.get("gsd", card.gsd)) / card.gsd - 1) > 1e-3:
        raise InputError(
            f"the pairs in {pairs_dir} were cut at {manifest['gsd']} m/px, the base model "
            f"works at {card.gsd} m/px; make the pairs with --model {base}"
        )


def _record(
    card: ModelCard,
    base_path: Path,
    pairs_dir: Path,
    counts: tuple[int, int],
    manifest: dict[str, Any] | None,
    options: FinetuneOptions,
    cfg: TrainConfig,
) -> dict[str, Any]:
    """What finetune.json records of a fine-tune: its base model, its pairs, its recipe."""
    n_train, n_val = counts
    per_epoch = max(1, n_train // cfg.batch_size) if n_train >= cfg.batch_size else 1
    record: dict[str, Any] = {
        "base_model": {
            "name": card.name,
            "path": str(base_path.absolute()),
            "sha256": _sha256(base_path),
        },
        "pairs": {"path": str(pairs_dir.absolute()), "train": n_train, "val": n_val},
        "recipe": {
            "freeze": options.freeze or FREEZE,
            "lr": cfg.lr,
            "batch_size": cfg.batch_size,
            "epochs": cfg.epochs,
            "epochs_decay": cfg.epochs_decay,
            "updates": per_epoch * cfg.total_epochs,
            "lambda_gan": 0.0,
            "aug_dihedral": True,
        },
    }
    if manifest is not None:
        record["pairs"].update(
            scene=manifest.get("scene", {}).get("path"),
            layers=[f"{x['class']}={x['path']}" for x in manifest.get("layers", [])],
            map=(manifest.get("map") or {}).get("path"),
            coverage=(manifest.get("coverage") or {}).get("source"),
            crs=manifest.get("crs"),
            region=_region(manifest),
        )
    record["pairs"]["classes"] = drawn_classes(manifest)
    return record


def drawn_classes(manifest: dict[str, Any] | None) -> list[str]:
    """The legend's classes that pairs show: their layers' classes; all of them for pairs of a
    map raster or of a folder without pairs.json (IoU of a class absent from both sides is 0,
    which says nothing about the model)."""
    from geomap_gan.legend import CLASSES

    if manifest is None or manifest.get("map"):
        return list(CLASSES)
    layers = {str(x.get("class")) for x in manifest.get("layers", [])}
    return [c for c in CLASSES if c in layers]


def _region(manifest: dict[str, Any]) -> list[float] | None:
    """The bounds (left, bottom, right, top, in the pairs' CRS) of all pairs."""
    bounds = [p["bounds"] for p in manifest.get("pairs", [])]
    if not bounds:
        return None
    return [
        round(min(b[0] for b in bounds), 3),
        round(min(b[1] for b in bounds), 3),
        round(max(b[2] for b in bounds), 3),
        round(max(b[3] for b in bounds), 3),
    ]


def freeze_encoder(g: Any) -> int:
    """Keep the U-Net's encoder (each level's down-convolution and the norm after it) as it is:
    no gradient reaches it; BatchNorm statistics are still re-estimated. Returns the number of
    tensors frozen."""
    from torch import nn

    from geomap_gan.model.nets import UnetSkipBlock

    frozen = 0
    for block in g.modules():
        if not isinstance(block, UnetSkipBlock):
            continue
        for i, layer in enumerate(block.model):
            if isinstance(layer, UnetSkipBlock) or (isinstance(layer, nn.ReLU) and i > 0):
                break  # the decoder side: after the inner level, or the innermost up-ReLU
            for p in layer.parameters():
                p.requires_grad_(False)
                frozen += 1
    return frozen


class _Cancelled(KeyboardInterrupt):
    """Raised from the progress callback: the trainer saves a checkpoint as for Ctrl-C."""


def finetune(
    pairs_dir: str | Path,
    out_dir: str | Path,
    model: str | Path | None = None,
    options: FinetuneOptions | None = None,
    progress: Callable[[int, int], None] | None = None,
    cancel: Callable[[], bool] | None = None,
    place: Callable[[TrainConfig], Any] | None = None,
    command: str = "",
) -> FinetuneResult:
    """Fine-tune ``model`` (the bundled one when None) on ``pairs_dir`` into ``out_dir``.

    ``progress(done, total)`` counts updates; ``cancel()`` returning True stops after the
    current update with a checkpoint kept (RenderCancelled), which ``options.resume``
    continues. ``place``: sets up the process for the run's config and says where it runs
    (:func:`geomap_gan.training.process.place_process`, which the CLI passes); without it one
    process on ``options.device``, seeded by the caller.
    """
    from geomap_gan.model.modelfile import MapModel, load_model, save_model
    from geomap_gan.training.loop import Trainer

    options = options or FinetuneOptions()
    start = time.perf_counter()
    cfg, record = plan(pairs_dir, out_dir, model, options)
    state = {"total": 0}

    def on_batch(p: dict[str, float]) -> None:
        batches = int(p["batches"])
        state["total"] = batches * cfg.total_epochs
        done = (int(p["epoch"]) - 1) * batches + int(p["batch"])
        if progress is not None:
            progress(done, state["total"])
        if cancel is not None and cancel():
            raise _Cancelled()

    trainer = Trainer(cfg, place(cfg) if place else None, progress=on_batch, command=command)
    if (options.freeze or FREEZE) == "encoder":
        n = freeze_encoder(trainer.G)
        log.info("froze %d encoder tensors of the base model", n)
    try:
        metrics = trainer.fit(resume=options.resume, overwrite=options.overwrite)
    except _Cancelled:
        raise RenderCancelled(
            f"cancelled; a checkpoint is kept in {trainer.out}: run again with --resume to continue"
        ) from None
    path = trainer.out / "model.safetensors"
    if trainer.is_main:
        record["updates"] = trainer.step
        record["metrics"] = {k: round(float(v), 4) for k, v in metrics.items()}
        _write_card(path, record, load_model, save_model, MapModel)
        (trainer.out / RECORD_FILE).write_text(json.dumps(record, indent=1) + "\n")
    return FinetuneResult(
        model=path,
        out_dir=trainer.out,
        updates=trainer.step,
        epochs=trainer.epoch,
        train_pairs=len(trainer.train_pairs),
        val_pairs=0 if trainer.val_pairs is None else len(trainer.val_pairs),
        seconds=time.perf_counter() - start,
        metrics={k: float(v) for k, v in metrics.items()},
        classes=tuple(record["pairs"]["classes"]),
    )


def _write_card(path: Path, record: dict[str, Any], load_model: Any, save_model: Any,
                map_model: Any) -> None:  # fmt: skip
    """Put the base model, the pairs' sources and region into the exported model's card."""
    model = load_model(path)
    pairs = record["pairs"]
    base = record["base_model"]
    sources = "; ".join(
        s
        for s in (
            f"scene {pairs['scene']}" if pairs.get("scene") else "",
            f"layers {', '.join(pairs['layers'])}" if pairs.get("layers") else "",
            f"map {pairs['map']}" if pairs.get("map") else "",
            f"coverage {pairs['coverage']}" if pairs.get("coverage") else "",
        )
        if s
    )
    region = ""
    if pairs.get("region"):
        region = f"; region {pairs['crs']} {', '.join(f'{v:.1f}' for v in pairs['region'])}"
    dataset = (
        f"fine-tuned from {base['name']} (sha256 {base['sha256'][:16]}) on {pairs['path']} "
        f"({pairs['train']} train, {pairs['val']} val pairs"
        f"{'; ' + sources if sources else ''}{region})"
    )
    card = dataclasses.replace(model.card, dataset=dataset)
    save_model(map_model(model.generator, card), path)
