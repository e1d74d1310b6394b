"""The paper's vanilla-SAM baselines (Table 1): SAM with one dot per gland, with and without the paper's
post-processing, and SAM's "segment everything", scored by SAM-Path's own evaluation code.

One module per concern (imported lazily, so ``wsiseg.baselines.compare`` stays torch-free):

- :mod:`.instances`: ground-truth instances of a patch and the dot prompt of each (no torch).
- :mod:`.postprocess`: the paper's rule (drop masks covering > 1/2 of the image) and masks -> label.
- :mod:`.segmenter`: the :class:`PointPromptSegmenter` and :class:`MaskGenerator` protocols.
- :mod:`.sam`: vanilla SAM builders (:data:`VANILLA_SAM`: ``vit_b|vit_l|vit_h`` from official files,
  ``tiny`` for tests), :class:`SamPointSegmenter`, :class:`SamEverythingSegmenter`.
- :mod:`.evaluate`: :func:`evaluate_sam_points`, :func:`evaluate_sam_everything`.
- :mod:`.compare`: the side-by-side table of report files (Markdown, JSON).
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY: dict[str, str] = {
    "prompt_points": "wsiseg.baselines.instances",
    "ground_truth_instances": "wsiseg.baselines.instances",
    "drop_oversized": "wsiseg.baselines.postprocess",
    "oversized": "wsiseg.baselines.postprocess",
    "PointPromptSegmenter": "wsiseg.baselines.segmenter",
    "MaskGenerator": "wsiseg.baselines.segmenter",
    "VANILLA_SAM": "wsiseg.baselines.sam",
    "load_vanilla_sam": "wsiseg.baselines.sam",
    "SamPointSegmenter": "wsiseg.baselines.sam",
    "SamEverythingSegmenter": "wsiseg.baselines.sam",
    "evaluate_sam_points": "wsiseg.baselines.evaluate",
    "evaluate_sam_everything": "wsiseg.baselines.evaluate",
    "compare": "wsiseg.baselines.compare",
}

__all__ = list(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'wsiseg.baselines' has no attribute {name!r}")
