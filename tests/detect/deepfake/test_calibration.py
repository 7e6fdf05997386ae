"""The shipped detectors' operating points: fitted on the world's dev identities (the threshold rejects at most
5% of the dev reals), recorded in the manifest, and applied by every command that loads a detector."""
import json

import numpy as np
import pytest

from effigy.detect.deepfake.calibration import calibration_set, fake_logits, fit_operating_point, lfw_photos, sigmoid
from effigy.models.zoo import load_zoo_model, read_manifest
from effigy.workflows.detectors import DEEPFAKE_TASK, load_detector


def test_the_recorded_point_rejects_at_most_five_percent_of_each_kind_of_dev_real_and_loading_applies_it():
    """Refitting gives the recorded point (the seeded command), its threshold calls at most 5% of the dev
    identities' world captures and at most 5% of their LFW photos fake (the stricter of the two sets it), its
    temperature lowers the dev ECE, and a loaded detector scores with it."""
    import torch

    model, config = load_zoo_model("deepfake-ce")
    point = fit_operating_point(model, config)
    recorded = read_manifest()["deepfake-ce"]["operating_point"]
    assert point["threshold"] == pytest.approx(recorded["threshold"], abs=1e-6)
    data = calibration_set(config)
    calibrated = sigmoid(fake_logits(model, data.images) / point["temperature"])
    photos = sigmoid(fake_logits(model, lfw_photos("dev")) / point["temperature"])
    rejected = [(calibrated[~data.fake] >= point["threshold"]).mean(), (photos >= point["threshold"]).mean()]
    assert max(rejected) <= 0.05
    assert point["threshold"] == max(point["threshold_by_source"].values())
    assert point["real_images"] == {"world captures": int((~data.fake).sum()), "LFW photos": len(photos)}
    assert point["ece_after"] < point["ece_before"] and point["temperature"] > 1  # the model was over-confident
    detector = load_detector("deepfake-ce", DEEPFAKE_TASK)
    assert detector.threshold == recorded["threshold"]
    with torch.no_grad():
        p = detector.model(torch.from_numpy(data.images[:8])).numpy()
    assert np.allclose(p, calibrated[:8], atol=1e-5)


def test_detect_uses_the_recorded_threshold_unless_one_is_given(tmp_path, monkeypatch, capsys):
    from PIL import Image

    from effigy.detect.deepfake.calibration import calibration_set as dev
    from effigy.models.zoo import shipped_config
    from tests.test_cli import run_cli

    image = dev(shipped_config("deepfake-authguard")).images[0]
    Image.fromarray((image.transpose(1, 2, 0) * 255).astype(np.uint8)).save(tmp_path / "face.png")
    threshold = read_manifest()["deepfake-authguard"]["operating_point"]["threshold"]
    code, out, _ = run_cli(monkeypatch, capsys, "detect", "deepfake", str(tmp_path / "face.png"), "--json")
    row = json.loads(out)
    assert code == 0 and row["verdict"] == ("fake" if row["p_fake"] >= threshold else "real")
    code, out, _ = run_cli(monkeypatch, capsys, "detect", "deepfake", str(tmp_path / "face.png"), "--json",
                           "--threshold", "0")
    assert code == 0 and json.loads(out)["verdict"] == "fake"
