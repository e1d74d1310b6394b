"""The resume journal: a small JSON file replaced atomically after each committed checkpoint.

It lives in ``<out>/.wsiseg-work/journal.json`` beside the stitcher's saved accumulators and holds the
run's fingerprint (slide, model, parameters: what must match to resume), the stitcher state (grid cursor and
accumulator files) and the timings so far. The work directory is removed when the output is finished.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from wsiseg.io.atomic import write_text

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
        """Replace the journal with ``data`` atomically and durably (a crash leaves the old or the new)."""
        self.dir.mkdir(parents=True, exist_ok=True)
        write_text(self.path, json.dumps(data), fsync=True)

    def remove(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)
