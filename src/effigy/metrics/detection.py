"""Metrics of binary detectors: presentation-attack detection and deepfake detection.

Presentation attacks (ISO/IEC 30107-3): the score says how *bonafide* (live) a sample is, and a sample is
accepted as bonafide when its score is at least the threshold. APCER is the share of attacks accepted, BPCER
the share of bonafide samples rejected; HTER is their mean at a threshold fixed beforehand (on a development
set, never on the test set).

Deepfakes (DeepfakeBench, https://github.com/SCLBD/DeepfakeBench): the score is P(fake), fakes are the
positive class; frame AUC, EER (the false-positive rate where it meets the false-negative rate), average
precision, and accuracy at 0.5.
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


def threshold_at_bpcer(bonafide_scores, target: float, higher_is_bonafide: bool = False) -> float:
    """The operating threshold chosen on bona fide samples alone: the one that rejects at most ``target`` of
    them (BPCER <= target; a deepfake detector's real images called fake, a FAS model's live faces called
    attacks), the strictest such threshold.

    Args:
        bonafide_scores: scores of a development set of bona fide samples only.
        target: the largest rate of them the threshold may reject, in [0, 1).
        higher_is_bonafide: False for P(fake) (a score at or above the threshold is rejected), True for P(live)
            (a score below it is).
    """
    values = np.asarray(bonafide_scores, dtype=np.float64).ravel()
    if len(values) == 0 or not np.isfinite(values).all():
        raise MetricError("an operating threshold needs at least one finite bona fide score.")
    if not 0 <= target < 1:
        raise MetricError(f"target BPCER {target}: a rate must be in [0, 1).")
    allowed = int(np.floor(target * len(values) + 1e-9))  # bona fide samples that may be rejected
    if higher_is_bonafide:  # live if score >= threshold: the allowed lowest fall below it
        ordered = np.sort(values)
        return float(ordered[allowed])
    ordered = np.sort(values)[::-1]  # fake if score >= threshold: the allowed highest reach it
    # the next float32 up: above the score whether it is compared in float32 (model outputs) or float64
    return float(np.nextafter(np.float32(ordered[allowed]), np.float32(np.inf)))


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


def eer(scores, positive) -> float:
    """Equal error rate: the false-positive rate at the threshold where it is closest to the false-negative
    rate (DeepfakeBench's definition; ``positive`` marks the class the score is for)."""
    fpr, tpr, _ = roc_curve(scores, positive)
    return float(fpr[int(np.argmin(np.abs((1 - tpr) - fpr)))])


def average_precision(scores, positive) -> float:
    """Area under the precision-recall steps: the mean, over positives, of the precision at each positive's
    score (ties taken together), as scikit-learn computes it."""
    scores, positive = _arrays(scores, positive)
    _both_classes(positive)
    _, tpr, thresholds = roc_curve(scores, positive)
    accepted = (scores[None, :] >= thresholds[1:, None])
    true_positives = (accepted & positive[None]).sum(axis=1)
    precision = true_positives / accepted.sum(axis=1)
    recall_steps = np.diff(tpr)
    return float((recall_steps * precision).sum())


def accuracy(scores, positive, threshold: float = 0.5) -> float:
    """Share of samples on the right side of ``threshold`` (score >= threshold calls the positive class)."""
    scores, positive = _arrays(scores, positive)
    return float(((scores >= threshold) == positive).mean())


@dataclass(frozen=True)
class DeepfakeReport:
    """DeepfakeBench's frame-level metrics of one evaluation (scores are P(fake))."""

    auc: float
    eer: float
    ap: float
    acc: float

    def to_dict(self) -> dict:
        return asdict(self)


def deepfake_report(fake_scores, fake) -> DeepfakeReport:
    """Frame AUC, EER, AP and accuracy at 0.5 of P(fake) scores against fake labels."""
    return DeepfakeReport(auc(fake_scores, fake), eer(fake_scores, fake), average_precision(fake_scores, fake),
                          accuracy(fake_scores, fake))


def reliability_bins(probabilities, positive, bins: int = 10) -> list[dict]:
    """The reliability diagram's points: per equal-width bin of predicted probability, how many predictions,
    their mean and the observed rate of the positive class (empty bins left out)."""
    p, y = np.asarray(probabilities, dtype=np.float64).ravel(), np.asarray(positive, dtype=bool).ravel()
    if len(p) != len(y) or len(p) == 0:
        raise MetricError(f"{len(p)} probabilities for {len(y)} labels; give one label each, at least one.")
    index = np.minimum((p * bins).astype(int), bins - 1)
    return [{"low": b / bins, "high": (b + 1) / bins, "count": int((index == b).sum()),
             "mean_predicted": float(p[index == b].mean()), "observed": float(y[index == b].mean())}
            for b in range(bins) if (index == b).any()]


def expected_calibration_error(probabilities, positive, bins: int = 10) -> float:
    """ECE: the count-weighted mean gap between predicted probability and observed rate over the bins of
    :func:`reliability_bins` (Guo et al. 2017, https://arxiv.org/abs/1706.04599)."""
    points = reliability_bins(probabilities, positive, bins)
    total = sum(b["count"] for b in points)
    return float(sum(b["count"] * abs(b["mean_predicted"] - b["observed"]) for b in points) / total)


def fit_temperature(logits, positive, low: float = 0.05, high: float = 50.0) -> float:
    """The temperature T minimising the negative log-likelihood of sigmoid(logit / T) (temperature scaling,
    Guo et al. 2017): one parameter, so the ranking (AUC, EER) is unchanged; found by golden-section search on
    log T."""
    z, y = np.asarray(logits, dtype=np.float64).ravel(), np.asarray(positive, dtype=bool).ravel()
    if len(z) != len(y) or len(set(y.tolist())) < 2 or not np.isfinite(z).all():
        raise MetricError("temperature scaling needs finite logits of both classes, one label each.")

    def nll(log_t: float) -> float:
        scaled = z / np.exp(log_t)
        return float(np.mean(np.logaddexp(0, scaled) - y * scaled))

    a, b = np.log(low), np.log(high)
    ratio = (np.sqrt(5) - 1) / 2
    for _ in range(80):
        c, d = b - ratio * (b - a), a + ratio * (b - a)
        if nll(c) < nll(d):
            b = d
        else:
            a = c
    return float(np.exp((a + b) / 2))
