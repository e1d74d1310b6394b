"""Synthetic slides cut into a ``folder`` training data set (image/mask PNG pairs and a class map)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from PIL import Image

from wsiseg.synthetic.slides import SYNTHETIC_CLASSES, write_synthetic_slide

#: Resolution (um/px) and patch side (pixels at that resolution) the demo trains and segments at.
DEMO_MPP = 2.0
DEMO_PATCH = 256
#: Level-0 um/px of the synthetic slides.
SLIDE_MPP = 0.5


def write_synthetic_patch_folder(root: Path, seeds: Sequence[int], *, slide_size0: int = 3072,
                                 mpp: float = DEMO_MPP, patch: int = DEMO_PATCH) -> Path:
    """Cut synthetic slides (one per seed) into a ``folder`` data set at ``root``.

    Each ``slide_size0``-pixel square slide (level 0 at 0.5 um/px) is read at ``mpp`` um/px and cut into
    non-overlapping ``patch``-pixel squares; masks are the exact class indices of
    :data:`~wsiseg.synthetic.SYNTHETIC_CLASSES`, and ``classes.yaml`` maps them. Returns ``root``.
    """
    from wsiseg.slide import open_slide

    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "masks").mkdir(exist_ok=True)
    step0 = round(patch * mpp / SLIDE_MPP)
    for seed in seeds:
        slide_path = root / f"slide{seed}.svs"
        truth = write_synthetic_slide(slide_path, slide_size0, slide_size0, mpp=SLIDE_MPP, seed=seed)
        with open_slide(slide_path) as slide:
            for y0 in range(0, slide_size0 - step0 + 1, step0):
                for x0 in range(0, slide_size0 - step0 + 1, step0):
                    name = f"s{seed}_x{x0}_y{y0}.png"
                    image = slide.read_region(x0, y0, patch, patch, mpp)
                    Image.fromarray(image).save(root / "images" / name)
                    labels = truth.labels_region(x0, y0, patch, patch, mpp)
                    Image.fromarray(labels).save(root / "masks" / name)
        slide_path.unlink()
    lines = ["classes:"] + [
        f"  - {{name: {c.name}, value: {i}, color: [{c.color[0]}, {c.color[1]}, {c.color[2]}]}}"
        for i, c in enumerate(SYNTHETIC_CLASSES)
    ]
    (root / "classes.yaml").write_text("\n".join(lines) + "\n")
    return root
