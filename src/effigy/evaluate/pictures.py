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


def line_chart(panels: dict[str, dict[str, list[tuple[float, float, float, float]]]], path: Path,
               x_label: str, y_label: str, size: tuple[int, int] = (360, 260), markers: bool = False,
               x_ticks: int | None = None) -> Path:
    """Side-by-side panels of lines with spread bands, x on a log scale.

    Args:
        panels: title -> line name -> points (x, mean, low, high); the band spans low..high.
        path: the PNG to write.
        markers: a dot at every point (a curve of a few measured points).
        x_ticks: label this many evenly spaced (log) x values instead of every distinct x.
    """
    from PIL import Image, ImageDraw

    colours = [(31, 119, 180), (214, 39, 40), (44, 160, 44), (148, 103, 189), (255, 127, 14)]
    names = list(dict.fromkeys(n for lines in panels.values() for n in lines))
    width, height = size
    margin_left, margin_bottom, top = 44, 34, 22
    canvas = Image.new("RGB", (width * len(panels), height + 16 * len(names) + 8), "white")
    draw = ImageDraw.Draw(canvas)
    for p, (title, lines) in enumerate(panels.items()):
        points = [pt for line in lines.values() for pt in line]
        xs = np.log10([pt[0] for pt in points])
        y_low, y_high = min(pt[2] for pt in points), max(pt[3] for pt in points)
        y_low, y_high = (y_low - 0.05, y_high + 0.05) if y_high > y_low else (y_low - 1, y_high + 1)
        left, plot_w, plot_h = p * width + margin_left, width - margin_left - 12, height - margin_bottom - top

        def at(x: float, y: float) -> tuple[float, float]:
            fx = (np.log10(x) - xs.min()) / max(xs.max() - xs.min(), 1e-9)
            return left + fx * plot_w, top + (1 - (y - y_low) / (y_high - y_low)) * plot_h

        draw.text((left, 4), f"{title}: {y_label}", fill="black")
        draw.rectangle((left, top, left + plot_w, top + plot_h), outline=(160, 160, 160))
        ticks = sorted({pt[0] for pt in points}) if x_ticks is None else \
            [10 ** v for v in np.linspace(xs.min(), xs.max(), x_ticks)]
        for x in ticks:
            gx, _ = at(x, y_low)
            draw.text((gx - 8, top + plot_h + 4), f"{x:g}" if x_ticks is None else f"{x:.2g}", fill="black")
        for k in range(5):
            y = y_low + k * (y_high - y_low) / 4
            _, gy = at(10 ** xs.min(), y)
            draw.text((p * width + 4, gy - 6), f"{y:.2f}", fill="black")
        for n, name in enumerate(names):
            line = sorted(lines.get(name, []))
            if not line:
                continue
            colour = colours[n % len(colours)]
            band = [at(x, hi) for x, _, _, hi in line] + [at(x, lo) for x, _, lo, _ in reversed(line)]
            overlay = Image.new("RGBA", canvas.size, (0, 0, 0, 0))
            ImageDraw.Draw(overlay).polygon(band, fill=(*colour, 45))
            canvas.paste(Image.alpha_composite(canvas.convert("RGBA"), overlay).convert("RGB"))
            draw = ImageDraw.Draw(canvas)
            draw.line([at(x, m) for x, m, _, _ in line], fill=colour, width=2)
            for x, m, _, _ in line if markers else ():
                cx, cy = at(x, m)
                draw.ellipse((cx - 3, cy - 3, cx + 3, cy + 3), fill=colour)
        draw.text((left + plot_w // 2 - 20, height - 14), x_label, fill="black")
    for n, name in enumerate(names):
        y = height + 4 + 16 * n
        draw.rectangle((8, y, 18, y + 10), fill=colours[n % len(colours)])
        draw.text((24, y - 1), name, fill="black")
    path.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(path)
    return path


def reliability_diagram(panels: dict[str, dict[str, list[dict]]], path: Path, size: int = 300) -> Path:
    """Side-by-side reliability diagrams: per panel (a model), per curve (before / after calibration) the bins of
    :func:`effigy.metrics.detection.reliability_bins` as dots (area by count) joined by lines, against the
    diagonal a calibrated model follows.

    Args:
        panels: title -> curve name -> bins (``mean_predicted``, ``observed``, ``count``).
        path: the PNG to write.
    """
    from PIL import Image, ImageDraw

    colours = [(214, 39, 40), (31, 119, 180), (44, 160, 44)]
    names = list(dict.fromkeys(n for curves in panels.values() for n in curves))
    margin, top = 40, 22
    plot = size - margin - 12
    canvas = Image.new("RGB", (size * len(panels), size + 16 * len(names) + 14), "white")
    draw = ImageDraw.Draw(canvas)
    for p, (title, curves) in enumerate(panels.items()):
        left = p * size + margin

        def at(x: float, y: float) -> tuple[float, float]:
            return left + x * plot, top + (1 - y) * plot

        draw.text((left, 4), title, fill="black")
        draw.rectangle((left, top, left + plot, top + plot), outline=(160, 160, 160))
        draw.line([at(0, 0), at(1, 1)], fill=(170, 170, 170), width=1)
        for k in range(0, 5):
            v = k / 4
            draw.text((at(v, 0)[0] - 8, top + plot + 3), f"{v:.2f}", fill="black")
            draw.text((p * size + 6, at(0, v)[1] - 6), f"{v:.2f}", fill="black")
        total = max(sum(b["count"] for b in bins) for bins in curves.values())
        for n, name in enumerate(names):
            bins = curves.get(name, [])
            colour = colours[n % len(colours)]
            points = [at(b["mean_predicted"], b["observed"]) for b in bins]
            if len(points) > 1:
                draw.line(points, fill=colour, width=2)
            for (x, y), b in zip(points, bins):
                r = 2 + 6 * np.sqrt(b["count"] / total)
                draw.ellipse((x - r, y - r, x + r, y + r), outline=colour, width=2)
        draw.text((left + plot // 2 - 50, size - 8), "predicted P(fake)", fill="black")
    for n, name in enumerate(names):
        y = size + 10 + 16 * n
        draw.rectangle((8, y, 18, y + 10), fill=colours[n % len(colours)])
        draw.text((24, y - 1), f"{name} (y: observed share of fakes; grey: perfectly calibrated)", fill="black")
    path.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(path)
    return path
