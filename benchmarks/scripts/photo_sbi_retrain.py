"""The deepfake encoders before and after training on real photographs' faces and their SBI fakes (issue 45).

The three shipped encoders were retrained with ``photo_sbi=True`` (``effigy zoo train NAME``). This check sets
each beside the weights shipped before (read from git at ``--before``, the last commit that shipped them, with
their manifest records) on what issue 45's acceptance asks:

- the faces found in the held-out real photographs (astronaut, grace_hopper, whole and after benign
  processing; never trained on) called fake at each model's own recorded operating point;
- the world's test AUCs, and the unseen families' mean AUC after minus before with a 95% paired bootstrap over
  the 25 test identities (each identity's captures resampled together, the same draws for both models); the
  same intervals between the retrained encoders (AuthGuard's comparison, issue 27, on the new weights).

    python benchmarks/scripts/photo_sbi_retrain.py [--before COMMIT]     # ~3 min on 2 cores, seed 0

Run it after `calibrate_deepfake.py` has recorded the new operating points. Writes
benchmarks/results/checks/photo_sbi_retrain.{json,md}.
"""
import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from calibrate_deepfake import photo_faces  # noqa: E402
from deepfake_variants import unseen_auc_by_identity  # noqa: E402

from effigy.detect.deepfake.model import fake_scores  # noqa: E402
from effigy.detect.deepfake.protocol import protocol_sets  # noqa: E402
from effigy.evaluate.measure import machine_facts  # noqa: E402
from effigy.evaluate.report import machine_line, markdown_table, write_results  # noqa: E402
from effigy.metrics.detection import auc  # noqa: E402
from effigy.metrics.stats import paired_bootstrap  # noqa: E402
from effigy.workflows.detectors import DEEPFAKE_TASK, load_detector  # noqa: E402

OUT = Path("benchmarks/results/checks")
MODELS = ("deepfake-authguard", "deepfake-ce", "deepfake-clip")
PAIRS = [("deepfake-authguard", "deepfake-ce"), ("deepfake-authguard", "deepfake-clip"), ("deepfake-clip", "deepfake-ce")]
BEFORE = "27e704d"  # the last commit whose shipped deepfake encoders had not seen the photo pairs
MANIFEST_PATH = "src/effigy/models/weights/MANIFEST.json"


def weights_before(commit: str, folder: Path) -> dict[str, str]:
    """Each encoder's weights and manifest record as shipped at ``commit``, written into a folder of its own under
    ``folder`` (the layout `--model DIR` reads); model name -> that folder."""
    show = lambda path: subprocess.run(["git", "show", f"{commit}:{path}"], check=True,  # noqa: E731
                                       capture_output=True).stdout
    records = json.loads(show(MANIFEST_PATH))
    found = {}
    for name in MODELS:
        (folder / name).mkdir()
        (folder / name / records[name]["file"]).write_bytes(show(f"src/effigy/models/weights/{records[name]['file']}"))
        (folder / name / "MANIFEST.json").write_text(json.dumps({name: records[name]}, indent=2))
        found[name] = str(folder / name)
    return found


def compare(name: str, before: str, faces: np.ndarray) -> tuple[list[dict], dict[str, list[np.ndarray]], list]:
    """Per version, at its recorded operating point: photo faces called fake and the test AUCs; each version's
    scores on the unseen families; those test sets."""
    versions = {"before": load_detector(before, DEEPFAKE_TASK), "after": load_detector(name, DEEPFAKE_TASK)}
    sets = protocol_sets(versions["after"].config)
    unseen = [s for s in sets if s.held_out == "family"]
    rows, scores = [], {}
    for version, detector in versions.items():
        p = fake_scores(detector.model, faces)
        by_set = {s.name: fake_scores(detector.model, s.data.images) for s in sets}
        aucs = {s.name: auc(by_set[s.name], s.data.fake) for s in sets}
        rows.append({"model": name, "weights": version, "threshold": detector.threshold,
                     "photo_faces_called_fake": int((p >= detector.threshold).sum()), "photo_faces": len(p),
                     "p_fake": [float(v) for v in p], "unseen_families_auc": float(np.mean(
                         [aucs[s.name] for s in unseen])), **aucs})
        scores[f"{name} {version}"] = [by_set[s.name] for s in unseen]
    return rows, scores, unseen


def differences(scores: dict[str, list[np.ndarray]], unseen: list) -> list[dict]:
    """Paired identity-bootstrap intervals of the unseen families' mean AUC: each model after minus before, and
    the retrained models against each other (issue 27's comparison on the new weights)."""
    statistic, n = unseen_auc_by_identity(scores, unseen)
    pairs = [(f"{name} after", f"{name} before") for name in MODELS]
    pairs += [(f"{a} after", f"{b} after") for a, b in PAIRS]
    return [{"a": a, "b": b, **paired_bootstrap(statistic(a), statistic(b), n, resamples=1000).to_dict()}
            for a, b in pairs]


def main(commit: str) -> None:
    faces = photo_faces()
    rows, scores = [], {}
    with tempfile.TemporaryDirectory() as scratch:
        before = weights_before(commit, Path(scratch))
        for name in MODELS:
            found, by_version, unseen = compare(name, before[name], faces)
            rows += found
            scores |= by_version
            print(found, flush=True)
    found_differences = differences(scores, unseen)
    command = "python benchmarks/scripts/photo_sbi_retrain.py" + ("" if commit == BEFORE else f" --before {commit}")
    record = {"script": command, "before": commit, "seed": 0, "rows": rows, "differences": found_differences,
              "machine": machine_facts()}
    sets = [k for k in rows[0] if k.startswith(("in distribution", "unseen family", "unseen domain"))]
    table = [{**r, "called": f"{r['photo_faces_called_fake']} of {r['photo_faces']}",
              "scores": ", ".join(f"{v:.2f}" for v in r["p_fake"])} for r in rows]
    text = ["# Deepfake encoders before and after the photo-SBI pairs (issue 45)", "",
            f"`{command}` (seed 0): each shipped encoder as shipped at {commit} (forgery world only) and retrained "
            "with real photographs' faces and their SBI fakes (`photo_sbi=True`, `effigy zoo train NAME`), each at "
            "its own recorded operating point (`calibrate_deepfake.py`). Photo faces: the faces found in "
            "astronaut and grace_hopper, whole and after benign processing, never trained on.  ",
            machine_line(record["machine"]), "", "## Photo faces called fake and test AUCs", "",
            markdown_table(table, [("model", "model"), ("weights", "weights"), ("threshold", "threshold"),
                                   ("called", "photo faces called fake"), ("scores", "their P(fake)"),
                                   ("unseen_families_auc", "unseen families AUC (mean)"),
                                   *[(k, f"AUC {k}") for k in sets]]), "",
            "## Unseen families' mean AUC differences (95% paired bootstrap over the 25 test identities)", "",
            markdown_table(found_differences, [("a", "model"), ("b", "minus"), ("difference", "difference"),
                                               ("low", "95% low"), ("high", "95% high"),
                                               ("significant", "beyond noise")]), ""]
    write_results(record, "\n".join(text), OUT, "photo_sbi_retrain")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--before", default=BEFORE, help="the commit whose shipped encoders are compared")
    main(parser.parse_args().before)
