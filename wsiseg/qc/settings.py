"""QC settings: :class:`QCSettings`, read from a small YAML file over the documented defaults
(``wsiseg/qc/default.yaml``, which a test keeps equal to the defaults here), checked once when read."""

from __future__ import annotations

import dataclasses
import enum
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from wsiseg.errors import ConfigError, one_line

#: The documented default settings file (package data).
DEFAULT_SETTINGS = Path(__file__).with_name("default.yaml")


class QCMode(str, enum.Enum):
    """What QC does to a segmentation: ``default`` detects artifacts and leaves them out of the analysis,
    ``report`` detects and reports them but analyses everything, ``off`` does neither (tissue only)."""

    DEFAULT = "default"
    REPORT = "report"
    OFF = "off"


@dataclass(frozen=True)
class TissueSettings:
    """Tissue vs glass on a thumbnail (:func:`wsiseg.slide.detect_tissue`)."""

    mpp: float = 8.0
    min_area_um2: float = 20_000.0
    smooth_um: float = 16.0
    max_hole_um2: float = 50_000.0
    min_saturation: float = 0.07


@dataclass(frozen=True)
class PenSettings:
    """Pen ink on the thumbnail (:func:`wsiseg.qc.ink.detect_ink`)."""

    enabled: bool = True
    adapt: bool = True
    smooth_um: float = 8.0
    min_area_um2: float = 5_000.0
    strong_log_ratio: float = 5.0
    strong_share: float = 0.25
    red_min_density: float = 1.4
    density_window_um: float = 24.0
    grow_um: float = 40.0
    grow_log_ratio: float = 0.0
    faint_density: float = 0.2
    max_hole_um2: float = 2_000.0
    margin_um: float = 8.0


@dataclass(frozen=True)
class BlurSettings:
    """Out-of-focus blocks of the tiles read (:mod:`wsiseg.qc.focus`)."""

    enabled: bool = True
    block_um: float = 32.0
    max_ratio: float = 0.6
    min_tissue: float = 0.25


@dataclass(frozen=True)
class QCSettings:
    """Everything QC detects and how (see ``wsiseg/qc/default.yaml`` for what each value means)."""

    tissue: TissueSettings = field(default_factory=TissueSettings)
    pen: PenSettings = field(default_factory=PenSettings)
    blur: BlurSettings = field(default_factory=BlurSettings)
    warn_excluded_share: float = 0.5

    @classmethod
    def load(cls, path: str | Path | None = None) -> QCSettings:
        """The settings of ``path`` (a YAML file of overrides; keys left out keep their defaults), or the
        defaults. Unknown keys and values of the wrong kind are one-line :class:`ConfigError`\\ s."""
        if path is None:
            return cls()
        path = Path(path)
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8"))
        except OSError as exc:
            raise ConfigError(f"cannot read QC settings {path}: {exc.strerror or exc}") from None
        except yaml.YAMLError as exc:
            raise ConfigError(f"QC settings {path} are not valid YAML: {one_line(exc)}") from None
        return cls.from_dict(data or {}, str(path))

    @classmethod
    def from_dict(cls, data: Any, source: str = "QC settings") -> QCSettings:
        """Settings from a nested dict of overrides (see :meth:`load`)."""
        settings: QCSettings = _build(cls, data, source, "")
        settings.check(source)
        return settings

    def to_dict(self) -> dict[str, Any]:
        """JSON-able nested dict (what outputs record)."""
        return dataclasses.asdict(self)

    def check(self, source: str = "QC settings") -> None:
        """Raise :class:`ConfigError` on values outside their ranges."""
        positive = {"tissue.mpp": self.tissue.mpp, "tissue.smooth_um": self.tissue.smooth_um,
                    "pen.min_area_um2": self.pen.min_area_um2, "blur.block_um": self.blur.block_um,
                    "pen.density_window_um": self.pen.density_window_um}
        shares = {"blur.min_tissue": self.blur.min_tissue, "pen.strong_share": self.pen.strong_share,
                  "warn_excluded_share": self.warn_excluded_share, "blur.max_ratio": self.blur.max_ratio,
                  "tissue.min_saturation": self.tissue.min_saturation}
        for name, value in positive.items():
            if not (math.isfinite(value) and value > 0):
                raise ConfigError(f"{source}: {name} must be positive, got {value}")
        for name, value in shares.items():
            if not (math.isfinite(value) and 0 <= value <= 1):
                raise ConfigError(f"{source}: {name} must be in 0..1, got {value}")


def _build(kind: type[Any], data: Any, source: str, prefix: str) -> Any:
    """An instance of the frozen dataclass ``kind`` from ``data`` (a dict of its fields' overrides)."""
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: {prefix.rstrip('.') or 'the file'} must be a mapping of settings")
    fields = {f.name: f for f in dataclasses.fields(kind)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        known = ", ".join(prefix + name for name in fields)
        raise ConfigError(f"{source}: unknown setting {prefix}{unknown[0]} (known: {known})")
    values: dict[str, Any] = {}
    for name, value in data.items():
        default = getattr(kind(), name)
        if dataclasses.is_dataclass(default):
            values[name] = _build(type(default), value, source, f"{prefix}{name}.")
        elif isinstance(default, bool):
            if not isinstance(value, bool):
                raise ConfigError(f"{source}: {prefix}{name} must be true or false, got {value!r}")
            values[name] = value
        else:
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ConfigError(f"{source}: {prefix}{name} must be a number, got {value!r}")
            values[name] = float(value)
    return kind(**values)
