"""Does training with camera jitter (FASConfig.camera_jitter) change the face anti-spoofing picture? The four
leave-one-domain-out models and the all-domain model are trained again with it (seeded, into a scratch
folder, never shipped), and scored like `effigy bench fas` scores the shipped ones: each held-out domain
at its source threshold with no adaptation, T3A, the OT prototype shift, OT geodesic mixup (10 draws of 5 and
10 samples per class) and TENT; and the all-domain model on the held-out real faces.

    python benchmarks/scripts/fas_camera_jitter.py   # ~15 min on 2 cores
"""
import json
import tempfile
from pathlib import Path

import numpy as np

import effigy.detect.fas  # noqa: F401  (registers the face models)
from effigy.bench.fas import FASBenchSettings, average_over_domains, held_out_faces, protocol_rows
from effigy.detect.fas.adapt import T3A, GeodesicMixup, NoAdaptation, OTPrototypes
from effigy.detect.fas.protocol import domain_data
from effigy.detect.fas.zoo import SHIPPED, without_domain
from effigy.evaluate.measure import machine_facts
from effigy.evaluate.report import machine_line, markdown_table
from effigy.models.zoo import load_zoo_model, train_zoo_model
from effigy.worlds.faces import DOMAINS

OUT = Path("benchmarks/results/checks")
ADAPTORS = (NoAdaptation(), T3A(), OTPrototypes(), GeodesicMixup())


def lodo_rows(folder: Path) -> list[dict]:
    for domain in DOMAINS:
        train_zoo_model(without_domain(domain), folder, camera_jitter=True)
    return protocol_rows(FASBenchSettings(), DOMAINS, domain_data, load=lambda name: load_zoo_model(name, folder),
                         adaptors=list(ADAPTORS))


def held_out_rows(folder: Path) -> list[dict]:
    train_zoo_model(SHIPPED, folder, camera_jitter=True)
    return held_out_faces(*load_zoo_model(SHIPPED, folder))


def main() -> None:
    with tempfile.TemporaryDirectory() as scratch:
        rows = lodo_rows(Path(scratch))
        held = held_out_rows(Path(scratch))
    result = {"check": "fas_camera_jitter", "machine": machine_facts(), "rows": rows,
              "averages": average_over_domains(rows), "held_out": held}
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "fas_camera_jitter.json").write_text(json.dumps(result, indent=2) + "\n")
    columns = [("adaptor", "adaptor"), ("shots", "samples per class"), ("hter", "HTER"),
               ("hter_change", "HTER vs no adaptation"), ("auc", "AUC")]
    text = ("# Face anti-spoofing trained with camera jitter (a check, not the shipped models)\n\n"
            "Command: `python benchmarks/scripts/fas_camera_jitter.py`. The shipped models' numbers without it: "
            "[fas_protonet.md](../fas/fas-protonet/fas_protonet.md). " + machine_line(result["machine"]) + "\n\n"
            "## Leave-one-domain-out, averaged over the four held-out domains\n\n"
            + markdown_table(result["averages"], columns) + "\n\n## Held-out real faces (all-domain model)\n\n"
            + markdown_table(held, [("face", "face"), ("kind", "capture"), ("accepted_as_live", "accepted as live")])
            + "\n\n## Per held-out domain\n\n" + markdown_table(rows, [("domain", "domain")] + columns) + "\n")
    (OUT / "fas_camera_jitter.md").write_text(text)
    print(markdown_table(result["averages"], columns))
    print(np.round([r["accepted_as_live"] for r in held], 3))


if __name__ == "__main__":
    main()
