"""Per-epoch training records: ``metrics.jsonl`` (a JSON object a line), ``metrics.csv``, ``curves.png``."""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any


class MetricsLog:
    """Writes the history of epoch records into ``out_dir``; rewriting all three files keeps them in step."""

    def __init__(self, out_dir: Path) -> None:
        self.out_dir = Path(out_dir)
        self.jsonl = self.out_dir / "metrics.jsonl"
        self.csv = self.out_dir / "metrics.csv"
        self.png = self.out_dir / "curves.png"

    def write(self, history: Sequence[dict[str, Any]]) -> None:
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.jsonl.write_text("".join(json.dumps(_clean(r)) + "\n" for r in history))
        keys: list[str] = []
        for r in history:
            keys.extend(k for k in r if k not in keys)
        with self.csv.open("w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=keys)
            writer.writeheader()
            for r in history:
                writer.writerow(_clean(r))
        self._plot(history)

    def _plot(self, history: Sequence[dict[str, Any]]) -> None:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        epochs = [r["epoch"] for r in history]
        fig, (ax_loss, ax_score) = plt.subplots(1, 2, figsize=(10, 4))
        for key, label in (("train_loss", "train loss"), ("val_loss", "validation loss")):
            ys = [r.get(key) for r in history]
            if any(y is not None for y in ys):
                ax_loss.plot(epochs, [math.nan if y is None else y for y in ys], marker="o", label=label)
        ax_loss.set_xlabel("epoch")
        ax_loss.set_ylabel("loss (sum over classes)")
        if ax_loss.lines:
            ax_loss.legend()
        for key, label in (("val_micro_dice", "micro Dice"), ("val_micro_iou", "micro IoU"),
                           ("val_macro_dice", "macro Dice")):
            ys = [r.get(key) for r in history]
            if any(y is not None for y in ys):
                ax_score.plot(epochs, [math.nan if y is None else y for y in ys], marker="o", label=label)
        ax_score.set_xlabel("epoch")
        ax_score.set_ylabel("validation score")
        ax_score.set_ylim(0, 1)
        if ax_score.lines:
            ax_score.legend()
        fig.tight_layout()
        fig.savefig(self.png, dpi=100)
        plt.close(fig)


def _clean(record: dict[str, Any]) -> dict[str, Any]:
    return {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in record.items()}
