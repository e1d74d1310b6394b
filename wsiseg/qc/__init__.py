"""Quality control between slide reading and the tile grid: what of a slide is analysable tissue. Torch-free.

Detected: tissue vs glass and pen/marker ink on a thumbnail (:func:`assess_slide` -> :class:`QCMap`), and
out-of-focus tissue on the tiles a run reads (:class:`FocusGrid`). Under ``QCMode.DEFAULT`` artifacts are
"not analysed", like glass; ``REPORT`` detects and reports them but analyses everything; ``OFF`` detects
tissue only. Settings: :class:`QCSettings` (``wsiseg/qc/default.yaml`` documents every value).
"""

from wsiseg.qc.assess import QCAreas, QCMap, assess_slide, assess_thumbnail
from wsiseg.qc.colour import InkColourModel
from wsiseg.qc.focus import FocusGrid, block_size
from wsiseg.qc.ink import detect_ink
from wsiseg.qc.labels import ARTIFACTS, QCLabel
from wsiseg.qc.settings import QCMode, QCSettings

__all__ = [
    "ARTIFACTS",
    "FocusGrid",
    "InkColourModel",
    "QCAreas",
    "QCLabel",
    "QCMap",
    "QCMode",
    "QCSettings",
    "assess_slide",
    "assess_thumbnail",
    "block_size",
    "detect_ink",
]
