"""Bird's-eye-view average precision for 3D detection, with the two matchings the field uses.

- Rotated IoU: a detection matches a ground-truth box when their BEV footprints (rotated rectangles, shapely
  polygons) overlap by at least the class threshold (KITTI: 0.7 car, 0.5 pedestrian and cyclist).
- Centre distance (nuScenes): a match when the BEV centres are within d metres; AP is averaged over
  d in (0.5, 1, 2, 4).

Detections of a class are ranked by score over all frames and matched greedily, each to the best still
unmatched ground truth of its frame. Ground truth marked *ignored* (too few lidar points to be seen, as
KITTI's DontCare) neither counts as a positive nor turns a detection on it into a false positive. AP is the
area under the precision envelope (all-point interpolation, as PASCAL VOC since 2010; nuScenes' 10% recall
and precision floors are not applied).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import shapely

from effigy.errors import MetricError

IOU_THRESHOLDS = {"Car": 0.7, "Pedestrian": 0.5, "Cyclist": 0.5}
DISTANCE_THRESHOLDS = (0.5, 1.0, 2.0, 4.0)


@dataclass
class FrameBoxes:
    """One frame of one class: ``boxes`` [n, 7] (x, y, z, l, w, h, yaw), ``scores`` [n] for detections,
    ``ignored`` [n] for ground truth."""

    boxes: np.ndarray
    scores: np.ndarray | None = None
    ignored: np.ndarray | None = None


def bev_corners(boxes: np.ndarray) -> np.ndarray:
    """[n, 4, 2] BEV corners of boxes, counter-clockwise."""
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 7)
    signs = np.array([[1, 1], [-1, 1], [-1, -1], [1, -1]]) / 2
    local = signs[None] * boxes[:, None, 3:5]
    cos, sin = np.cos(boxes[:, 6])[:, None], np.sin(boxes[:, 6])[:, None]
    return np.stack([cos * local[..., 0] - sin * local[..., 1] + boxes[:, None, 0],
                     sin * local[..., 0] + cos * local[..., 1] + boxes[:, None, 1]], axis=-1)


def rotated_bev_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """[n, m] IoU of the BEV footprints of boxes ``a`` [n, 7] and ``b`` [m, 7]."""
    polygons_a, polygons_b = shapely.polygons(bev_corners(a)), shapely.polygons(bev_corners(b))
    if len(polygons_a) == 0 or len(polygons_b) == 0:
        return np.zeros((len(polygons_a), len(polygons_b)))
    pa, pb = np.meshgrid(polygons_a, polygons_b, indexing="ij")
    intersection = shapely.area(shapely.intersection(pa, pb))
    union = shapely.area(pa) + shapely.area(pb) - intersection
    return np.where(union > 0, intersection / np.maximum(union, 1e-12), 0.0)


def centre_distance(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """[n, m] BEV distance between box centres."""
    a, b = np.asarray(a).reshape(-1, 7), np.asarray(b).reshape(-1, 7)
    return np.linalg.norm(a[:, None, :2] - b[None, :, :2], axis=-1)


def average_precision(detections: list[FrameBoxes], truths: list[FrameBoxes], match: str, threshold: float) -> float:
    """AP of one class over frames.

    Args:
        detections: per frame, the detected boxes with scores.
        truths: per frame (same order), the ground-truth boxes, optionally with ``ignored`` flags.
        match: "iou" (a match needs rotated BEV IoU >= threshold) or "distance" (centre distance <= threshold).
        threshold: the IoU or the distance in metres.
    Returns:
        The area under the precision envelope; nan when there is no positive ground truth.
    """
    if len(detections) != len(truths):
        raise MetricError(f"{len(detections)} frames of detections against {len(truths)} of ground truth: "
                          "give one entry per frame to both.")
    if match not in ("iou", "distance"):
        raise MetricError(f"unknown matching {match!r}: use 'iou' or 'distance'.")
    outcomes, positives = _match_all(detections, truths, match, threshold)
    if positives == 0:
        return float("nan")
    return _envelope_area(outcomes, positives)


def _match_all(detections: list[FrameBoxes], truths: list[FrameBoxes], match: str, threshold: float):
    """Per detection (by descending score): 1 true positive, 0 false positive, -1 ignored; and the positives."""
    entries = [(score, frame, index) for frame, det in enumerate(detections)
               for index, score in enumerate(np.asarray(det.scores, dtype=float).reshape(-1))]
    entries.sort(key=lambda e: -e[0])
    ignored = [np.zeros(len(t.boxes), bool) if t.ignored is None else np.asarray(t.ignored, bool) for t in truths]
    affinity = [_affinity(d.boxes, t.boxes, match) for d, t in zip(detections, truths)]
    taken = [np.zeros(len(t.boxes), bool) for t in truths]
    outcomes = []
    for _, frame, index in entries:
        row = affinity[frame][index] if len(taken[frame]) else np.zeros(0)
        ok = (row >= threshold) if match == "iou" else (row <= threshold)
        candidates = np.flatnonzero(ok & ~taken[frame])
        if len(candidates) == 0:
            outcomes.append(0)
            continue
        best = candidates[row[candidates].argmax() if match == "iou" else row[candidates].argmin()]
        taken[frame][best] = True
        outcomes.append(-1 if ignored[frame][best] else 1)
    return np.array(outcomes, dtype=int), int(sum((~i).sum() for i in ignored))


def _affinity(det: np.ndarray, truth: np.ndarray, match: str) -> np.ndarray:
    return rotated_bev_iou(det, truth) if match == "iou" else centre_distance(det, truth)


def _envelope_area(outcomes: np.ndarray, positives: int) -> float:
    counted = outcomes[outcomes >= 0]
    if len(counted) == 0:
        return 0.0
    tp = np.cumsum(counted == 1)
    recall = tp / positives
    precision = tp / np.arange(1, len(counted) + 1)
    recall = np.r_[0.0, recall]
    envelope = np.maximum.accumulate(np.r_[precision, 0.0][::-1])[::-1]
    return float(np.sum(np.diff(recall) * envelope[:-1]))


def bev_map(detections: dict[str, list[FrameBoxes]], truths: dict[str, list[FrameBoxes]],
            classes: tuple[str, ...] = tuple(IOU_THRESHOLDS)) -> dict:
    """Per class AP under both matchings, and their means over classes (mAP).

    Returns:
        ``{"iou": {cls: ap, "mAP": m}, "distance": {cls: ap (mean over DISTANCE_THRESHOLDS), "mAP": m}}``.
    """
    result: dict[str, dict[str, float]] = {"iou": {}, "distance": {}}
    for cls in classes:
        result["iou"][cls] = average_precision(detections[cls], truths[cls], "iou", IOU_THRESHOLDS[cls])
        result["distance"][cls] = float(np.mean([average_precision(detections[cls], truths[cls], "distance", d)
                                                 for d in DISTANCE_THRESHOLDS]))
    for table in result.values():
        table["mAP"] = float(np.nanmean([table[c] for c in classes]))
    return result
