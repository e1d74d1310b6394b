"""The class list: names, display colours and the ignore value, carried by data sets, checkpoints and outputs.

Label maps inside wsiseg hold the class *index* (0..k-1) of a :class:`ClassList`; pixels that are not
labelled carry :attr:`ClassList.ignore_index`. Outputs written for viewers (OME-Zarr ``labels/``, GeoJSON)
use ``index + 1`` so that 0 can mean "not analysed" (see :mod:`wsiseg.infer`).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from wsiseg.errors import ClassMismatchError

RGB = tuple[int, int, int]

#: Distinct default colours (RGB) for classes that come without one.
DEFAULT_COLORS: tuple[RGB, ...] = (
    (230, 230, 230),
    (200, 0, 0),
    (150, 200, 150),
    (30, 30, 200),
    (255, 200, 0),
    (160, 32, 240),
    (0, 200, 200),
    (255, 105, 180),
    (139, 69, 19),
    (0, 128, 0),
)


def check_class_name(name: str) -> str:
    """``name`` if QuPath can use it as a classification, else :class:`ClassMismatchError`: not empty, no
    line break, no ``:`` (QuPath reads ``a: b`` as class ``a`` with sub-class ``b``)."""
    if not isinstance(name, str) or not name.strip():
        raise ClassMismatchError(f"a class name must not be empty, got {name!r}")
    if "\n" in name or "\r" in name:
        raise ClassMismatchError(f"class name {name!r} holds a line break; QuPath classifications cannot")
    if ":" in name:
        raise ClassMismatchError(f"class name {name!r} holds ':', which QuPath reads as a sub-class "
                                 "separator; rename it")
    return name


@dataclass(frozen=True)
class TissueClass:
    """One semantic class: a name and an RGB display colour (0-255 each)."""

    name: str
    color: RGB


@dataclass(frozen=True)
class ClassList:
    """An ordered list of classes; position in the list is the class index used in label maps.

    ``ignore_index`` is the label value of unlabelled pixels (ignored by losses and metrics).
    """

    classes: tuple[TissueClass, ...]
    ignore_index: int = 255

    def __post_init__(self) -> None:
        names = [c.name for c in self.classes]
        if not names:
            raise ClassMismatchError("a class list needs at least one class")
        for name in names:
            check_class_name(name)
        if len(set(names)) != len(names):
            raise ClassMismatchError(f"class names must be unique, got {names}")
        if 0 <= self.ignore_index < len(names):
            raise ClassMismatchError(
                f"ignore index {self.ignore_index} collides with class index range 0..{len(names) - 1}"
            )

    @classmethod
    def from_names(cls, names: Sequence[str], colors: Sequence[RGB] | None = None,
                   ignore_index: int = 255) -> ClassList:
        """Build from names, taking :data:`DEFAULT_COLORS` where no colours are given."""
        if colors is None:
            colors = [DEFAULT_COLORS[i % len(DEFAULT_COLORS)] for i in range(len(names))]
        if len(colors) != len(names):
            raise ClassMismatchError(f"{len(names)} class names but {len(colors)} colours")
        return cls(
            tuple(TissueClass(str(n), (int(c[0]), int(c[1]), int(c[2])))
                  for n, c in zip(names, colors, strict=True)),
            ignore_index,
        )

    @property
    def names(self) -> list[str]:
        return [c.name for c in self.classes]

    @property
    def colors(self) -> list[RGB]:
        return [c.color for c in self.classes]

    def index(self, name: str) -> int:
        """Class index of ``name``; raises :class:`ClassMismatchError` when absent."""
        for i, c in enumerate(self.classes):
            if c.name == name:
                return i
        raise ClassMismatchError(f"unknown class {name!r}; known classes: {', '.join(self.names)}")

    def require_count(self, n: int, owner: str) -> None:
        """Raise :class:`ClassMismatchError` unless this list has ``n`` classes, those of ``owner`` (e.g.
        "the model", "model.wsiseg"): ``"<owner> predicts n classes but k were given (names)"``."""
        if len(self) != n:
            raise ClassMismatchError(f"{owner} predicts {n} classes but {len(self)} were given "
                                     f"({', '.join(self.names)})")

    def __len__(self) -> int:
        return len(self.classes)

    def __iter__(self) -> Iterator[TissueClass]:
        return iter(self.classes)

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form (used in checkpoints and output metadata)."""
        return {
            "classes": [{"name": c.name, "color": list(c.color)} for c in self.classes],
            "ignore_index": self.ignore_index,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ClassList:
        try:
            return cls.from_names(
                [c["name"] for c in data["classes"]],
                [tuple(c["color"]) for c in data["classes"]],  # type: ignore[misc]
                int(data.get("ignore_index", 255)),
            )
        except (KeyError, TypeError, IndexError) as exc:
            raise ClassMismatchError(f"malformed class list: {exc}") from exc
