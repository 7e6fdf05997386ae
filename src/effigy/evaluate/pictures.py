"""Labelled image grids: one row per variant, so differences can be seen at a glance."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch


def labelled_grid(rows: dict[str, torch.Tensor], path: Path, scale: int = 4, label_width: int = 170,
                  column_labels: list[str] | None = None) -> Path:
    """Save a PNG with one labelled row per entry; images are [N, C, H, W] in [-1, 1]. ``column_labels`` (the
    prompts of a text-to-image grid) are written above the columns, wrapped to the cell width."""
    import textwrap

    from PIL import Image, ImageDraw

    first = next(iter(rows.values()))
    n, _, h, w = first.shape
    cell_h, cell_w, pad = h * scale, w * scale, 2
    wrapped = [textwrap.wrap(label, max(4, cell_w // 6)) for label in column_labels or []]
    header = 11 * max((len(lines) for lines in wrapped), default=0) + (pad if wrapped else 0)
    canvas = Image.new("RGB", (label_width + n * (cell_w + pad), header + len(rows) * (cell_h + pad) + pad), "white")
    draw = ImageDraw.Draw(canvas)
    for c, lines in enumerate(wrapped[:n]):
        draw.multiline_text((label_width + c * (cell_w + pad), pad), "\n".join(lines), fill="black", spacing=1)
    for r, (label, images) in enumerate(rows.items()):
        top = header + pad + r * (cell_h + pad)
        draw.text((4, top + cell_h // 2 - 6), label, fill="black")
        for c, image in enumerate(images[:n]):
            array = ((image.float().clamp(-1, 1) + 1) * 127.5).round().byte().numpy()
            array = np.repeat(array, 3, axis=0) if array.shape[0] == 1 else array
            tile = Image.fromarray(array.transpose(1, 2, 0)).resize((cell_w, cell_h), Image.NEAREST)
            canvas.paste(tile, (label_width + c * (cell_w + pad), top))
    path.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(path)
    return path


def category_maps(maps: dict[str, list[list[str]]], colours: dict[str, tuple[int, int, int]], path: Path,
                  caption: str = "", cell: int = 14, title_height: int = 16) -> Path:
    """Side-by-side heat maps of categories (rows x columns of names, e.g. technique per step and
    block), with a colour legend underneath."""
    from PIL import Image, ImageDraw

    rows = max(len(m) for m in maps.values())
    cols = max(len(m[0]) for m in maps.values())
    panel_w, gap = max(cols * cell, 90), 24
    legend_h = 16 * (len(colours) + bool(caption)) + 8
    width = max(len(maps) * (panel_w + gap) + gap, 6 * len(caption) + 2 * gap)
    canvas = Image.new("RGB", (width, title_height + rows * cell + 8 + legend_h), "white")
    draw = ImageDraw.Draw(canvas)
    for p, (label, grid) in enumerate(maps.items()):
        left = gap + p * (panel_w + gap)
        draw.text((left, 2), label, fill="black")
        for r, row in enumerate(grid):
            for c, name in enumerate(row):
                box = (left + c * cell, title_height + r * cell, left + (c + 1) * cell - 1, title_height + (r + 1) * cell - 1)
                draw.rectangle(box, fill=colours[name])
    top = title_height + rows * cell + 8
    for i, (name, colour) in enumerate(colours.items()):
        draw.rectangle((gap, top + 16 * i, gap + 10, top + 16 * i + 10), fill=colour)
        draw.text((gap + 16, top + 16 * i - 1), name, fill="black")
    if caption:
        draw.text((gap, top + 16 * len(colours)), caption, fill="black")
    path.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(path)
    return path
