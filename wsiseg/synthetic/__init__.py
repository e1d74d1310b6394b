"""Test data with exact ground truth (no downloads): synthetic H&E-like slides and patch data sets, for
tests, benchmarks and the demo. Built on the slide reader; nothing in :mod:`wsiseg.slide` depends on it.
"""

from wsiseg.synthetic.patches import DEMO_MPP, DEMO_PATCH, SLIDE_MPP, write_synthetic_patch_folder
from wsiseg.synthetic.slides import SYNTHETIC_CLASSES, SlideLayout, SyntheticTruth, write_synthetic_slide

__all__ = [
    "DEMO_MPP",
    "DEMO_PATCH",
    "SLIDE_MPP",
    "SYNTHETIC_CLASSES",
    "SlideLayout",
    "SyntheticTruth",
    "write_synthetic_patch_folder",
    "write_synthetic_slide",
]
