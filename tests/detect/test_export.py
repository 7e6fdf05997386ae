"""The detectors as ONNX: exported with a dynamic batch, equal to PyTorch within 1e-4 on 32 sample crops, with a
sidecar naming the weights and the threshold."""
import json

import numpy as np
import onnxruntime
import pytest
import torch

from effigy.detect.export import LiveScore, export_onnx, sample_crops
from effigy.models.zoo import load_zoo_model, read_manifest


@pytest.fixture(scope="module")
def crops() -> np.ndarray:
    return sample_crops(32)


def _run(path, images: np.ndarray) -> np.ndarray:
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(["scores"], {"images": images})[0]


def test_the_deepfake_detector_exports_and_scores_like_pytorch_at_any_batch(crops, tmp_path):
    model, _ = load_zoo_model("deepfake-ce")
    path = tmp_path / "deepfake.onnx"
    record = export_onnx(model, path, crops, {"model": "deepfake-ce", "score": "P(fake)", "threshold": 0.5})
    assert record["max_abs_difference"] <= 1e-4 and record["checked_on"] == 32
    other = crops[:5][::-1].copy()  # another batch size than the export's example
    with torch.no_grad():
        np.testing.assert_allclose(_run(path, other), model(torch.from_numpy(other)).numpy(), atol=1e-4)
    assert json.loads((tmp_path / "deepfake.onnx.json").read_text())["score"] == "P(fake)"


def test_the_anti_spoofing_model_exports_with_its_prototypes_inside(crops, tmp_path, monkeypatch, capsys):
    from tests.test_cli import run_cli

    path = tmp_path / "fas.onnx"
    code, out, _ = run_cli(monkeypatch, capsys, "detect", "fas", "export", "--onnx", str(path), "--json")
    assert code == 0
    record = json.loads(out)
    assert record["sha256"] == read_manifest()["fas-protonet"]["sha256"] and 0 < record["threshold"] < 1
    model, config = load_zoo_model("fas-protonet")
    with torch.no_grad():
        expected = LiveScore(model, config.scale)(torch.from_numpy(crops)).numpy()
    np.testing.assert_allclose(_run(path, crops), expected, atol=1e-4)
