"""Model files: a generator's weights plus a model card, in one ``.safetensors`` file.

The card travels in the safetensors metadata (a JSON string under ``geomap_gan.card``) so that one
file says everything the renderer needs: architecture, tile size, the ground sample distance the
model was trained at, how inputs are normalised, and where the weights came from. safetensors
holds no code, so loading a file never unpickles anything; raw torch state dicts are accepted too,
but only through ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import warnings
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import torch

from geomap_gan import files
from geomap_gan.errors import ModelFileError
from geomap_gan.model.nets import UnetGenerator
from geomap_gan.model.registry import (
    MAPS_ORIGINAL_GSD,
    MAPS_ORIGINAL_SIZE,
    NGF_RANGE,
    NUM_DOWNS_RANGE,
    TILE_SIZE_RANGE,
    architecture,
)

log = logging.getLogger(__name__)

FORMAT = "geomap-gan/1"
CARD_KEY = "geomap_gan.card"
BAND_ORDERS = ("RGB",)  # what the renderer feeds the model: red, green, blue
NORMALISATIONS = ("x/127.5-1",)  # uint8 -> [-1, 1], outputs back with (y+1)*127.5
DIRECTIONS = ("AtoB", "BtoA")  # which half of a training pair was the input
MAX_TEXT = 65_536  # characters of a free-text card field
METRIC_RANGES = {"rmse": (0.0, 255.0), "psnr": (0.0, 100.0), "ssim": (-1.0, 1.0), "n": (0, 10**9)}
"""Ranges of the card's metrics other than the fractions (0..1: accuracies and IoUs)."""


def default_model_path() -> Path:
    """Path of the model shipped inside the package (package data)."""
    return Path(str(resources.files("geomap_gan") / "models" / "default.safetensors"))


@dataclass(frozen=True)
class ModelCard:
    """What a model is and how to feed it. Units: pixels, metres per pixel."""

    name: str = "unnamed"
    arch: str = "unet_256"
    ngf: int = 64
    num_downs: int = 8
    antialias: bool = False
    receptive_field: int = 0  # px each side an output pixel depends on (0: unknown, old files)
    input_quantiles: list[list[float]] = field(default_factory=list)  # training aerials, R,G,B
    norm: str = "batch"
    in_channels: int = 3
    out_channels: int = 3
    tile_size: int = 256
    gsd: float = MAPS_ORIGINAL_GSD * MAPS_ORIGINAL_SIZE / 286
    band_order: str = "RGB"
    normalisation: str = "x/127.5-1"  # uint8 -> [-1, 1]; outputs map back with (y+1)*127.5
    direction: str = "AtoB"
    dataset: str = ""
    epochs: int = 0
    command: str = ""
    date: str = ""
    git_commit: str = ""
    metrics: dict[str, float] = field(default_factory=dict)
    # A distilled model's teacher: its name, file, sha256, architecture and the recipe's terms.
    teacher: dict[str, str] = field(default_factory=dict)

    def validate(self) -> ModelCard:
        """ModelFileError unless every field has the type and range the renderer relies on;
        checked before anything is built from the card (a card claiming ngf=2048 would ask for
        17 GB). Returns the card."""
        checks: list[tuple[str, object, type | tuple[type, ...], float, float]] = [
            ("ngf", self.ngf, int, *NGF_RANGE),
            ("num_downs", self.num_downs, int, *NUM_DOWNS_RANGE),
            ("in_channels", self.in_channels, int, 3, 3),
            ("out_channels", self.out_channels, int, 3, 3),
            ("tile_size", self.tile_size, int, *TILE_SIZE_RANGE),
            ("gsd", self.gsd, (int, float), 0.01, 10_000),
            ("receptive_field", self.receptive_field, int, 0, 100_000),
            ("epochs", self.epochs, int, 0, 10**7),
        ]
        for name, value, types, lo, hi in checks:
            if isinstance(value, bool) or not isinstance(value, types):
                raise ModelFileError(f"model card field {name} is {value!r}, not a number")
            if not (lo <= value <= hi):  # type: ignore[operator]  # also refuses NaN
                raise ModelFileError(f"model card field {name}={value!r} is outside {lo}..{hi}")
        arch = architecture(self.arch)
        if self.norm not in ("batch", "instance") or not isinstance(self.antialias, bool):
            raise ModelFileError(f"model card norm {self.norm!r} or antialias is malformed")
        if self.tile_size % arch.stride(self):
            raise ModelFileError(
                f"model card tile_size {self.tile_size} is not a multiple of the network's "
                f"stride ({arch.stride(self)}); the file is damaged or not a geomap-gan model"
            )
        if self.receptive_field:
            actual = arch.receptive_field(self)
            if self.receptive_field != actual:
                raise ModelFileError(
                    f"model card says receptive field {self.receptive_field} px, the "
                    f"architecture has {actual}; the card is damaged"
                )
        self._validate_strings()
        self._validate_metrics()
        q = self.input_quantiles
        if q and not (
            isinstance(q, list)
            and len(q) == 3
            and all(isinstance(r, list) and len(r) == 21 for r in q)
            and all(isinstance(v, (int, float)) and 0 <= v <= 255 for r in q for v in r)
        ):
            raise ModelFileError("model card input_quantiles is not 3 rows of 21 values 0..255")
        return self

    def _validate_strings(self) -> None:
        """The fields the renderer does not read for numbers must still hold what it implements:
        RGB bands in that order, x/127.5-1 scaling, one of the two pair directions; the free-text
        fields must be text of a bounded length."""
        for name, value, allowed in (
            ("band_order", self.band_order, BAND_ORDERS),
            ("normalisation", self.normalisation, NORMALISATIONS),
            ("direction", self.direction, DIRECTIONS),
        ):
            if not isinstance(value, str) or value not in allowed:
                raise ModelFileError(
                    f"model card field {name}={value!r} is not one the renderer implements "
                    f"({', '.join(allowed)})"
                )
        for name in ("name", "dataset", "command", "date", "git_commit"):
            value = getattr(self, name)
            if not isinstance(value, str) or len(value) > MAX_TEXT:
                raise ModelFileError(
                    f"model card field {name} is not text of at most {MAX_TEXT} characters"
                )

    def _validate_metrics(self) -> None:
        """``metrics``: a mapping of the evaluation's names to finite numbers in their range."""
        from geomap_gan.training.metrics import METRIC_KEYS

        if not isinstance(self.metrics, dict):
            raise ModelFileError(f"model card field metrics is {type(self.metrics).__name__}")
        for key, value in self.metrics.items():
            if key not in METRIC_KEYS:
                raise ModelFileError(
                    f"model card metrics has an unknown key {str(key)[:40]!r}; known: "
                    f"{', '.join(METRIC_KEYS)}"
                )
            lo, hi = METRIC_RANGES.get(key, (0.0, 1.0))
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ModelFileError(f"model card metric {key} is {value!r}, not a number")
            if not lo <= value <= hi:  # also refuses NaN
                raise ModelFileError(f"model card metric {key}={value!r} is outside {lo}..{hi}")

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> ModelCard:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ModelFileError(f"model card is not valid JSON ({exc})") from exc
        except RecursionError:
            raise ModelFileError("model card is nested too deeply to be a model card") from None
        if not isinstance(data, dict):
            raise ModelFileError("model card is not a JSON object")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - known
        if unknown:
            log.warning("ignoring unknown model card fields: %s", ", ".join(sorted(unknown)))
        try:
            return cls(**{k: v for k, v in data.items() if k in known})
        except TypeError as exc:
            raise ModelFileError(f"model card is malformed ({exc})") from exc


@dataclass
class MapModel:
    """A generator (in eval mode) and its card."""

    generator: UnetGenerator
    card: ModelCard


def build_generator(card: ModelCard) -> UnetGenerator:
    """The empty generator a (validated) card describes, built by its registered architecture."""
    return architecture(card.arch).build(card)  # type: ignore[return-value]


def save_model(model: MapModel, path: str | Path, half: bool = True) -> Path:
    """Write generator weights (fp16 by default: half the size, no measurable loss) and card."""
    from safetensors.torch import save_file

    state = {
        k: (v.half() if half and v.is_floating_point() else v).contiguous()
        for k, v in model.generator.state_dict().items()
    }
    path = Path(path)
    with files.atomic_output(path) as tmp:
        save_file(state, str(tmp), metadata={"format": FORMAT, CARD_KEY: model.card.to_json()})
        os.chmod(tmp, 0o666 & ~files.current_umask())  # safetensors writes 0600
    return path


def _read_safetensors(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    from safetensors import SafetensorError, safe_open
    from safetensors.torch import load_file

    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
        return load_file(str(path)), meta
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise ModelFileError(
            f"{path} is not a readable safetensors model file (truncated or corrupt?): {exc}"
        ) from exc


def _read_torch_state(path: Path) -> dict[str, torch.Tensor]:
    """A raw generator state dict saved with torch.save, loaded without unpickling code."""
    import pickle

    try:
        with warnings.catch_warnings():  # "Detected pickle protocol 4": the refusal says it all
            warnings.simplefilter("ignore")
            obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:  # torch's text advises an unsafe reload: never repeat it
        raise ModelFileError(
            f"{path} is not a plain tensor state dict: it holds Python objects, which a safe "
            "load refuses to run; use a .safetensors model file"
        ) from exc
    except Exception as exc:  # torch raises many types for foreign or damaged files
        raise ModelFileError(
            f"{path} is neither a safetensors model file nor a torch state dict "
            f"({type(exc).__name__}); check the path"
        ) from exc
    for key in ("G", "generator", "state_dict"):  # also accept our training checkpoints
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ModelFileError(f"{path} holds no tensor state dict")
    return obj


def _card_from_state(state: dict[str, torch.Tensor], path: Path) -> ModelCard:
    """A best-effort card for a raw state dict: ngf from the first conv, depth from key nesting."""
    first = state.get("model.model.0.weight")
    if first is None or first.ndim != 4:
        raise ModelFileError(f"{path} is not a pix2pix unet_256 state dict (no first conv)")
    depth = max(k.split(".").count("model") for k in state) - 1  # one nesting per U-Net level
    log.warning("%s has no model card: assuming GSD %.2f m/px and RGB input", path, ModelCard.gsd)
    return ModelCard(name=path.stem, ngf=int(first.shape[0]), num_downs=depth)


def load_model(
    path: MapModel | str | Path | None = None, device: str | torch.device = "cpu"
) -> MapModel:
    """Load and validate a model file (the bundled default when ``path`` is None); a loaded
    MapModel is returned as it is. The one way every command and library call resolves its
    model argument.

    Raises ModelFileError for a missing, truncated, foreign or tampered file: the tensor names and
    shapes must match exactly the architecture that the card describes.
    """
    if isinstance(path, MapModel):
        return path
    path = default_model_path() if path is None else Path(path)
    if not path.exists():
        raise ModelFileError(f"model file {path} does not exist; pass --model with a valid path")
    if not path.is_file():  # a folder, or a FIFO that would block the read
        raise ModelFileError(f"model file {path} is not a regular file; pass a .safetensors file")
    with path.open("rb") as fh:
        head = fh.read(8)
    if len(head) == 8 and 0 < int.from_bytes(head, "little") < 100_000_000:
        state, meta = _read_safetensors(path)
        if CARD_KEY not in meta:
            raise ModelFileError(
                f"{path} is a safetensors file but not a geomap-gan model (no card)"
            )
        card = ModelCard.from_json(meta[CARD_KEY])
    else:
        state = _read_torch_state(path)
        card = _card_from_state(state, path)
    card.validate()
    with torch.device("meta"):  # shapes only: nothing is allocated before they match the file
        expected = build_generator(card).state_dict()
    missing = sorted(set(expected) - set(state))
    extra = sorted(set(state) - set(expected))
    if missing or extra:
        raise ModelFileError(
            f"{path} does not match a {card.arch} ngf={card.ngf} generator "
            f"({len(missing)} missing, {len(extra)} unexpected tensors, e.g. "
            f"{(missing + extra)[0]}); the file is tampered or of another architecture"
        )
    for k, v in expected.items():
        if tuple(state[k].shape) != tuple(v.shape):
            raise ModelFileError(
                f"{path}: tensor {k} has shape {tuple(state[k].shape)}, expected {tuple(v.shape)}"
                "; the file is tampered or of another architecture"
            )
        if state[k].is_floating_point() and not torch.isfinite(state[k]).all():
            raise ModelFileError(f"{path}: tensor {k} holds NaN or infinite values")
    generator = build_generator(card)
    generator.load_state_dict({k: v.to(expected[k].dtype) for k, v in state.items()})
    generator.to(device).eval()
    return MapModel(generator, card)
