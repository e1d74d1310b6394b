"""Training recipes: one flat set of keys, read from YAML (``pipelines/*.yaml``) and overridden by flags.

Unknown keys and wrongly typed values raise :class:`~wsiseg.errors.ConfigError` with a one-line message.
"""

from __future__ import annotations

import dataclasses
import enum
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from wsiseg.errors import ConfigError
from wsiseg.train.transforms import Augment, AugmentConfig


class ScheduleUnit(str, enum.Enum):
    """Unit of ``warmup`` and ``milestones``."""

    EPOCH = "epoch"
    STEP = "step"


class Amp(str, enum.Enum):
    """Mixed precision: ``auto`` = bf16 on GPUs that support it, else fp16 on CUDA, off on the CPU."""

    AUTO = "auto"
    BF16 = "bf16"
    FP16 = "fp16"
    OFF = "off"


@dataclass
class TrainConfig:
    """Every key of a training recipe (defaults: the paper's BCSS set-up with a tiny model).

    Units: ``mpp``/``source_mpp`` in um/px; ``patch_size`` in pixels at ``mpp``; ``warmup`` and ``milestones``
    in ``schedule_unit``; ``batch_size`` images per forward pass (effective batch = ``batch_size *
    accumulate``).
    """

    # data
    dataset: str = "folder"
    data_dir: str | None = None
    class_map: str | None = None  # folder data sets: the class-map file
    mapping: str | None = None  # bcss: class grouping file
    split_file: str | None = None  # bcss/crag: an img_id,fold CSV (the reference code's folds)
    whole_image: bool = False  # crag: one sample per image, resized to patch_size (the paper's set-up)
    patch_size: int = 1024
    mpp: float | None = None
    source_mpp: float | None = None
    val_fraction: float = 0.2
    # model
    preset: str = "tiny"
    variant: str | None = None
    pathology_encoder: str | None = None  # replaces the preset's Fp (e.g. uni, virchow2, h_optimus_0)
    token_grid: str = "resize_input"  # patch-14 Fp: resize_input | resample_features (see TokenGrid)
    input_size: int | None = None
    train_encoders: bool = False
    sam_checkpoint: str | None = None
    hipt_checkpoint: str | None = None
    # optimisation
    epochs: int = 32
    batch_size: int = 12
    accumulate: int = 2
    lr: float = 1e-4
    weight_decay: float = 1e-2
    warmup: float = 1.0
    milestones: list[float] = field(default_factory=lambda: [25.0, 29.0])
    lr_decay: float = 0.1
    schedule_unit: ScheduleUnit = ScheduleUnit.EPOCH
    alpha: float = 0.25
    beta: float = 0.0625
    augment: list[str] = field(default_factory=lambda: [a.value for a in Augment])
    crop_scale: list[float] = field(default_factory=lambda: [0.08, 1.0])
    color_jitter: float = 0.1
    # run
    seed: int = 0
    device: str = "auto"
    amp: Amp = Amp.AUTO
    num_workers: int = 2
    out_dir: str = "runs/wsiseg"
    cache_embeddings: str | None = None
    cache_batch_size: int = 8

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Range checks; raises ConfigError."""
        try:
            self.schedule_unit = ScheduleUnit(self.schedule_unit)
            self.amp = Amp(self.amp)
            for a in self.augment:
                Augment(a)
        except ValueError as exc:
            raise ConfigError(f"invalid config value: {exc}") from exc
        checks = [
            (self.epochs >= 1, "epochs must be >= 1"),
            (self.batch_size >= 1, "batch_size must be >= 1"),
            (self.accumulate >= 1, "accumulate must be >= 1"),
            (self.lr > 0, "lr must be > 0"),
            (0.0 <= self.alpha <= 1.0, "alpha must be in [0, 1]"),
            (self.beta >= 0.0, "beta must be >= 0"),
            (self.patch_size >= 16, "patch_size must be >= 16"),
            (0.0 <= self.val_fraction < 1.0, "val_fraction must be in [0, 1)"),
            (self.warmup >= 0, "warmup must be >= 0"),
            (len(self.crop_scale) == 2 and 0 < self.crop_scale[0] <= self.crop_scale[1] <= 1,
             "crop_scale must be [min, max] within (0, 1]"),
            (self.num_workers >= 0, "num_workers must be >= 0"),
            (not (self.cache_embeddings and self.train_encoders),
             "cache_embeddings needs frozen encoders (train_encoders: false)"),
        ]
        for ok, message in checks:
            if not ok:
                raise ConfigError(message)

    @property
    def augment_config(self) -> AugmentConfig:
        return AugmentConfig.of(self.augment, (self.crop_scale[0], self.crop_scale[1]), self.color_jitter)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["schedule_unit"] = self.schedule_unit.value
        d["amp"] = self.amp.value
        return d

    @classmethod
    def keys(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls)]

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "config") -> TrainConfig:
        """Build from a mapping; unknown keys and mistyped values raise ConfigError."""
        unknown = sorted(set(data) - set(cls.keys()))
        if unknown:
            raise ConfigError(f"{source}: unknown key(s) {', '.join(unknown)}; "
                              f"known keys: {', '.join(cls.keys())}")
        hints = typing.get_type_hints(cls)
        values = {k: _coerce(k, v, hints[k], source) for k, v in data.items()}
        return cls(**values)

    @classmethod
    def from_file(cls, path: Path | str, overrides: dict[str, Any] | None = None) -> TrainConfig:
        """A YAML recipe, then ``overrides`` (e.g. command-line flags; ``None`` values are skipped)."""
        path = Path(path)
        try:
            data = yaml.safe_load(path.read_text()) or {}
        except OSError as exc:
            raise ConfigError(f"cannot read config {path}: {exc.strerror or exc}") from exc
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path} is not valid YAML: {str(exc).splitlines()[0]}") from exc
        if not isinstance(data, dict):
            raise ConfigError(f"{path} must hold a mapping of keys to values")
        cls.from_dict(data, str(path))  # report unknown keys against the file itself
        for key in ("class_map", "mapping"):  # files named in a recipe are relative to the recipe
            value = data.get(key)
            if isinstance(value, str) and not Path(value).is_absolute() and (path.parent / value).is_file():
                data[key] = str(path.parent / value)
        merged = {**data, **{k: v for k, v in (overrides or {}).items() if v is not None}}
        return cls.from_dict(merged, str(path))


def _coerce(key: str, value: Any, hint: Any, source: str) -> Any:
    """Check ``value`` against the annotation ``hint`` (ints accepted for floats, enums by value)."""
    args = typing.get_args(hint)
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _coerce(key, value, inner[0], source)
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"{source}: {key} must be a list, got {value!r}")
        return [_coerce(key, v, args[0], source) for v in value]
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        try:
            return hint(value)
        except ValueError as exc:
            choices = ", ".join(str(m.value) for m in hint)
            raise ConfigError(f"{source}: {key} must be one of {choices}, got {value!r}") from exc
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{source}: {key} must be true or false, got {value!r}")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{source}: {key} must be a number, got {value!r}")
        return float(value)
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{source}: {key} must be an integer, got {value!r}")
        return value
    if hint is str:
        if not isinstance(value, str | Path):
            raise ConfigError(f"{source}: {key} must be a string, got {value!r}")
        return str(value)
    return value
