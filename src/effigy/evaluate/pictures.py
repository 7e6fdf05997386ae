"""Labelled image grids: one row per variant, so differences can be seen at a glance."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch


def labelled_grid(rows: dict[str, torch.Tensor], path: Path, scale: int = 4, label_width: int = 170) -> Path:
    """Save a PNG with one labelled row per entry; images are [N, C, H, W] in [-1, 1]."""
    from PIL import Image, ImageDraw

    first = next(iter(rows.values()))
    n, _, h, w = first.shape
    cell_h, cell_w, pad = h * scale, w * scale, 2
    canvas = Image.new("RGB", (label_width + n * (cell_w + pad), len(rows) * (cell_h + pad) + pad), "white")
    draw = ImageDraw.Draw(canvas)
    for r, (label, images) in enumerate(rows.items()):
        top = pad + r * (cell_h + pad)
        draw.text((4, top + cell_h // 2 - 6), label, fill="black")
        for c, image in enumerate(images[:n]):
            array = ((image.float().clamp(-1, 1) + 1) * 127.5).round().byte().numpy()
            array = np.repeat(array, 3, axis=0) if array.shape[0] == 1 else array
            tile = Image.fromarray(array.transpose(1, 2, 0)).resize((cell_w, cell_h), Image.NEAREST)
            canvas.paste(tile, (label_width + c * (cell_w + pad), top))
    path.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(path)
    return path
