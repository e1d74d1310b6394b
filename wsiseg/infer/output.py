"""The output of one run on disk: whether it is new, resumed or refused, and where its preview goes."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from wsiseg.errors import OutputError, OutputExistsError, option
from wsiseg.infer.journal import Journal
from wsiseg.io.omezarr import read_output_metadata
from wsiseg.io.output_metadata import OutputMetadata

_OVERWRITE = option("overwrite", flag=True)


def preview_path(out: Path) -> Path:
    """Where the preview PNG of output ``out`` goes: ``slide.zarr`` -> ``slide.preview.png`` beside it."""
    return out.with_name(out.stem + ".preview.png")


def _is_store(path: Path) -> bool:
    return any((path / name).exists() for name in (".zgroup", ".zattrs", "zarr.json"))


def _remove(out: Path) -> None:
    if out.is_dir() and not _is_store(out) and any(out.iterdir()):
        raise OutputError(f"{out} exists and is not a zarr store; refusing to delete it, choose another "
                          f"{option('out')}")
    if out.is_dir():
        shutil.rmtree(out)
    elif out.exists():
        out.unlink()


def prepare(out: Path, journal: Journal, fingerprint: dict[str, Any],
            overwrite: bool) -> dict[str, Any] | None:
    """Get ``out`` ready for a run: the stitcher state to resume from, or None for a new output (an old one
    is removed first when ``overwrite`` or when it never committed anything).

    Raises OutputExistsError for a finished output without ``overwrite``, OutputError for an unfinished run
    of other settings, or a directory that is not a resumable wsiseg output.
    """
    state: dict[str, Any] | None = None
    if out.exists():
        info = existing_metadata(out, overwrite)
        previous = journal.load()
        if info is not None and info.finished is not None and not overwrite:
            journal.remove()  # a run killed between marking the output finished and removing it
            raise OutputExistsError(f"{out} is a finished segmentation; pass {_OVERWRITE} to replace it")
        if not overwrite and previous is not None and previous.get("fingerprint") != fingerprint:
            raise OutputError(f"{out} holds an unfinished run with other settings (slide, model or "
                              f"parameters); pass {_OVERWRITE} to start again")
        # a wsiseg store without a journal was killed before its first commit: start it again
        restartable = info is not None or not (out.is_dir() and any(out.iterdir()))
        if not overwrite and previous is None and not restartable:
            raise OutputError(f"{out} exists and is not a resumable wsiseg run; pass {_OVERWRITE} "
                              f"or choose another {option('out')}")
        if overwrite or previous is None:
            _remove(out)
        else:
            assert previous is not None
            state = previous["stitcher"]
    out.parent.mkdir(parents=True, exist_ok=True)
    return state


def existing_metadata(out: Path, overwrite: bool) -> OutputMetadata | None:
    """The metadata of an existing output at ``out`` (None: no output, or none written yet); unreadable
    metadata is an OutputError unless the output is to be replaced anyway (``overwrite``)."""
    try:
        return read_output_metadata(out)
    except OutputError:
        if overwrite:
            return None
        raise
