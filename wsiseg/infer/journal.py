"""The resume journal: a small JSON file replaced atomically (write + rename) after each committed batch.

It lives in ``<out>/.wsiseg-work/journal.json`` beside the stitcher's spilled accumulators and holds the
run's fingerprint (slide, model, parameters: what must match to resume), the stitcher state (grid cursor and
accumulator files) and the timings so far. The work directory is removed when the output is finished.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

WORK_DIR = ".wsiseg-work"
_JOURNAL = "journal.json"


class Journal:
    """Read and atomically replace ``<store>/.wsiseg-work/journal.json``."""

    def __init__(self, store: Path) -> None:
        self.dir = Path(store) / WORK_DIR
        self.path = self.dir / _JOURNAL

    def load(self) -> dict[str, Any] | None:
        """The last committed journal, or None when there is none (or it is unreadable)."""
        try:
            data = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return None
        return data if isinstance(data, dict) else None

    def commit(self, data: dict[str, Any]) -> None:
        """Replace the journal with ``data`` atomically (a crash leaves either the old or the new one)."""
        self.dir.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        with open(tmp, "w") as fh:
            json.dump(data, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, self.path)

    def remove(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)
