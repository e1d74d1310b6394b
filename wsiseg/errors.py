"""User-facing error types.

Every failure a user can cause (bad input, missing metadata, wrong checkpoint, full disk, ...) raises one
of these. The CLI prints ``str(error)`` on one line and exits with ``error.exit_code``; internal bugs may
raise anything else and keep their traceback. Messages name the caller's options as :func:`option` writes
them (the Python names in backticks), which the CLI turns into its flags.
"""

from __future__ import annotations


def option(name: str, flag: bool = False) -> str:
    r"""How a library message names one of the caller's options: ``name`` in backticks (``\`overwrite\```),
    ``name=True`` in backticks for a switch (``flag``). Messages never spell command-line flags; the CLI
    shows such names as its own flags (:func:`wsiseg.cli.as_flags`: ``--overwrite``, ``--slide-mpp``)."""
    return f"`{name}=True`" if flag else f"`{name}`"


def one_line(message: object) -> str:
    """``message`` as a single line (runs of whitespace, newlines included, become one space)."""
    return " ".join(str(message).split())


class WsisegError(Exception):
    """Base class of all user-facing errors; the message must fit on one line."""

    exit_code: int = 1


class SlideError(WsisegError):
    """A slide is missing, unreadable, corrupt or of an unsupported format."""


class MissingMppError(SlideError):
    """A slide records no microns-per-pixel and the caller gave none (``slide_mpp``)."""


class CheckpointError(WsisegError):
    """A checkpoint is missing, truncated, of the wrong kind, or its keys/shapes do not match."""


class ClassMismatchError(CheckpointError):
    """The number or names of classes do not match between a checkpoint, a data set or an output, or a class
    name QuPath cannot use (empty, a line break, a colon)."""


class DatasetError(WsisegError):
    """A training/evaluation data set is missing files or does not follow the documented layout."""


class GeoJSONError(DatasetError):
    """A GeoJSON file (ROI or ground truth) is missing, not JSON, not GeoJSON, or holds no polygons."""


class OutputExistsError(WsisegError):
    """An output exists and is finished; pass ``--overwrite`` to replace it."""


class OutputError(WsisegError):
    """An output cannot be written (disk full, permission denied, incompatible existing output)."""


class ConfigError(WsisegError):
    """A recipe/config file or a combination of options is invalid."""
