"""A small overlay preview: slide thumbnail with class colours blended in and a legend (PNG, Pillow only)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from wsiseg.io.atomic import replacing
from wsiseg.io.omezarr import open_segmentation
from wsiseg.slide.reader import Slide

#: Longest side of the preview image in pixels.
PREVIEW_SIDE = 1024
#: Opacity of class colours over the thumbnail.
ALPHA = 0.45


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
    labels = labels_l[rows[:, None], cols[None, :]]
    lut = np.zeros((256, 3), np.float32)
    for i, c in enumerate(seg.classes):
        lut[i + 1] = c.color
    analysed = (labels > 0)[..., None]
    blended = np.where(analysed, (1 - ALPHA) * thumb + ALPHA * lut[labels], thumb)
    image = Image.fromarray(np.clip(blended, 0, 255).astype(np.uint8))
    font = ImageFont.load_default()
    row_h = 18
    legend_h = row_h * (len(seg.classes) + 1) + 6
    canvas = Image.new("RGB", (max(image.width, 220), image.height + legend_h), (255, 255, 255))
    canvas.paste(image, (0, 0))
    draw = ImageDraw.Draw(canvas)
    y = image.height + 4
    for c in seg.classes:
        draw.rectangle([6, y + 2, 20, y + 14], fill=tuple(c.color), outline=(0, 0, 0))
        draw.text((28, y + 1), c.name, fill=(0, 0, 0), font=font)
        y += row_h
    note = f"not analysed: no colour | {preview_mpp:.3g} um/px"
    draw.text((6, y + 1), note, fill=(80, 80, 80), font=font)
    png.parent.mkdir(parents=True, exist_ok=True)
    with replacing(png) as tmp:  # a killed run never leaves half a PNG
        canvas.save(tmp, format="PNG")
    return png
