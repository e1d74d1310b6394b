"""The published pretrained weight files the full-size encoder presets start from: one table of names.

Torch-free (floor 2): the model's loaders (:mod:`wsiseg.model.official`), the user's registry and the
vanilla-SAM baselines name these files from here. Tiny presets have none: they are random by design.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum


class WeightsKind(str, Enum):
    """Which frozen encoder a base weights file feeds: Segment Anything's (Fs) or the pathology encoder
    (Fp: HIPT's ViT or a pathology foundation model; the kind keeps HIPT's name, the paper's Fp)."""

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
    licence: str = ""
    sha256: str = ""  # where the publisher shows it (Hugging Face file pages), else ""


_SAM_URL = "https://dl.fbaipublicfiles.com/segment_anything/"
_HIPT_URL = "https://github.com/mahmoodlab/HIPT/raw/master/HIPT_4K/Checkpoints/"


_HF = "https://huggingface.co/"


def _published(kind: str, encoder: str, file: str, title: str, url: str, licence: str = "",
               sha256: str = "") -> OfficialWeights:
    return OfficialWeights(kind, encoder, file, title, url + file, licence, sha256)


def _hugging_face(encoder: str, repo: str, file: str, title: str, licence: str,
                  sha256: str = "") -> OfficialWeights:
    """A pathology foundation model's file on its Hugging Face model card (most are gated: log in and
    accept the terms on the card first)."""
    return _published("hipt", encoder, file, title, f"{_HF}{repo}/resolve/main/", licence, sha256)


#: encoder preset -> the official file it loads
OFFICIAL_WEIGHTS: dict[str, OfficialWeights] = {w.encoder: w for w in (
    _published("sam", "sam_vit_b", "sam_vit_b_01ec64.pth", "SAM ViT-B", _SAM_URL),
    _published("sam", "sam_vit_l", "sam_vit_l_0b3195.pth", "SAM ViT-L", _SAM_URL),
    _published("sam", "sam_vit_h", "sam_vit_h_4b8939.pth", "SAM ViT-H", _SAM_URL),
    _published("hipt", "hipt_vit_s", "vit256_small_dino.pth", "HIPT ViT-S/16", _HIPT_URL),
    _hugging_face("uni", "MahmoodLab/UNI", "pytorch_model.bin", "UNI", "CC-BY-NC-ND 4.0, gated"),
    _hugging_face("uni2_h", "MahmoodLab/UNI2-h", "pytorch_model.bin", "UNI2-h", "CC-BY-NC-ND 4.0, gated"),
    _hugging_face("virchow2", "paige-ai/Virchow2", "pytorch_model.bin", "Virchow2", "CC-BY-NC-ND 4.0, gated"),
    _hugging_face("h_optimus_0", "bioptimus/H-optimus-0", "pytorch_model.bin", "H-optimus-0", "Apache-2.0",
                  "bf47b8467403079798661601b6ab06533be789da48d3f8b510aaefe2fbc55cd3"),
    _hugging_face("h_optimus_1", "bioptimus/H-optimus-1", "pytorch_model.bin", "H-optimus-1",
                  "non-commercial, gated"),
    _hugging_face("prov_gigapath", "prov-gigapath/prov-gigapath", "pytorch_model.bin", "Prov-GigaPath",
                  "Apache-2.0, gated"),
)}


def weights_label(kind: str, encoder: str | None = None) -> str:
    """How messages name a base file: "SAM", "HIPT", or "Fp" for a pathology foundation model's file
    (and for an Fp file whose ``encoder`` is not known here)."""
    if kind == WeightsKind.SAM.value:
        return "SAM"
    return "HIPT" if encoder is not None and encoder.startswith("hipt") else "Fp"


def known_encoder(sha256: str) -> str | None:
    """The encoder preset whose published file has this sha256, where one is known."""
    return next((w.encoder for w in OFFICIAL_WEIGHTS.values() if w.sha256 and w.sha256 == sha256), None)


def sam_weights_file(model: str) -> str:
    """The official file name of segment-anything's ``model`` (``vit_b``, ``vit_l``, ``vit_h``)."""
    return OFFICIAL_WEIGHTS[f"sam_{model}"].file
