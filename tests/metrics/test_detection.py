import numpy as np
import pytest

from effigy.errors import MetricError
from effigy.metrics.detection import (
    accuracy,
    apcer,
    auc,
    average_precision,
    bpcer,
    deepfake_report,
    detection_report,
    eer,
    eer_threshold,
    hter,
    roc_curve,
    tpr_at_fpr,
)

SCORES = [0.9, 0.8, 0.3, 0.6, 0.2, 0.1]
BONAFIDE = [True, True, True, False, False, False]


def test_error_rates_at_a_threshold_by_hand():
    assert apcer(SCORES, BONAFIDE, 0.5) == pytest.approx(1 / 3)  # the attack at 0.6 is accepted
    assert bpcer(SCORES, BONAFIDE, 0.5) == pytest.approx(1 / 3)  # the bonafide at 0.3 is rejected
    assert hter(SCORES, BONAFIDE, 0.5) == pytest.approx(1 / 3)
    assert apcer(SCORES, BONAFIDE, 0.6) == pytest.approx(1 / 3)  # accepted at equality
    assert hter(SCORES, BONAFIDE, 0.95) == pytest.approx(0.5)


def test_auc_counts_ordered_pairs_and_half_ties():
    assert auc(SCORES, BONAFIDE) == pytest.approx(8 / 9)
    assert auc([0.5, 0.5], [True, False]) == pytest.approx(0.5)
    assert auc([0.9, 0.1], [True, False]) == 1.0


def test_roc_tpr_at_fpr_and_eer_threshold_by_hand():
    far, tar, thresholds = roc_curve(SCORES, BONAFIDE)
    assert far[0] == 0 and tar[0] == 0 and np.isinf(thresholds[0])
    assert far[-1] == 1 and tar[-1] == 1
    assert tpr_at_fpr(SCORES, BONAFIDE, 0.0) == pytest.approx(2 / 3)
    assert tpr_at_fpr(SCORES, BONAFIDE, 0.34) == pytest.approx(1.0)
    assert eer_threshold(SCORES, BONAFIDE) == pytest.approx(0.6)


def test_report_gathers_every_metric():
    report = detection_report(SCORES, BONAFIDE, 0.5)
    assert report.hter == pytest.approx(1 / 3) and report.auc == pytest.approx(8 / 9)
    assert set(report.to_dict()) == {"hter", "apcer", "bpcer", "auc", "tpr_at_fpr_1", "threshold"}


def test_bad_inputs_are_clear_errors():
    with pytest.raises(MetricError, match="labels"):
        auc([0.1, 0.2], [True])
    with pytest.raises(MetricError, match="NaN"):
        auc([0.1, float("nan")], [True, False])
    with pytest.raises(MetricError, match="one class"):
        auc([0.1, 0.2], [True, True])
    with pytest.raises(MetricError, match="attack"):
        apcer([0.1], [True], 0.5)
    with pytest.raises(MetricError, match="fpr"):
        tpr_at_fpr(SCORES, BONAFIDE, 1.5)


def test_deepfake_metrics_by_hand():
    # P(fake) scores; fakes (1) at 0.9, 0.7, 0.6; reals at 0.8, 0.4, 0.2
    scores, fake = [0.9, 0.8, 0.7, 0.6, 0.4, 0.2], [1, 0, 1, 1, 0, 0]
    assert average_precision(scores, fake) == pytest.approx(1 / 3 * (1 + 2 / 3 + 3 / 4))
    assert eer(scores, fake) == pytest.approx(1 / 3)  # at 0.7: one real of three above, one fake of three below
    assert accuracy(scores, fake) == pytest.approx(5 / 6)
    assert accuracy(scores, fake, threshold=0.85) == pytest.approx(4 / 6)
    report = deepfake_report(scores, fake)
    assert report.auc == pytest.approx(7 / 9) and report.to_dict()["ap"] == pytest.approx(average_precision(scores, fake))
    assert average_precision([0.9, 0.8, 0.1], [1, 1, 0]) == 1.0
    with pytest.raises(MetricError, match="one class"):
        average_precision([0.2, 0.3], [1, 1])


def test_threshold_at_bpcer_rejects_at_most_the_target_share_of_bona_fide_scores():
    from effigy.metrics.detection import threshold_at_bpcer

    rng = np.random.default_rng(0)
    real_p_fake = rng.random(200)
    for target in (0.0, 0.05, 0.2):
        threshold = threshold_at_bpcer(real_p_fake, target)
        rejected = (real_p_fake >= threshold).mean()
        assert rejected <= target and rejected > target - 0.01  # the strictest such threshold
    live = rng.random(200)
    threshold = threshold_at_bpcer(live, 0.05, higher_is_bonafide=True)
    assert (live < threshold).mean() == 0.05
    with pytest.raises(MetricError):
        threshold_at_bpcer([0.1, float("nan")], 0.05)
    with pytest.raises(MetricError):
        threshold_at_bpcer([0.1], 1.0)


def test_temperature_scaling_recovers_an_overconfident_models_temperature_and_lowers_ece():
    from effigy.metrics.detection import expected_calibration_error, fit_temperature, reliability_bins

    rng = np.random.default_rng(0)
    true_logits = rng.normal(0, 2, 4000)
    labels = rng.random(4000) < 1 / (1 + np.exp(-true_logits))
    overconfident = 3 * true_logits
    temperature = fit_temperature(overconfident, labels)
    assert temperature == pytest.approx(3, rel=0.1)
    sigmoid = lambda z: 1 / (1 + np.exp(-z))  # noqa: E731
    before = expected_calibration_error(sigmoid(overconfident), labels)
    after = expected_calibration_error(sigmoid(overconfident / temperature), labels)
    assert after < 0.03 < before
    bins = reliability_bins(sigmoid(overconfident / temperature), labels)
    assert sum(b["count"] for b in bins) == 4000 and all(abs(b["observed"] - b["mean_predicted"]) < 0.08 for b in bins)
    with pytest.raises(MetricError):
        fit_temperature([0.1, 0.2], [True, True])
