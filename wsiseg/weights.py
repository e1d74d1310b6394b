"""The published pretrained weight files the full-size encoder presets start from: one table of names.

Torch-free (floor 2): the model's loaders (:mod:`wsiseg.model.official`), the user's registry and the
vanilla-SAM baselines name these files from here. Tiny presets have none: they are random by design.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum


class WeightsKind(str, Enum):
    """Which frozen encoder a base weights file feeds: Segment Anything's (Fs) or HIPT's (Fp)."""

    SAM = "sam"
    HIPT = "hipt"


#: the kinds as the strings a checkpoint's ``base`` record and the registry file use
KINDS: tuple[str, ...] = tuple(k.value for k in WeightsKind)


@dataclass(frozen=True)
class OfficialWeights:
    """A published pretrained weights file: ``kind`` "sam"|"hipt", the ``encoder`` preset it is meant for
    (:mod:`wsiseg.model.presets`), its published ``file`` name, a ``title`` for messages and the ``url``
    it is downloaded from."""

    kind: str
    encoder: str
    file: str
    title: str
    url: str


_SAM_URL = "https://dl.fbaipublicfiles.com/segment_anything/"
_HIPT_URL = "https://github.com/mahmoodlab/HIPT/raw/master/HIPT_4K/Checkpoints/"


def _published(kind: str, encoder: str, file: str, title: str, url: str) -> OfficialWeights:
    return OfficialWeights(kind, encoder, file, title, url + file)


#: encoder preset -> the official file it loads
OFFICIAL_WEIGHTS: dict[str, OfficialWeights] = {w.encoder: w for w in (
    _published("sam", "sam_vit_b", "sam_vit_b_01ec64.pth", "SAM ViT-B", _SAM_URL),
    _published("sam", "sam_vit_l", "sam_vit_l_0b3195.pth", "SAM ViT-L", _SAM_URL),
    _published("sam", "sam_vit_h", "sam_vit_h_4b8939.pth", "SAM ViT-H", _SAM_URL),
    _published("hipt", "hipt_vit_s", "vit256_small_dino.pth", "HIPT ViT-S/16", _HIPT_URL),
)}


def sam_weights_file(model: str) -> str:
    """The official file name of segment-anything's ``model`` (``vit_b``, ``vit_l``, ``vit_h``)."""
    return OFFICIAL_WEIGHTS[f"sam_{model}"].file
