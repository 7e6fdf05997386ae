"""Markdown, JSON and the picture for ``effigy bench fas``."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from effigy.bench.contract import Bench, in_folder
from effigy.bench.fas import FASBenchSettings, run_fas_bench
from effigy.evaluate.pictures import labelled_grid
from effigy.evaluate.report import machine_line, markdown_table, write_results

AVERAGE_COLUMNS = [("adaptor", "adaptor"), ("shots", "target samples per class"), ("hter", "HTER"),
                   ("hter_change", "HTER vs no adaptation"), ("apcer", "APCER"), ("bpcer", "BPCER"), ("auc", "AUC"),
                   ("tpr_at_fpr_1", "TPR@FPR=1%")]
DOMAIN_COLUMNS = [("domain", "held-out domain"), ("adaptor", "adaptor"), ("shots", "shots"), ("hter", "HTER"),
                  ("apcer", "APCER"), ("bpcer", "BPCER"), ("auc", "AUC"), ("threshold", "source threshold")]
HELD_OUT_COLUMNS = [("face", "face"), ("kind", "capture"), ("captures", "captures"), ("mean_score", "mean P(live)"),
                    ("accepted_as_live", "accepted as live"), ("correct", "correct")]
PICTURE = "fas_captures.png"


def render_markdown(result: dict, command: str) -> str:
    s = result["settings"]
    return (f"# Face anti-spoofing: leave-one-domain-out adaptation\n\nCommand: `{command}`\n\n"
            "For each capture domain, the model trained on the other three (`fas-protonet-without-<domain>`) is "
            "scored on the domain's test identities; the threshold is the equal-error threshold on the source "
            "development set (dev identities, the model's own domains), fixed before the target is seen. Labelled "
            f"adaptors draw their target samples per class from the domain's dev identities ({s['draws']} seeded "
            "draws, metrics averaged); T3A and TENT use that pool unlabelled. TENT updates the model's norms; "
            f"every other adaptor sees only features and prototypes. Seed {s['seed']}. "
            f"{machine_line(result['machine'])}\n\n![captures](" + PICTURE + ")\n\n"
            "## Averaged over the four held-out domains\n\n" + markdown_table(result["averages"], AVERAGE_COLUMNS)
            + "\n\n## Leave-one-attack-out, averaged over the three held-out attacks\n\n"
            "Each attack in turn is left out of training (`fas-protonet-without-<attack>`, every domain); the test "
            "set is the test identities' live captures and that attack, in every domain; the pool the dev "
            "identities'.\n\n" + markdown_table(result["attack_averages"], AVERAGE_COLUMNS)
            + "\n\n## Held-out real faces (shipped `fas-protonet`, all domains, at its source threshold)\n\n"
            + markdown_table(result["held_out"], HELD_OUT_COLUMNS)
            + "\n\n## Per held-out domain\n\n" + markdown_table(result["rows"], DOMAIN_COLUMNS)
            + "\n\n## Per held-out attack\n\n"
            + markdown_table(result["attack_rows"], [("domain", "held-out attack")] + DOMAIN_COLUMNS[1:]) + "\n")


def captures_picture(path: Path, seed: int = 0) -> Path:
    """One test identity and the held-out astronaut, live and under each attack (rows), in every domain
    (columns)."""
    from effigy.worlds.faces import DOMAINS, KINDS, held_out_face, real_faces, render_capture, split_identities

    identity = int(split_identities("test")[0])
    faces = {f"lfw #{identity}": (real_faces()[identity], identity), "astronaut (held out)":
             (held_out_face("astronaut"), 1000)}
    rows = {}
    for label, (face, key) in faces.items():
        for kind in KINDS:
            images = np.stack([render_capture(face, key, kind, domain, seed) for domain in DOMAINS])
            rows[f"{label}: {kind}"] = torch.from_numpy(images) * 2 - 1
    return labelled_grid(rows, path, scale=2, label_width=190, column_labels=list(DOMAINS))


def write_fas_report(result: dict, folder: Path, command: str) -> dict[str, Path]:
    """``<folder>/fas_protonet.{json,md}`` and the captures picture."""
    json_path, md_path = write_results(result, render_markdown(result, command), folder, "fas_protonet")
    return {"json": json_path, "markdown": md_path,
            "picture": captures_picture(folder / PICTURE, result["settings"]["seed"])}


BENCH = Bench("fas", FASBenchSettings, run_fas_bench, in_folder(write_fas_report),
              lambda result, s: ({**result, "rows": result["averages"]}, AVERAGE_COLUMNS[:7],
                                 f"fas-protonet: leave-one-domain-out (seed {s.seed})"),
              model=lambda s: "fas-protonet")
