"""A small overlay preview: slide thumbnail with class colours blended in, QC artifacts hatched in their own
colours, and a legend (PNG, Pillow only)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from wsiseg.io.atomic import replacing
from wsiseg.io.omezarr import Segmentation, open_segmentation
from wsiseg.slide.reader import Slide

#: Longest side of the preview image in pixels.
PREVIEW_SIDE = 1024
#: Opacity of class colours over the thumbnail.
ALPHA = 0.45


def _hatch_artifacts(seg: Segmentation, level: int, index: tuple[np.ndarray, np.ndarray],
                     image: np.ndarray) -> list[tuple[str, tuple[int, int, int]]]:
    """Hatch the QC artifacts of ``seg`` (its ``labels/qc`` at ``level``, sampled at ``index``) into the
    float RGB ``image`` in place: diagonal stripes of the artifact's colour, the rest of it tinted. Returns
    the legend entries of the artifacts present (name, colour)."""
    if "qc" not in seg.label_images:
        return []
    pyramid, values = seg.label_image("qc")
    qc = np.asarray(pyramid[min(level, len(pyramid) - 1)][...])[index]
    excluded = seg.metadata.qc_excluded
    stripes = (np.add.outer(np.arange(qc.shape[0]), np.arange(qc.shape[1])) % 8) < 3
    legend = []
    for value in values:
        if value.name in ("background", "tissue"):
            continue
        where = qc == value.value
        if not where.any():
            continue
        colour = np.array(value.rgba[:3], np.float32)
        image[where] = 0.75 * image[where] + 0.25 * colour
        image[where & stripes] = colour
        legend.append((f"{value.name} ({'not analysed' if excluded else 'reported'})", value.rgba[:3]))
    return legend


def write_preview(seg_path: Path, slide: Slide, png: Path, max_side: int = PREVIEW_SIDE) -> Path:
    """Write ``png``: ``slide``'s thumbnail with about ``max_side`` pixels on its long side, labels blended
    in with the class colours (nearest-neighbour, from the coarsest label level still >= ``max_side``, or
    the finest one), a legend strip below. Returns ``png``."""
    seg = open_segmentation(seg_path)
    level = 0
    for lv in range(seg.n_levels):
        if max(seg.labels[lv].shape) >= max_side:
            level = lv
    labels_l = np.asarray(seg.labels[level][...])
    label_mpp = seg.mpp[level]
    width_0, height_0 = slide.dimensions
    extent_um = max(width_0 * slide.mpp[0], height_0 * slide.mpp[1])
    preview_mpp = extent_um / max_side
    thumb = slide.thumbnail(preview_mpp).astype(np.float32)
    h, w = thumb.shape[:2]
    step = preview_mpp / label_mpp  # label pixels per preview pixel
    rows = np.minimum(((np.arange(h) + 0.5) * step).astype(np.int64), labels_l.shape[0] - 1)
    cols = np.minimum(((np.arange(w) + 0.5) * step).astype(np.int64), labels_l.shape[1] - 1)
    index = rows[:, None], cols[None, :]
    labels = labels_l[index]
    lut = np.zeros((256, 3), np.float32)
    for i, c in enumerate(seg.classes):
        lut[i + 1] = c.color
    analysed = (labels > 0)[..., None]
    blended = np.where(analysed, (1 - ALPHA) * thumb + ALPHA * lut[labels], thumb)
    artifacts = _hatch_artifacts(seg, level, index, blended)
    image = Image.fromarray(np.clip(blended, 0, 255).astype(np.uint8))
    font = ImageFont.load_default()
    row_h = 18
    legend_h = row_h * (len(seg.classes) + len(artifacts) + 1) + 6
    canvas = Image.new("RGB", (max(image.width, 220), image.height + legend_h), (255, 255, 255))
    canvas.paste(image, (0, 0))
    draw = ImageDraw.Draw(canvas)
    y = image.height + 4
    for c in seg.classes:
        draw.rectangle([6, y + 2, 20, y + 14], fill=tuple(c.color), outline=(0, 0, 0))
        draw.text((28, y + 1), c.name, fill=(0, 0, 0), font=font)
        y += row_h
    for name, colour in artifacts:
        draw.rectangle([6, y + 2, 20, y + 14], fill=(255, 255, 255), outline=colour, width=3)
        draw.text((28, y + 1), name, fill=(0, 0, 0), font=font)
        y += row_h
    note = f"not analysed: no colour | {preview_mpp:.3g} um/px"
    draw.text((6, y + 1), note, fill=(80, 80, 80), font=font)
    png.parent.mkdir(parents=True, exist_ok=True)
    with replacing(png) as tmp:  # a killed run never leaves half a PNG
        canvas.save(tmp, format="PNG")
    return png
