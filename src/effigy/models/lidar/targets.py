"""CenterPoint's training targets, loss and decoding on the BEV grid.

Each ground-truth box puts a Gaussian peak on its class's heatmap at its centre cell (radius from its size,
as CenterNet's ``gaussian_radius`` with a minimum overlap of 0.1, at least 2 cells) and regression targets on
that cell: the centre's offset inside the cell, z, log sizes, and sin and cos of *twice* the yaw: a box is the
same box turned by 180 degrees, and the simulated objects have no front a lidar could tell from their back, so
a yaw target would average a car's two readings (0 and pi) into a sideways box. The heatmap is learnt
with CenterNet's Gaussian focal loss, the regression with L1 on the centre cells; decoding keeps the local
maxima of the heatmap (3x3 max pool) and reads the boxes off the regression there.
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from effigy.models.lidar.centerpoint import CenterPointConfig

MIN_RADIUS = 2
MIN_OVERLAP = 0.1


def gaussian_radius(length: float, width: float, min_overlap: float = MIN_OVERLAP) -> float:
    """CenterNet's radius (in cells) within which a shifted box still overlaps its truth by ``min_overlap``."""
    a1, b1, c1 = 1, length + width, width * length * (1 - min_overlap) / (1 + min_overlap)
    r1 = (b1 + math.sqrt(b1 ** 2 - 4 * a1 * c1)) / 2
    a2, b2, c2 = 4, 2 * (length + width), (1 - min_overlap) * width * length
    r2 = (b2 + math.sqrt(b2 ** 2 - 4 * a2 * c2)) / 2
    a3, b3, c3 = 4 * min_overlap, -2 * min_overlap * (length + width), (min_overlap - 1) * width * length
    r3 = (b3 + math.sqrt(b3 ** 2 - 4 * a3 * c3)) / 2
    return min(r1, r2, r3)


def _draw_gaussian(heatmap: torch.Tensor, cx: int, cy: int, radius: int) -> None:
    ys, xs = torch.meshgrid(torch.arange(-radius, radius + 1), torch.arange(-radius, radius + 1), indexing="ij")
    sigma = (2 * radius + 1) / 6
    gaussian = torch.exp(-(xs ** 2 + ys ** 2) / (2 * sigma ** 2))
    h, w = heatmap.shape
    top, bottom, left, right = min(cy, radius), min(h - cy, radius + 1), min(cx, radius), min(w - cx, radius + 1)
    region = heatmap[cy - top: cy + bottom, cx - left: cx + right]
    torch.maximum(region, gaussian[radius - top: radius + bottom, radius - left: radius + right], out=region)


def build_targets(boxes: list[np.ndarray], labels: list[list[str]], config: CenterPointConfig) -> dict[str, torch.Tensor]:
    """Dense targets for a batch: heatmap [B, classes, H, W], regression [B, 8, H, W], mask [B, H, W]."""
    h, w = config.bev_shape
    batch = len(boxes)
    heatmap = torch.zeros(batch, len(config.classes), h, w)
    regression = torch.zeros(batch, 8, h, w)
    mask = torch.zeros(batch, h, w)
    x0, y0 = config.point_range[0], config.point_range[1]
    cell = config.cell_size
    for b, (frame_boxes, frame_labels) in enumerate(zip(boxes, labels)):
        for box, label in zip(frame_boxes, frame_labels):
            if label not in config.classes:
                continue
            fx, fy = (box[0] - x0) / cell, (box[1] - y0) / cell
            cx, cy = int(fx), int(fy)
            if not (0 <= cx < w and 0 <= cy < h):
                continue
            radius = max(MIN_RADIUS, int(gaussian_radius(box[3] / cell, box[4] / cell)))
            _draw_gaussian(heatmap[b, config.classes.index(label)], cx, cy, radius)
            regression[b, :, cy, cx] = torch.tensor([fx - cx, fy - cy, box[2], *np.log(box[3:6]),
                                                     math.sin(2 * box[6]), math.cos(2 * box[6])], dtype=torch.float32)
            mask[b, cy, cx] = 1
    return {"heatmap": heatmap, "regression": regression, "mask": mask}


def gaussian_focal_loss(logits: torch.Tensor, target: torch.Tensor, alpha: float = 2.0, beta: float = 4.0) -> torch.Tensor:
    """CenterNet's focal loss against a Gaussian heatmap, normalised by the number of peaks."""
    pred = torch.sigmoid(logits).clamp(1e-4, 1 - 1e-4)
    positive = target.eq(1).float()
    pos_loss = -torch.log(pred) * (1 - pred) ** alpha * positive
    neg_loss = -torch.log(1 - pred) * pred ** alpha * (1 - target) ** beta * (1 - positive)
    return (pos_loss.sum() + neg_loss.sum()) / positive.sum().clamp(min=1)


def detection_loss(outputs: dict[str, torch.Tensor], targets: dict[str, torch.Tensor],
                   regression_weight: float = 0.25) -> torch.Tensor:
    heat = gaussian_focal_loss(outputs["heatmap"], targets["heatmap"])
    mask = targets["mask"].unsqueeze(1)
    l1 = (F.l1_loss(outputs["regression"], targets["regression"], reduction="none") * mask).sum()
    return heat + regression_weight * l1 / mask.sum().clamp(min=1)


@torch.no_grad()
def decode(outputs: dict[str, torch.Tensor], config: CenterPointConfig, top_k: int = 60,
           score_threshold: float = 0.05) -> list[dict[str, tuple[np.ndarray, np.ndarray]]]:
    """Per frame and class: boxes [n, 7] (lidar frame) and scores [n] at the heatmap's local maxima."""
    scores = torch.sigmoid(outputs["heatmap"])
    peaks = scores * (F.max_pool2d(scores, 3, 1, 1) == scores)
    batch, classes, h, w = peaks.shape
    x0, y0, cell = config.point_range[0], config.point_range[1], config.cell_size
    frames = []
    for b in range(batch):
        values, flat = peaks[b].reshape(-1).topk(min(top_k, peaks[b].numel()))
        keep = values > score_threshold
        values, flat = values[keep], flat[keep]
        cls, rest = flat // (h * w), flat % (h * w)
        cy, cx = rest // w, rest % w
        reg = outputs["regression"][b][:, cy, cx].T  # [n, 8]
        boxes = torch.stack([x0 + (cx + reg[:, 0]) * cell, y0 + (cy + reg[:, 1]) * cell, reg[:, 2],
                             *reg[:, 3:6].clamp(-3, 3).exp().T, torch.atan2(reg[:, 6], reg[:, 7]) / 2], dim=1)
        frames.append({name: (boxes[cls == i].numpy().astype(np.float64), values[cls == i].numpy())
                       for i, name in enumerate(config.classes)})
    return frames
