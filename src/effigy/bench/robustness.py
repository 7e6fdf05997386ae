"""``effigy detect robustness``: every leaf of the attack taxonomy against the passive face model (shipped,
with its adaptors) and the active challenge-response verifier, APCER per attack and BPCER, in one run; the
results files and a picture of the attacks and of a session."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from effigy.bench.contract import Bench, in_folder
from effigy.bench.variants import RESULT_SCHEMA
from effigy.detect.fas.protocol import standard_adaptors
from effigy.detect.fas.zoo import SHIPPED
from effigy.detect.robustness.attacks import STANDARD_TYPE, TAXONOMY
from effigy.detect.robustness.harness import (
    Attempts,
    HarnessSettings,
    injection_attempts,
    presentation_attempts,
    run_harness,
)
from effigy.evaluate.measure import Progress, machine_facts, no_progress
from effigy.evaluate.pictures import labelled_grid
from effigy.evaluate.report import machine_line, markdown_table, write_results
from effigy.models.zoo import load_zoo_model
from effigy.worlds.faces import split_identities

PICTURE = "robustness_attacks.png"
COLUMNS = [("attack", "attack instrument species"), ("leaf", "taxonomy leaf"), ("standard", "in the standards' words"),
           ("metric", "metric")]
SUMMARY_COLUMNS = [("detector", "detector"), ("bpcer", "BPCER"), ("apcer_pai", "APCER, worst PAI species"),
                   ("worst_pai", "which"), ("apcer_iai", "APCER, worst injection species"), ("worst_iai", "which")]


def run_robustness(settings: HarnessSettings, progress: Progress = no_progress) -> dict:
    """The harness on the shipped model. Returns the result dict (passive and active rows, and one table with
    a column per detector)."""
    model, _ = load_zoo_model(SHIPPED)
    advance = progress("attacks, adaptors and sessions", 1)
    harness = run_harness(model, [a for a in standard_adaptors() if a.name != "linear mixup"], settings)
    advance()
    return {"benchmark": "robustness", "schema": RESULT_SCHEMA, "model": SHIPPED,
            "settings": {**settings.__dict__, "domains": list(settings.domains)}, "machine": machine_facts(),
            **harness, "rows": side_by_side(harness["passive"] + harness["active"]),
            "summary": standard_summary(harness["passive"] + harness["active"])}


def standard_summary(rows: list[dict]) -> list[dict]:
    """Per detector, at its deployment threshold: BPCER, and the APCER of the worst presentation attack instrument
    species (ISO/IEC 30107-3) and of the worst injection attack species (CEN/TS 18099) at that same BPCER."""
    leaves = {kind: leaf for leaf, kinds in TAXONOMY.items() for kind in kinds}
    summary = []
    for detector in dict.fromkeys(r["detector"] for r in rows):
        mine = [r for r in rows if r["detector"] == detector]
        row = {"detector": detector, "bpcer": next(r["rate"] for r in mine if r["attack"] == "live")}
        for key, presentation in (("pai", True), ("iai", False)):
            attacks = [r for r in mine if r["attack"] != "live" and (leaves[r["attack"]] == "presentation") == presentation]
            worst = max(attacks, key=lambda r: r["rate"])
            row[f"apcer_{key}"], row[f"worst_{key}"] = worst["rate"], worst["attack"]
        summary.append(row)
    return summary


def side_by_side(rows: list[dict]) -> list[dict]:
    """One row per attack, one column per detector (its APCER, or BPCER on the live row)."""
    leaves = {kind: leaf for leaf, kinds in TAXONOMY.items() for kind in kinds}
    table: dict[str, dict] = {}
    for row in rows:
        entry = table.setdefault(row["attack"], {"attack": row["attack"], "metric": row["metric"],
                                                 "leaf": leaves.get(row["attack"], "bonafide"),
                                                 "standard": STANDARD_TYPE.get(leaves.get(row["attack"]),
                                                                               "bona fide presentation"),
                                                 "attempts": row["attempts"]})
        entry[row["detector"]] = row["rate"]
    return list(table.values())


def render_markdown(result: dict, command: str) -> str:
    s = result["settings"]
    detectors = list(dict.fromkeys(r["detector"] for r in result["passive"] + result["active"]))
    columns = COLUMNS + [("attempts", "attempts")] + [(d, d) for d in detectors]
    v = result["verifier"]
    return (f"# Face anti-spoofing under the digital-attack taxonomy\n\nCommand: `{command}`\n\n"
            f"Shipped `{result['model']}` on the face world's test identities in {', '.join(s['domains'])} "
            f"({s['attempts_per_identity']} attempt(s) per identity and attack). Passive: one frame, accepted when "
            f"P(live) >= {result['threshold']:.4f} (the model's source development threshold); adaptors fitted "
            f"on {s['adaptation_shots']} dev samples per class. Adversarial noise: white-box on the passive model, "
            f"L-inf {s['epsilon'] * 255:.0f}/255, {s['attack_steps']} steps, on print captures. Active: 8-frame "
            "colour challenge-response sessions; the verifier's thresholds come from live dev sessions alone "
            f"(correlation >= {v['min_correlation']:.3f}, strength >= {v['min_strength']:.4f}, centre-to-rim ratio >= "
            f"{v['min_shape']:.3f}). Injected "
            "streams do not know the challenge: a face swap carries a guessed reflection, a digital replay the "
            f"reflection of its own recorded session. Seed {s['seed']}. {machine_line(result['machine'])}\n\n"
            f"![attacks]({PICTURE})\n\nThe picture: one test identity; a live session and a digital replay's, frame "
            "by frame (the live face takes on each challenge colour; the replay shows an older sequence); then, left "
            "to right, live, print, replay, mask, face swap, digital replay (one frame each).\n\n"
            "APCER per attack instrument species (share of attacks accepted), BPCER on the live row (share "
            "of live attempts rejected):\n\n" + markdown_table(result["rows"], columns) + "\n\n"
            "Per detector, at its deployment threshold: the BPCER it gives and the APCER of the worst presentation "
            "attack instrument species and of the worst injection attack species at that BPCER:\n\n"
            + markdown_table(result["summary"], SUMMARY_COLUMNS) + "\n")


def attacks_picture(path: Path, seed: int = 0) -> Path:
    """One test identity: a live session and a digital replay's, frame by frame, then the single frame of each
    attempt."""
    identities = split_identities("test")
    attempts = Attempts()
    presentation_attempts(attempts, int(identities[0]), "phone", 0, seed)
    injection_attempts(attempts, int(identities[0]), int(identities[1]), "phone", 0, seed)
    rows = {f"{kind} session": torch.from_numpy(attempts.sessions[kind][0][0]) * 2 - 1
            for kind in ("live", "digital replay")}
    rows["one frame per attempt"] = torch.from_numpy(np.stack([f[0] for f in attempts.frames.values()])) * 2 - 1
    return labelled_grid(rows, path, scale=2, label_width=200)


def write_robustness_report(result: dict, folder: Path, command: str) -> dict[str, Path]:
    """``<folder>/robustness_fas_protonet.{json,md}`` and the picture."""
    json_path, md_path = write_results(result, render_markdown(result, command), folder, "robustness_fas_protonet")
    return {"json": json_path, "markdown": md_path, "picture": attacks_picture(folder / PICTURE, result["settings"]["seed"])}


TABLE_COLUMNS = [("attack", "attack"), ("metric", "metric"), ("no adaptation", "passive"),
                 ("challenge-response verifier", "challenge-response")]
BENCH = Bench("robustness", HarnessSettings, run_robustness, in_folder(write_robustness_report),
              lambda result, s: (result, TABLE_COLUMNS, f"fas-protonet under attack (seed {s.seed})"),
              model=lambda s: "fas-protonet")
