"""Calibrate the shipped deepfake detectors (issue 45, item 3) and record their operating points.

For each of deepfake-authguard, deepfake-ce and deepfake-clip: a temperature fitted on the forgery world's dev
identities (real and fake captures in the model's own families and domains) and the threshold at which at most
5% of the dev identities' real captures, and at most 5% of their own LFW photos (whole and processed), are called
fake (`effigy.detect.deepfake.calibration.fit_operating_point`, seed 0).
The operating points are written into the package's weights manifest (the record's `operating_point`), which
`effigy detect deepfake`, `eval`, `export` and `serve` read. Then, on data the calibration never saw:

- expected calibration error and the reliability diagram before and after, on the test identities;
- real images called fake at the recorded threshold: the world's test real captures, the LFW test identities'
  own photos (the 25x25 crops, whole and after benign processing), the held-out faces' world captures, and the
  faces found in the real photographs of `real_photos.py`;
- what the threshold costs: the share of fakes still caught, per test set (AUC does not change).

    python benchmarks/scripts/calibrate_deepfake.py      # ~2 min on 2 cores

Writes benchmarks/results/checks/calibration.{json,md} and calibration_reliability.png, and the manifest records.
"""
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from real_photos import photos  # noqa: E402

from effigy.detect.deepfake.calibration import calibration_set, fake_logits, fit_operating_point, lfw_photos, sigmoid  # noqa: E402
from effigy.detect.deepfake.protocol import held_out_forgeries, protocol_sets  # noqa: E402
from effigy.detect.faces import benign_faces  # noqa: E402
from effigy.evaluate.measure import machine_facts  # noqa: E402
from effigy.evaluate.pictures import reliability_diagram  # noqa: E402
from effigy.evaluate.report import machine_line, markdown_table, write_results  # noqa: E402
from effigy.metrics.detection import expected_calibration_error, reliability_bins  # noqa: E402
from effigy.models.zoo import MANIFEST, load_zoo_model, read_manifest  # noqa: E402
from effigy.worlds.faces import HELD_OUT_SHA256  # noqa: E402

OUT = Path("benchmarks/results/checks")
MODELS = ("deepfake-authguard", "deepfake-ce", "deepfake-clip")
COMMAND = "python benchmarks/scripts/calibrate_deepfake.py"


def photo_faces() -> np.ndarray:
    """The faces found in the real photographs, whole and after benign processing (real_photos.py's)."""
    return benign_faces(photos().values())


def real_sets(config) -> dict[str, np.ndarray]:
    """Real images the calibration never saw, by source."""
    test = protocol_sets(config)[0].data
    held_out = [held_out_forgeries(name) for name in HELD_OUT_SHA256]
    return {"world test identities: real captures": test.images[~test.fake],
            "LFW test identities: their photos, whole and processed": lfw_photos("test"),
            "held-out faces (astronaut, grace_hopper): real captures": np.concatenate(
                [h.images[~h.fake] for h in held_out]),
            "real photographs: faces found (astronaut, grace_hopper, whole and processed)": photo_faces()}


def calibrate(name: str) -> dict:
    model, config = load_zoo_model(name)
    point = {**fit_operating_point(model, config), "command": COMMAND}
    temperature, threshold = point["temperature"], point["threshold"]
    test = protocol_sets(config)
    in_distribution = test[0].data
    logits = fake_logits(model, in_distribution.images)
    raw, calibrated = sigmoid(logits), sigmoid(logits / temperature)
    reals = [{"model": name, "source": source, "images": len(images),
              "called_fake_raw_05": int((sigmoid(fake_logits(model, images)) >= 0.5).sum()),
              "called_fake": int((sigmoid(fake_logits(model, images) / temperature) >= threshold).sum())}
             for source, images in real_sets(config).items()]
    for row in reals:
        row["share"] = row["called_fake"] / row["images"]
    caught = []
    for evaluation in test:
        p = sigmoid(fake_logits(model, evaluation.data.images) / temperature)
        fake = evaluation.data.fake
        caught.append({"model": name, "test_set": evaluation.name, "reals_called_fake": float((p[~fake] >= threshold).mean()),
                       "fakes_caught": float((p[fake] >= threshold).mean()),
                       "fakes_caught_at_05_raw": float((sigmoid(fake_logits(model, evaluation.data.images))[fake] >= 0.5).mean())})
    dev = calibration_set(config)
    return {"model": name, "operating_point": point,
            "test_ece_before": expected_calibration_error(raw, in_distribution.fake),
            "test_ece_after": expected_calibration_error(calibrated, in_distribution.fake),
            "dev_images": len(dev.images),
            "reliability": {"before": reliability_bins(raw, in_distribution.fake),
                            "after": reliability_bins(calibrated, in_distribution.fake)},
            "reals": reals, "caught": caught}


def record(points: dict[str, dict]) -> None:
    """The operating points into the package's weights manifest (weights and their sha256 untouched)."""
    manifest = read_manifest()
    for name, point in points.items():
        manifest[name]["operating_point"] = point
    MANIFEST.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")


def main() -> None:
    results = [calibrate(name) for name in MODELS]
    record({r["model"]: r["operating_point"] for r in results})
    picture = reliability_diagram({r["model"]: {"raw P(fake)": r["reliability"]["before"],
                                                "temperature-scaled": r["reliability"]["after"]} for r in results},
                                  OUT / "calibration_reliability.png")
    summary = [{"model": r["model"], "temperature": r["operating_point"]["temperature"],
                "threshold": r["operating_point"]["threshold"], "dev_ece_before": r["operating_point"]["ece_before"],
                "dev_ece_after": r["operating_point"]["ece_after"], "test_ece_before": r["test_ece_before"],
                "test_ece_after": r["test_ece_after"]} for r in results]
    reals = [{**row, "called": f"{row['called_fake']} of {row['images']}",
              "raw": f"{row['called_fake_raw_05']} of {row['images']}"} for r in results for row in r["reals"]]
    caught = [row for r in results for row in r["caught"]]
    data = {"script": COMMAND, "seed": 0, "target_bpcer": results[0]["operating_point"]["target_bpcer"],
            "results": results, "picture": str(picture), "machine": machine_facts()}
    text = ["# Calibrated deepfake detectors: P(fake) that means what it says, a threshold chosen on real images "
            "(issue 45)", "",
            f"`{COMMAND}` (seed 0): per model a temperature fitted on the forgery world's dev identities (real and "
            "fake captures of the model's own families and domains), then the threshold at which at most 5% of the "
            "dev identities' real captures and at most 5% of their LFW photos (whole and processed) are called "
            "fake; recorded in the weights manifest, used by `effigy detect "
            "deepfake`, `serve` and `export`. Everything below is on data the calibration never saw.  ",
            machine_line(data["machine"]), "", "## Temperature, threshold, expected calibration error", "",
            markdown_table(summary, [("model", "model"), ("temperature", "temperature"), ("threshold", "threshold"),
                                     ("dev_ece_before", "ECE dev before"), ("dev_ece_after", "ECE dev after"),
                                     ("test_ece_before", "ECE test before"), ("test_ece_after", "ECE test after")]),
            "", "![reliability diagrams](calibration_reliability.png)", "",
            "Reliability on the test identities (in distribution): dot area by count, grey the diagonal.", "",
            "## Real images called fake at the recorded threshold", "",
            markdown_table(reals, [("model", "model"), ("source", "real images"), ("called", "called fake"),
                                   ("share", "share"), ("raw", "called fake before (raw P(fake) at 0.5)")]), "",
            "## What the threshold costs: fakes still caught", "",
            markdown_table(caught, [("model", "model"), ("test_set", "test set"),
                                    ("reals_called_fake", "reals called fake"), ("fakes_caught", "fakes caught"),
                                    ("fakes_caught_at_05_raw", "fakes caught before (raw, 0.5)")]), ""]
    write_results(data, "\n".join(text), OUT, "calibration")


if __name__ == "__main__":
    main()
