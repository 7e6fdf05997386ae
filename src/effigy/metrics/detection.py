"""Metrics of a binary detector that scores how *bonafide* (live, real) each sample is.

Conventions (ISO/IEC 30107-3 for presentation attacks): a sample is accepted as bonafide when its score is
at least the threshold. APCER is the share of attacks accepted, BPCER the share of bonafide samples
rejected; HTER is their mean at a threshold fixed beforehand (on a development set, never on the test set).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from effigy.errors import MetricError


def _arrays(scores, bonafide) -> tuple[np.ndarray, np.ndarray]:
    scores = np.asarray(scores, dtype=np.float64).ravel()
    bonafide = np.asarray(bonafide, dtype=bool).ravel()
    if len(scores) != len(bonafide):
        raise MetricError(f"{len(scores)} scores for {len(bonafide)} labels; give one label per score.")
    if not np.isfinite(scores).all():
        raise MetricError("scores hold NaN or infinity; check the detector's output.")
    return scores, bonafide


def _both_classes(bonafide: np.ndarray) -> None:
    if bonafide.all() or not bonafide.any():
        raise MetricError("this metric needs both bonafide and attack samples; the labels hold one class only.")


def apcer(scores, bonafide, threshold: float) -> float:
    """Share of attack samples accepted (score >= threshold)."""
    scores, bonafide = _arrays(scores, bonafide)
    if bonafide.all():
        raise MetricError("APCER needs attack samples; the labels are all bonafide.")
    return float((scores[~bonafide] >= threshold).mean())


def bpcer(scores, bonafide, threshold: float) -> float:
    """Share of bonafide samples rejected (score < threshold)."""
    scores, bonafide = _arrays(scores, bonafide)
    if not bonafide.any():
        raise MetricError("BPCER needs bonafide samples; the labels hold none.")
    return float((scores[bonafide] < threshold).mean())


def hter(scores, bonafide, threshold: float) -> float:
    """Half total error rate: (APCER + BPCER) / 2 at a fixed threshold."""
    return 0.5 * (apcer(scores, bonafide, threshold) + bpcer(scores, bonafide, threshold))


def roc_curve(scores, bonafide) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(false-accept rates, true-accept rates, thresholds), thresholds falling from +inf through every
    distinct score."""
    scores, bonafide = _arrays(scores, bonafide)
    _both_classes(bonafide)
    thresholds = np.concatenate([[np.inf], np.unique(scores)[::-1]])
    accepted = scores[None, :] >= thresholds[:, None]
    tar = accepted[:, bonafide].mean(axis=1)
    far = accepted[:, ~bonafide].mean(axis=1)
    return far, tar, thresholds


def auc(scores, bonafide) -> float:
    """Area under the ROC curve: the chance that a bonafide sample outscores an attack (ties count half)."""
    scores, bonafide = _arrays(scores, bonafide)
    _both_classes(bonafide)
    ranks = _average_ranks(scores)
    positives = bonafide.sum()
    negatives = len(scores) - positives
    return float((ranks[bonafide].sum() - positives * (positives + 1) / 2) / (positives * negatives))


def _average_ranks(values: np.ndarray) -> np.ndarray:
    order = np.argsort(values, kind="mergesort")
    ranks = np.empty(len(values))
    sorted_values = values[order]
    start = 0
    while start < len(values):
        end = start
        while end + 1 < len(values) and sorted_values[end + 1] == sorted_values[start]:
            end += 1
        ranks[order[start: end + 1]] = (start + end) / 2 + 1
        start = end + 1
    return ranks


def tpr_at_fpr(scores, bonafide, fpr: float = 0.01) -> float:
    """The largest true-accept rate whose false-accept rate is at most ``fpr``."""
    if not 0 <= fpr <= 1:
        raise MetricError(f"fpr = {fpr}: a rate must be in [0, 1].")
    far, tar, _ = roc_curve(scores, bonafide)
    return float(tar[far <= fpr].max())


def eer_threshold(scores, bonafide) -> float:
    """The threshold where APCER and BPCER are closest (the equal error rate's), chosen on a development set."""
    far, tar, thresholds = roc_curve(scores, bonafide)
    gaps = np.abs(far[1:] - (1 - tar[1:]))  # the first threshold (+inf) accepts nothing
    return float(thresholds[1:][int(np.argmin(gaps))])


@dataclass(frozen=True)
class DetectionReport:
    """HTER at a stated threshold, AUC and TPR at FPR = 1% of one evaluation."""

    hter: float
    apcer: float
    bpcer: float
    auc: float
    tpr_at_fpr_1: float
    threshold: float

    def to_dict(self) -> dict:
        return asdict(self)


def detection_report(scores, bonafide, threshold: float) -> DetectionReport:
    """Every summary metric of ``scores`` at a ``threshold`` fixed beforehand."""
    return DetectionReport(hter(scores, bonafide, threshold), apcer(scores, bonafide, threshold),
                           bpcer(scores, bonafide, threshold), auc(scores, bonafide),
                           tpr_at_fpr(scores, bonafide, 0.01), threshold)
