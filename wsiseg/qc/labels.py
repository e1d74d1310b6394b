"""The QC label values: what each pixel of a QC label image (``labels/qc``, ``*.qc.png``) is."""

from __future__ import annotations

import enum


class QCLabel(enum.IntEnum):
    """A QC label value; :attr:`excluded` ones are not analysed (under ``--qc default``)."""

    BACKGROUND = 0  #: glass, no tissue
    TISSUE = 1  #: analysable tissue
    PEN = 2  #: pen or marker ink (over tissue or glass)
    BLUR = 3  #: tissue out of focus at the analysis resolution

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
        return f"Artifact: {self.title}" if self.excluded else self.title.capitalize()

    @property
    def rgba(self) -> tuple[int, int, int, int]:
        """Display colour (transparent background)."""
        return _COLOURS[self]


#: The labels that are artifacts (excluded from analysis, exported for review).
ARTIFACTS = (QCLabel.PEN, QCLabel.BLUR)

_COLOURS: dict[QCLabel, tuple[int, int, int, int]] = {
    QCLabel.BACKGROUND: (0, 0, 0, 0),
    QCLabel.TISSUE: (90, 170, 90, 255),
    QCLabel.PEN: (30, 110, 255, 255),
    QCLabel.BLUR: (255, 170, 0, 255),
}
