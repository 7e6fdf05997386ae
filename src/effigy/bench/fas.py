"""Face anti-spoofing under the leave-one-domain-out protocol (and leave-one-attack-out), in one run: for each
capture domain, the model trained without it, adapted by every adaptor (several seeded draws of 5 and 10 target samples per class) and
by TENT, scored on the domain's test identities at the source threshold; the averages over domains; and the
shipped model (all domains) on the held-out real faces (astronaut, grace_hopper) and their spoof renderings.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from effigy.bench.variants import RESULT_SCHEMA
from effigy.detect.fas.adapt import SourceView
from effigy.detect.fas.model import FASConfig, PrototypeFAS
from effigy.detect.fas.protocol import (
    attack_data,
    domain_data,
    evaluate_adaptor,
    evaluate_tent,
    held_out_captures,
    source_threshold,
    standard_adaptors,
)
from effigy.detect.fas.zoo import SHIPPED, without_domain
from effigy.evaluate.measure import Progress, machine_facts, no_progress
from effigy.evaluate.report import SettingsRecord
from effigy.models.zoo import load_zoo_model
from effigy.worlds.faces import ATTACKS, DOMAINS, HELD_OUT_SHA256


@dataclass
class FASBenchSettings(SettingsRecord):
    shots: tuple[int, ...] = (5, 10)
    draws: int = 10
    seed: int = 0
    tent: bool = True


def lodo_rows(settings: FASBenchSettings, progress: Progress) -> list[dict]:
    """One row per (held-out domain, adaptor, shots)."""
    return protocol_rows(settings, DOMAINS, domain_data, progress=progress, label="leave-one-domain-out")


def loao_rows(settings: FASBenchSettings, progress: Progress) -> list[dict]:
    """One row per (held-out attack, adaptor, shots)."""
    return protocol_rows(settings, ATTACKS, attack_data, progress=progress, label="leave-one-attack-out")


def protocol_rows(settings: FASBenchSettings, targets, data_for, load=None, adaptors=None,
                  progress: Progress = no_progress, label: str = "targets") -> list[dict]:
    """One row per (held-out target, adaptor, shots): the model trained without each target (``load``, by
    zoo name; the shipped zoo by default), its ``data_for`` the target, every adaptor (the standard ones by
    default), and TENT when ``settings.tent``."""
    rows = []
    advance = progress(label, len(targets))
    for target in targets:
        model, config = (load or load_zoo_model)(without_domain(target))
        data = data_for(model, config, target, settings.seed)
        source = SourceView(model.prototypes().detach(), config.scale)
        for adaptor in adaptors or standard_adaptors():
            for shots in settings.shots if adaptor.uses_labels else (0,):
                report = evaluate_adaptor(adaptor, source, data, shots, settings.draws, settings.seed)
                rows.append({"domain": target, "adaptor": adaptor.name, "shots": shots,
                             "touches_model": False, **report.to_dict()})
        if settings.tent:
            rows.append({"domain": target, "adaptor": "TENT (updates the model's norms)", "shots": 0,
                         "touches_model": True, **evaluate_tent(model, data).to_dict()})
        advance()
    return rows


def average_over_domains(rows: list[dict]) -> list[dict]:
    """Mean metrics per (adaptor, shots) over the held-out domains, and HTER change vs no adaptation."""
    keys = list(dict.fromkeys((r["adaptor"], r["shots"]) for r in rows))
    metrics = ("hter", "apcer", "bpcer", "auc", "tpr_at_fpr_1")
    out = []
    for adaptor, shots in keys:
        group = [r for r in rows if r["adaptor"] == adaptor and r["shots"] == shots]
        out.append({"adaptor": adaptor, "shots": shots, "domains": len(group),
                    "touches_model": group[0]["touches_model"],
                    **{m: float(np.mean([r[m] for r in group])) for m in metrics}})
    base = next(r for r in out if r["shots"] == 0 and r["adaptor"] == "no adaptation")
    for row in out:
        row["hter_change"] = row["hter"] / base["hter"] - 1
    return out


def held_out_faces(model: PrototypeFAS, config: FASConfig, seed: int = 0) -> list[dict]:
    """A model (the shipped one, in the bench) on the held-out real faces: share of live captures accepted,
    share of each attack's renderings rejected, at its source threshold."""
    threshold = source_threshold(model, config)
    rows = []
    for name in HELD_OUT_SHA256:
        captures = held_out_captures(name, seed=seed)
        with torch.no_grad():
            scores = model(torch.from_numpy(captures.images)).numpy()
        for kind in dict.fromkeys(captures.kind):
            picked = scores[captures.kind == kind]
            accepted = float((picked >= threshold).mean())
            rows.append({"face": name, "kind": kind, "captures": int(len(picked)), "mean_score": float(picked.mean()),
                         "accepted_as_live": accepted, "correct": accepted if kind == "live" else 1 - accepted,
                         "threshold": threshold})
    return rows


def run_fas_bench(settings: FASBenchSettings, progress: Progress = no_progress) -> dict:
    """``effigy bench fas``: the protocol rows, their averages, and the held-out faces.

    Returns:
        The result dict (settings, machine, rows, averages, held-out faces).
    """
    rows = lodo_rows(settings, progress)
    attack_rows = loao_rows(settings, progress)
    advance = progress("held-out real faces", 1)
    held = held_out_faces(*load_zoo_model(SHIPPED), settings.seed)
    advance()
    return {"benchmark": "fas", "schema": RESULT_SCHEMA, "model": SHIPPED, "settings": settings.to_dict(),
            "machine": machine_facts(), "rows": rows, "averages": average_over_domains(rows),
            "attack_rows": attack_rows, "attack_averages": average_over_domains(attack_rows), "held_out": held}
