"""The QC label values: what each pixel of a QC label image (``labels/qc``, ``*.qc.png``) is."""

from __future__ import annotations

import enum


class QCLabel(enum.IntEnum):
    """A QC label value; :attr:`excluded` ones are not analysed (under ``--qc default``)."""

    BACKGROUND = 0  #: glass, no tissue
    TISSUE = 1  #: analysable tissue
    PEN = 2  #: pen or marker ink (over tissue or glass)
    BLUR = 3  #: tissue out of focus at the analysis resolution
    OTHER = 4  #: any other artifact a reviewer drew (``Artifact: fold``, ``Artifact`` ...)

    @property
    def title(self) -> str:
        """The lower-case name written into metadata and tables (``pen``)."""
        return self.name.lower()

    @property
    def excluded(self) -> bool:
        """Is tissue with this label left out of the analysis?"""
        return self in ARTIFACTS

    @property
    def qupath_class(self) -> str:
        """QuPath classification of an exported artifact (``Artifact: pen``: a derived class of
        ``Artifact``, so QuPath groups every artifact under one class)."""
        return f"{ARTIFACT_CLASS}: {self.title}" if self.excluded else self.title.capitalize()

    @property
    def rgba(self) -> tuple[int, int, int, int]:
        """Display colour (transparent background)."""
        return _COLOURS[self]


#: The labels that are artifacts (excluded from analysis, exported for review).
ARTIFACTS = (QCLabel.PEN, QCLabel.BLUR, QCLabel.OTHER)

_COLOURS: dict[QCLabel, tuple[int, int, int, int]] = {
    QCLabel.BACKGROUND: (0, 0, 0, 0),
    QCLabel.TISSUE: (90, 170, 90, 255),
    QCLabel.PEN: (30, 110, 255, 255),
    QCLabel.BLUR: (255, 170, 0, 255),
    QCLabel.OTHER: (200, 40, 160, 255),
}


#: The QuPath classification of artifacts without a sub-class, and the prefix of those with one.
ARTIFACT_CLASS = "Artifact"


def label_of_classification(name: str | None) -> QCLabel | None:
    """The QC label of a QuPath classification read back from GeoJSON: ``Artifact: pen`` -> PEN, any other
    ``Artifact`` or ``Artifact: ...`` -> OTHER, anything else (a region of interest) -> None."""
    if name is None:
        return None
    head, _, sub = (part.strip() for part in name.partition(":"))
    if head.lower() != ARTIFACT_CLASS.lower():
        return None
    for label in ARTIFACTS:
        if sub.lower() == label.title:
            return label
    return QCLabel.OTHER
